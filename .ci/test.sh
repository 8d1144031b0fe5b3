#!/usr/bin/env bash
# Runs every test: native (golden parity, CLI, bad inputs, image parity, the decoder client against the tiny
# reference server), the decoder server's own suite and load test, and the wasm tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
bash .ci/setup-python.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== formatting (cargo fmt --check; rustfmt.toml: 120 columns)"
cargo fmt --check

echo "== clippy (-D warnings; every feature combination's lib, tests with default features)"
# Each cfg is linted on and off: default features (cli, gpu) with --all-targets (the lib, its unit tests, the
# CLI, every tests/*.rs); the lib without cli and gpu (the stand-in `ops::gpu`); the wasm32 lib with gpu and the
# in-browser tests, which are empty natively. The other combinations only mix this code (feature-matrix.sh).
cargo clippy --quiet --all-targets -- -D warnings
cargo clippy --quiet --lib --no-default-features -- -D warnings
cargo clippy --quiet --target wasm32-unknown-unknown --no-default-features --features gpu \
  --lib --test wasm_golden --test wasm_decoder --test wasm_api -- -D warnings

echo "== native tests"
cargo test --quiet

echo "== fuzz targets: replay the committed corpus (seeds + known crashers), then 5 s of fuzzing each (fuzz/README.md)"
bash fuzz/ci.sh

bash .ci/test-server.sh

echo "== feature matrix: lib + bins natively with cli/gpu on and off, the wasm32 lib with and without gpu"
# `check`, not `build`: the tests compile the default features and the in-browser tests the wasm GPU build;
# this proves every other combination compiles, and skipping codegen saves minutes.
bash .ci/feature-matrix.sh
# The CPU-only build's own unit tests: the stand-in `ops::gpu` refuses to open, and `auto` then computes on the CPU.
cargo test --quiet --lib --no-default-features

echo "== in-browser tests (wasm-bindgen-test, headless Chromium: CPU backend and WebGPU on SwiftShader)"
CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=900 \
  cargo test --target wasm32-unknown-unknown --no-default-features --features gpu --test wasm_golden --test wasm_decoder --test wasm_api

echo "== web app end-to-end (playwright-core driving Debian Chromium against the Range-capable static server)"
# Also in tests/e2e: static-server.test.mjs (the dev server serves only the app: no dotfiles, listings, CORS
# or test hooks unless asked) and package.test.mjs (npm pack → installed into a fresh page built by Vite
# offline → a golden case through `import { load } from 'lambda-eclipse'`; tsc --noEmit of the typings).
bash .ci/build-wasm.sh
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && node --test)
