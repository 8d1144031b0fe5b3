#!/usr/bin/env bash
# Builds the wasm package into pkg/ and serves the app on http://127.0.0.1:${PORT:-8080}/. Extra arguments go to
# .ci/static_server.py: `--mount /PREFIX=DIR` serves a model folder, `--cors` lets pages of other origins read
# the files (the widget embedded elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
bash .ci/build-wasm.sh
PORT="${PORT:-8080}"
echo "== serving http://127.0.0.1:$PORT/"
exec python3 .ci/static_server.py --port "$PORT" "$@"
