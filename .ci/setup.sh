#!/usr/bin/env bash
# Installs everything the build, the tests and the dev server need on a fresh Debian machine; every step is
# skipped when already done, so it is cheap to run again. Used by .ci/test.sh and .ci/serve.sh.
set -euo pipefail

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# libfuzzer-sys compiles libFuzzer (C++) for the fuzz targets (fuzz/ci.sh).
command -v c++ >/dev/null || need_apt+=(g++)
# lavapipe: Vulkan on the CPU, so the WebGPU backend's tests run natively without a GPU.
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || need_apt+=(mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! cargo fmt --version >/dev/null 2>&1; then
  echo "== rustup component add rustfmt"
  rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
  echo "== rustup component add clippy"
  rustup component add clippy
fi
if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
  echo "== rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# The CLI must be exactly the version of the wasm-bindgen crate (pinned in Cargo.toml).
WASM_BINDGEN_VERSION=0.2.130
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  echo "== cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (takes ~7 minutes once)"
  # No --locked: the locked dependency set of this release does not build on current toolchains.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --quiet
fi
