#!/usr/bin/env bash
# Release wasm build + wasm-bindgen glue into pkg/ (ES module for the browser).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-unknown-unknown --lib --no-default-features --features gpu
wasm-bindgen --target web --out-dir pkg target/wasm32-unknown-unknown/release/lambda_eclipse.wasm
echo "== pkg/: $(du -h pkg/lambda_eclipse_bg.wasm | cut -f1) of wasm"
