#!/usr/bin/env bash
# The GPU kernels' measurement on a lent GPU machine (the device tool's H200), in one command: our bench per
# binary in .bench-bin/ (e.g. `lambda-eclipse-before` and `lambda-eclipse`, so a change is measured before and
# after in the same run), the flash vs GEMM attention comparison, then PyTorch side by side
# (tests/bench/torch_side_by_side.py) against the last binary. Prints the tables; writes them to $OUT too.
#
# Here, once per session (the machine starts bare; nothing is installed there):
#   echo /.gl/ >>.git/info/exclude; echo /.bench-bin/ >>.git/info/exclude
#   mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1)        # the Vulkan loader wgpu opens
#   cargo build --release && mkdir -p .bench-bin && cp target/release/lambda-eclipse .bench-bin/
#   (and a build of the baseline commit as .bench-bin/lambda-eclipse-before)
# There: run(command="bash tests/bench/gpu_session.sh", carry=[".gl", ".bench-bin"], timeout_s=560)
# ITEMS=quick measures GEMMs and attention only (a few minutes); the default adds the models and decoder parts.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
nvidia-smi -L 2>/dev/null || true
ITEMS=${ITEMS:-all}
bins=(.bench-bin/*)
[ -e "${bins[0]}" ] || { echo "no binaries in .bench-bin/ (see the comment at the top)"; exit 2; }

bench() {  # binary, label, args...
  local bin=$1 label=$2
  shift 2
  echo "== $(basename "$bin"): $label"
  timeout 240 "$bin" bench --gpu-only --adapter-limits "$@" 2>&1 | tee -a "$OUT/$(basename "$bin").txt"
}

for bin in "${bins[@]}"; do
  bench "$bin" "GEMMs and attention (f32)" --only matmul --only attention --iters 5
  bench "$bin" "attention through the GEMM path" --only attention --blocked-attention --iters 5
  # Each tiling forced, to re-check the tile rule (ops/gemm.rs: 128² only from 256 tiles) on this device.
  bench "$bin" "GEMMs, 64x64 tiles forced" --only matmul --gemm-tile 64 --iters 5
  bench "$bin" "GEMMs, 128x128 tiles forced" --only matmul --gemm-tile 128 --iters 5
  bench "$bin" "GEMMs with f16 weights" --only matmul --dtype f16 --iters 5
  bench "$bin" "GEMMs with f16 weights in f16 arithmetic" --only matmul --dtype f16 --f16-math --iters 5
  # Split-K forced on and off, row by row in one run (binaries from before split-K do not have the flag).
  if "$bin" bench --help | grep -q -- --split-k; then
    bench "$bin" "GEMMs split-K on vs off" --only matmul --split-k compare --iters 5
  fi
  if [ "$ITEMS" != quick ]; then
    bench "$bin" "towers and prior, f16 weights" --only text --only vision --only prior --dtype f16 --iters 3
    bench "$bin" "decoder parts at 512 px, f16 weights" --only unet --only movq --dtype f16 --iters 3
    bench "$bin" "decoder parts at 512 px, f16 weights and arithmetic" --only unet --only movq --dtype f16 --f16-math --iters 3
  fi
done

last=${bins[${#bins[@]}-1]}
only=(--only matmul --only attention)
[ "$ITEMS" = quick ] || only+=(--only text --only vision --only prior --only unet --only movq)
echo "== PyTorch side by side with $(basename "$last")"
PYTHONUNBUFFERED=1 timeout 420 python3 tests/bench/torch_side_by_side.py --ours "$last" "${only[@]}" --iters 3 \
  2>&1 | tee "$OUT/torch_side_by_side.txt"
