#!/usr/bin/env bash
# Tests of the reference decoder server (server/): the protocol suite against the tiny random decoder, then the
# bounded load test (200 requests at concurrency 20 on 127.0.0.1). CPU only; about 2 minutes once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup-python.sh
cd server
echo "== server protocol tests"
python3 -m pytest -q -p no:cacheprovider -m "not load" tests
echo "== server load test"
python3 -m pytest -q -p no:cacheprovider -s -m load tests

echo "== distillation smoke: the student written by server/distill decodes in our engine"
student=$(mktemp -d)
bash distill/make_smoke_student.sh "$student" > "$student.log" 2>&1 || { cat "$student.log"; exit 1; }
tail -n 3 "$student.log"
cd ..
target/debug/lambda-eclipse decode-local --model "$student" --embeds "$student/embeds.safetensors" \
  --out "$student/decoded.png" --steps 4 --width 64 --height 64 --seed 1 --backend cpu
python3 - "$student/decoded.png" <<'PY'
import sys
from PIL import Image
im = Image.open(sys.argv[1])
assert im.size == (64, 64) and im.mode == "RGB", (im.size, im.mode)
lo, hi = min(b[0] for b in im.getextrema()), max(b[1] for b in im.getextrema())
assert hi > lo, "the decoded student image is flat"
print(f"student decoded: {im.size[0]}x{im.size[1]} {im.mode}, values {lo}..{hi}")
PY
