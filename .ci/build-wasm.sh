#!/usr/bin/env bash
# Release wasm build + wasm-bindgen glue into pkg/ (ES module for the browser). The npm package (package.json at
# the repository root) ships pkg/lambda_eclipse.js and pkg/lambda_eclipse_bg.wasm from here with www/lib, www/ui
# and www/widget: `npm pack` after this script.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-unknown-unknown --lib --no-default-features --features gpu
wasm-bindgen --target web --out-dir pkg target/wasm32-unknown-unknown/release/lambda_eclipse.wasm
echo "== pkg/: $(du -h pkg/lambda_eclipse_bg.wasm | cut -f1) of wasm"
