#!/usr/bin/env bash
# Runs every test: native (golden parity, CLI, bad inputs, image parity, the decoder client against the tiny
# reference server), the decoder server's own suite and load test, and the wasm tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
bash .ci/setup-python.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== native tests"
cargo test --quiet

echo "== fuzz targets: replay the committed corpus (seeds + known crashers), then 5 s of fuzzing each (fuzz/README.md)"
bash fuzz/ci.sh

bash .ci/test-server.sh

echo "== wasm32 check (library without the GPU backend: the CPU-only build must compile)"
# `check`, not `build`: the in-browser tests and build-wasm.sh below compile the GPU build; this only has to
# prove the CPU-only feature set compiles, and skipping codegen saves minutes.
cargo check --quiet --target wasm32-unknown-unknown --lib --no-default-features

echo "== in-browser tests (wasm-bindgen-test, headless Chromium: CPU backend and WebGPU on SwiftShader)"
CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=900 \
  cargo test --target wasm32-unknown-unknown --no-default-features --features gpu --test wasm_golden --test wasm_decoder

echo "== web app end-to-end (playwright-core driving Debian Chromium against the Range-capable static server)"
# Also in tests/e2e: static-server.test.mjs (the dev server serves only the app: no dotfiles, listings, CORS
# or test hooks unless asked) and package.test.mjs (npm pack → installed into a fresh page built by Vite
# offline → a golden case through `import { load } from 'lambda-eclipse'`; tsc --noEmit of the typings).
bash .ci/build-wasm.sh
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && node --test)
