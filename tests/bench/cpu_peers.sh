#!/usr/bin/env bash
# Our CPU backend against the peers on the bigG text tower (77 tokens), one thread each, same machine, same
# run, in interleaved blocks (odd blocks run ours first, even blocks the peers first; this machine's speed
# drifts by ±10 % within minutes, so read ratios inside a block):
#   native  ours f32 and q8_0 (`ours-bench`, the anchors' probe) vs onnxruntime f32 (Python, 1 thread)
#   wasm    ours f32 and q8_0 (the probe's wasm in headless Chromium, built with +simd128 as the app is)
#           vs ONNX Runtime Web's wasm f32 (1 thread)
# with, optionally, a baseline build of ours (BASE=…) in the same blocks.
#
# Setup, once (≈15 min; ../shared/bench/anchors/README.md has the details):
#   cp -r ../shared/bench/anchors $A && cd $A && python3 -m venv --system-site-packages .venv &&
#   .venv/bin/pip install -r requirements.txt && npm install --ignore-scripts &&
#   PY=.venv/bin/python OURS=<this checkout> ./run_all.sh export && ./run_all.sh ours-build && ./run_all.sh ours-models
#   target/release/lambda-eclipse quantize --model $A/models/clip-bigg-text-hf --out $A/models/clip-bigg-text-q8_0 --type q8_0
#   (cd $A/ours && RUSTFLAGS="-C target-feature=+simd128" cargo build --release --lib --target wasm32-unknown-unknown &&
#    wasm-bindgen --target web --out-dir pkg-new target/wasm32-unknown-unknown/release/ours_bench.wasm)
# The wasm q8_0 tower needs the probe's `what=text:q8_0` (random weights made in Q8_0 blocks): in
# $A/ours/src/lib.rs, `Tower::random` maps a ":q8_0" suffix of `what` to `WeightStore::random(be, WeightDType::Q8_0, seed)`.
#
# Usage: A=/path/to/anchors bash tests/bench/cpu_peers.sh native|wasm [BLOCKS] — records in
# $A/results/cpu-peers-{native,wasm}-<time>.jsonl, one file per invocation, and a table at the end.
# A baseline: BASE=/path/to/ours-base (a copy of $A/ours whose `project` links to the baseline checkout, built the same
# way; its wasm pkg in $A/ours/pkg-base).
set -u
: "${A:?set A to the anchors folder}"
cd "$A"
what=${1:-native}
blocks=${2:-3}
PY=.venv/bin/python
BIGGHF=models/clip-bigg-text-hf Q8=models/clip-bigg-text-q8_0 BIGG=models/clip-bigg-text/onnx
RUNS=${RUNS:-10}
mkdir -p results
results="results/cpu-peers-$what-$(date -u +%Y%m%dT%H%M%SZ).jsonl"   # this invocation's records
# `side`: which engine and build (the engines' own records have a `build` field of their own).
out() { sed "s/^{/{\"at\": \"$(date -u +%FT%TZ)\", \"block\": \"$BLOCK\", \"side\": \"$SIDE\", /" | tee -a "$results"; }
ours_native() {
  SIDE=$1
  for m in "$BIGGHF" "$Q8"; do
    RAYON_NUM_THREADS=1 "$2" --what text --model "$m" --inputs $BIGGHF/reference.safetensors --label "$1-$(basename "$m")" \
      --warmup 2 --runs "$RUNS" | out
  done
}
ours_wasm() {
  SIDE=$1
  ln -sfn "$2" ours/pkg
  for w in text text:q8_0; do
    timeout 2700 node drive.mjs page=/ours.html mode=forward what=$w config=/$BIGGHF/text_encoder/config.json warmup=1 \
      runs="$RUNS" 2>>results/browser-console.log | out
  done
}
peers_native() { SIDE=onnxruntime; $PY ort_bench.py $BIGG/text_model.onnx --threads 1 --warmup 2 --runs "$RUNS" | out; }
peers_wasm() {
  SIDE=ort-web
  timeout 2700 node drive.mjs ep=wasm threads=1 warmup=1 runs="$RUNS" model=/$BIGG/text_model.onnx \
    data=/$BIGG/text_model.onnx.data 2>>results/browser-console.log | out
}
ours() {
  if [ "$what" = native ]; then
    ours_native new ours/target/release/ours-bench
    [ -n "${BASE:-}" ] && ours_native base "$BASE/target/release/ours-bench"
  else
    ours_wasm new pkg-new
    [ -n "${BASE:-}" ] && ours_wasm base pkg-base
  fi
  return 0
}
for b in $(seq 1 "$blocks"); do
  BLOCK="$what-$b"
  if [ $((b % 2)) = 1 ]; then ours; "peers_$what"; else "peers_$what"; ours; fi
done
[ "$what" = wasm ] && ln -sfn pkg-new ours/pkg
# A table: median ms per block and build, and the peer's median over ours.
$PY - "$results" <<'EOF'
import json, sys, collections
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    d = json.loads(line)
    side = d["side"]
    # native records name the build in their label (`model`: new-clip-bigg-text-hf …), wasm ones in `side`
    key = side if side in ("onnxruntime", "ort-web") else (side + " " + d["what"] if d.get("what") else d["model"])
    rows[d["block"]][key] = d["median_ms"]
for block, r in rows.items():
    peer = r.get("onnxruntime") or r.get("ort-web")
    print(block, "  ".join(f"{k}: {v:.0f} ms" + (f" ({peer / v:.2f}x)" if peer and k not in ("onnxruntime", "ort-web") else "") for k, v in r.items()))
EOF
