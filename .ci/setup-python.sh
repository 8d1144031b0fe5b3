#!/usr/bin/env bash
# Installs the decoder server's Python dependencies (server/requirements.txt, and server/requirements-ray.txt for
# the Ray Serve deployment) into the system python in one pip step, skipped when they are already importable.
# torch is the large part (~4 min the first time); ray[serve] adds ~80 MB (~30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c "import torch, diffusers, transformers, safetensors, fastapi, uvicorn, PIL, pytest, httpx, psutil, yaml, hypothesis, ray.serve" 2>/dev/null; then
  echo "== python deps for server/ already installed"
  exit 0
fi
echo "== pip install -r server/requirements.txt -r server/requirements-ray.txt (torch is large: takes minutes once)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r server/requirements.txt -r server/requirements-ray.txt
