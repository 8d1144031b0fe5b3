#!/usr/bin/env bash
# The GPU kernels' measurement on a lent GPU machine (the device tool's H200), in one command: our bench per
# binary in .bench-bin/ (e.g. `lambda-eclipse-before` and `lambda-eclipse`, so a change is measured before and
# after in the same run), the flash vs GEMM attention comparison, then PyTorch side by side
# (tests/bench/torch_side_by_side.py) against the last binary. Prints the tables; writes them to $OUT too.
#
# Here, once per session (the machine starts bare; nothing is installed there):
#   echo /.gl/ >>.git/info/exclude; echo /.bench-bin/ >>.git/info/exclude
#   mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#   (the Vulkan loader wgpu opens, and the GL dispatch libraries NVIDIA's Vulkan driver links against)
#   cargo build --release && mkdir -p .bench-bin && cp target/release/lambda-eclipse .bench-bin/
#   (and a build of the baseline commit as .bench-bin/lambda-eclipse-before)
# PyTorch's image has no diffusers (the prior, UNet and MoVQ rows): carry it as wheels (device README, Notes):
#   echo /.whl/ >>.git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata lazy-importer
# There: run(command="bash tests/bench/gpu_session.sh", carry=[".gl", ".bench-bin", ".whl"], timeout_s=560)
# ITEMS=quick measures GEMMs and attention only (a few minutes); the default adds the models and decoder parts.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The NVIDIA Vulkan driver's manifest, wherever the image mounts it (the loader does not look in /usr/local/nvidia).
icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
  /etc/vulkan/icd.d/nvidia_icd.json 2>/dev/null | head -1)
[ -n "$icd" ] || icd=$(find / -xdev -name 'nvidia_icd*.json' 2>/dev/null | head -1)
[ -n "$icd" ] && export VK_DRIVER_FILES=$icd
echo "Vulkan driver manifest: ${icd:-none found}"
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
ldconfig -p | grep -E 'libvulkan.so.1|libGLX_nvidia|libnvidia-glcore' | head -4
nvidia-smi -L 2>/dev/null || true
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
ITEMS=${ITEMS:-all}
bins=(.bench-bin/*)
[ -e "${bins[0]}" ] || { echo "no binaries in .bench-bin/ (see the comment at the top)"; exit 2; }

bench() {  # binary, label, args...
  local bin=$1 label=$2
  shift 2
  echo "== $(basename "$bin"): $label"
  timeout 240 "$bin" bench --gpu-only --adapter-limits "$@" 2>&1 | tee -a "$OUT/$(basename "$bin").txt"
}

# The binary under test is .bench-bin/lambda-eclipse (else the last by name); the others are baselines.
last=${bins[${#bins[@]}-1]}
[ -x .bench-bin/lambda-eclipse ] && last=.bench-bin/lambda-eclipse
baselines=()
for bin in "${bins[@]}"; do [ "$bin" = "$last" ] || baselines+=("$bin"); done

# Most important first (a run cut short by the lease keeps what it measured): the binary under test's GEMMs and
# attention, its model parts with f16 weights (as the hub stores the vision tower and the UNet), the baselines'
# GEMMs and attention, then the design alternatives forced one by one.
bench "$last" "GEMMs and attention (f32)" --only matmul --only attention --iters 5
if [ "$ITEMS" != quick ]; then
  bench "$last" "towers and prior, f16 weights" --only text --only vision --only prior --dtype f16 --iters 3
  bench "$last" "decoder parts at 512 px, f16 weights" --only unet --only movq --dtype f16 --iters 3
fi
# Where the time goes, kernel variant by kernel variant (each dispatch waited for on its own), for the parts
# furthest from their targets.
if [ "$ITEMS" != quick ] && "$last" bench --help | grep -q -- --profile-kernels; then
  bench "$last" "decoder parts, time per kernel variant" --only unet --only movq --dtype f16 --profile-kernels --iters 1
  bench "$last" "vision tower, time per kernel variant" --only vision --dtype f16 --profile-kernels --iters 1
fi
for bin in "${baselines[@]}"; do
  bench "$bin" "GEMMs and attention (f32)" --only matmul --only attention --iters 5
done
for bin in "$last" "${baselines[@]}"; do
  bench "$bin" "attention through the GEMM path" --only attention --blocked-attention --iters 5
  # Each tiling forced, to re-check the tile rule (ops/gemm.rs: 128² only from 256 tiles) on this device.
  bench "$bin" "GEMMs, 64x64 tiles forced" --only matmul --gemm-tile 64 --iters 5
  bench "$bin" "GEMMs, 128x128 tiles forced" --only matmul --gemm-tile 128 --iters 5
  # Split-K forced on and off, row by row in one run (binaries from before split-K do not have the flag).
  if "$bin" bench --help | grep -q -- --split-k; then
    bench "$bin" "GEMMs split-K on vs off" --only matmul --split-k compare --iters 5
  fi
  bench "$bin" "GEMMs with f16 weights" --only matmul --dtype f16 --iters 5
  bench "$bin" "GEMMs with f16 weights in f16 arithmetic" --only matmul --dtype f16 --f16-math --iters 5
  [ "$bin" = "$last" ] && [ "$ITEMS" != quick ] &&
    bench "$last" "decoder parts at 512 px, f16 weights and arithmetic" --only unet --only movq --dtype f16 --f16-math --iters 3
done

# PyTorch on the same items (TORCH=0 skips it: its numbers do not change with our code, so a second run in one
# lease can leave it out), with our bench run once more inside it for the side-by-side table.
if [ "${TORCH:-1}" != 0 ]; then
  only=(--only matmul --only attention)
  [ "$ITEMS" = quick ] || only+=(--only text --only vision --only prior --only unet --only movq)
  echo "== PyTorch side by side with $(basename "$last")"
  PYTHONUNBUFFERED=1 timeout 360 python3 tests/bench/torch_side_by_side.py --ours "$last" "${only[@]}" --iters 3 \
    2>&1 | tee "$OUT/torch_side_by_side.txt"
fi
