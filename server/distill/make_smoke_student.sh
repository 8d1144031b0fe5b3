#!/usr/bin/env bash
# Writes the CI smoke student (exactly the one tests/test_distill.py trains and checks) into OUT:
#   unet/ movq/ scheduler/ model_index.json   the decoder, HF layout (tiny: D = 32, 64 px)
#   embeds.safetensors                         image_embeds [1,32] + negative_image_embeds [1,32], f32
#   distill.json                               the run's record (losses per step)
# then e.g.:  lambda-eclipse decode-local --model OUT --embeds OUT/embeds.safetensors --out smoke.png ...
# Needs the shared goldens: $LAMBDA_SHARED, else ../shared next to the repository. CPU, < 1 min.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [extra python3 -m distill options]" >&2
    exit 2
fi
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."   # server/
exec "${PYTHON:-python3}" -m distill --smoke --output "$out" "$@"
