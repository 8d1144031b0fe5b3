#!/usr/bin/env bash
# Tests of the reference decoder server (server/): the protocol suite against the tiny random decoder, then the
# bounded load test (200 requests at concurrency 20 on 127.0.0.1), then the Ray Serve deployment (a local Ray on
# 127.0.0.1: the same protocol suite against it, bursts on 1 and 2 replicas, a killed replica, the command line).
# CPU only; about 3 minutes + the Ray part (5-7 minutes on 2 cores) once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup-python.sh
cd server
echo "== server protocol tests"
python3 -m pytest -q -p no:cacheprovider -m "not load and not ray" tests
echo "== server load test"
python3 -m pytest -q -p no:cacheprovider -s -m load tests
echo "== Ray Serve tests (local Ray on 127.0.0.1; prints the 1 vs 2 replica burst numbers)"
ray_start=$(date +%s)
# -s shows the measured numbers; RAY_USAGE_STATS_ENABLED=0: nothing is reported anywhere (also set by the code).
LAMBDA_DECODER_REQUIRE_RAY=1 RAY_USAGE_STATS_ENABLED=0 QUIET_SERVER=1 \
  python3 -m pytest -q -p no:cacheprovider -s -m ray tests 2>&1 | grep -v -e "^INFO " -e "(raylet)" -e "WARNING authentication_token"
echo "Ray Serve tests: $(( $(date +%s) - ray_start )) s"

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
