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
