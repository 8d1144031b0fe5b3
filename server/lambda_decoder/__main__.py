"""Command line: `python3 -m lambda_decoder [--tiny-random | --model ID_OR_DIR] [--port 8765] ...` (from server/).

Every option also has a LAMBDA_DECODER_* environment variable (see config.Settings.from_env); options win.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from .app import create_app
from .config import DEFAULT_MODEL, Settings


def parse_args(argv=None) -> Settings:
    p = argparse.ArgumentParser(prog="lambda_decoder", description="λ-ECLIPSE decoder endpoint (Kandinsky 2.2)")
    p.add_argument("--model", help=f"hub id or local folder with unet/ movq/ scheduler/ (default: {DEFAULT_MODEL})")
    p.add_argument("--tiny-random", action="store_true", default=None,
                   help="build a tiny random decoder instead of loading one (tests, offline demos)")
    p.add_argument("--embed-dim", type=int, help="image embedding dimension of --tiny-random (default 32)")
    p.add_argument("--tiny-seed", type=int, help="seed of the --tiny-random weights (default 0)")
    p.add_argument("--device", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with --tiny-random, else one per core)")
    p.add_argument("--negative-embeds", metavar="FILE.safetensors",
                   help="`negative_image_embeds` used when a request has none (default: zeros)")
    p.add_argument("--token", help="require Authorization: Bearer TOKEN (or LAMBDA_DECODER_TOKEN)")
    p.add_argument("--cors-origin", action="append", dest="cors_origins", metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; '*' allows any)")
    p.add_argument("--max-side", type=int, help="largest width/height in pixels (default 1024)")
    p.add_argument("--max-steps", type=int, help="largest num_inference_steps (default 100)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 1 MiB)")
    p.add_argument("--max-waiting", type=int, help="requests allowed to wait behind the running decode (default 8)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 in the Docker image)")
    p.add_argument("--port", type=int, help="port (default 8765)")
    p.add_argument("--log-level", help="debug, info, warning, error (default info)")
    args = vars(p.parse_args(argv))
    try:
        return Settings.from_env(**args)
    except ValueError as e:
        p.error(str(e))


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT: requests still waiting get 503 at once, the running decode finishes and is sent,
    then uvicorn closes (it waits for in-flight requests: timeout_graceful_shutdown is None)."""

    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self.lambda_state = state

    def handle_exit(self, sig, frame):
        self.lambda_state.queue.draining = True
        super().handle_exit(sig, frame)


def main(argv=None) -> int:
    settings = parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    server = GracefulServer(config, app.state.lambda_state)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
