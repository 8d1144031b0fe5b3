"""Command line: `python3 -m lambda_decoder [--tiny-random | --model ID_OR_DIR] [--port 8765] ...` (from server/).

Every option also has a LAMBDA_DECODER_* environment variable (see config.Settings.from_env); options win.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys

import uvicorn

from . import config as C
from .app import create_app
from .config import DEFAULT_MODEL, Settings
from .http_guard import GuardedH11Protocol


def build_parser(prog: str = "lambda_decoder", description: str = "λ-ECLIPSE decoder endpoint (Kandinsky 2.2)"):
    """The options every way of running the server shares (lambda_decoder.serve adds the Ray Serve ones)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
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
    gpu, cpu = C.DEVICE_CAPS["gpu"], C.DEVICE_CAPS["cpu"]
    p.add_argument("--max-side", type=int,
                   help=f"largest width/height in pixels (default {gpu['max_side']} on a GPU, {cpu['max_side']} on the CPU)")
    p.add_argument("--max-steps", type=int,
                   help=f"largest num_inference_steps (default {gpu['max_steps']} on a GPU, {cpu['max_steps']} on the CPU)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 1 MiB)")
    p.add_argument("--max-waiting", type=int, help="requests allowed to wait behind the running decode (default 8)")
    p.add_argument("--header-timeout", type=float,
                   help=f"seconds a request line and headers may take to arrive (default {C.DEFAULT_HEADER_TIMEOUT_S:g})")
    p.add_argument("--body-timeout", type=float,
                   help=f"seconds a request body may take to arrive (default {C.DEFAULT_BODY_TIMEOUT_S:g})")
    p.add_argument("--max-connections", type=int,
                   help=f"open connections at most; more are closed at once (default {C.DEFAULT_MAX_CONNECTIONS})")
    p.add_argument("--shutdown-grace", type=float,
                   help=f"seconds the running decode may take to finish after SIGTERM before it is cancelled "
                        f"(default {C.DEFAULT_SHUTDOWN_GRACE_S:g}; the process exits at most {C.SHUTDOWN_MARGIN_S:g} s later)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 in the Docker image)")
    p.add_argument("--port", type=int, help="port (default 8765)")
    p.add_argument("--log-level", help="debug, info, warning, error (default info)")
    return p


def settings_from(p: argparse.ArgumentParser, args: dict) -> Settings:
    """Settings from the parsed options (those that are Settings fields), env and defaults; errors exit 2."""
    try:
        return Settings.from_env(**{k: v for k, v in args.items() if k in Settings.__dataclass_fields__})
    except ValueError as e:
        p.error(str(e))


def parse_args(argv=None) -> Settings:
    p = build_parser()
    return settings_from(p, vars(p.parse_args(argv)))


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT: requests still waiting get 503 at once; the running decode gets `shutdown_grace`
    seconds to finish and be sent, then it is cancelled at its next step (its client gets 503); uvicorn stops
    waiting for in-flight requests SHUTDOWN_MARGIN_S after that (timeout_graceful_shutdown), whatever they are
    doing, and the decode thread (a daemon) does not hold the process. So the process is gone within
    shutdown_grace + SHUTDOWN_MARGIN_S seconds (10 s by default)."""

    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self.lambda_state = state

    def handle_exit(self, sig, frame):
        if not self.should_exit:
            self.lambda_state.begin_shutdown()
        super().handle_exit(sig, frame)


def uvicorn_config(app, settings: Settings) -> uvicorn.Config:
    """uvicorn with its own h11 protocol plus the slow-client guard (http_guard.py)."""
    protocol = functools.partial(
        GuardedH11Protocol,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=protocol,
        timeout_keep_alive=5,  # uvicorn's default, stated: idle keep-alive connections close after 5 s
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace + C.SHUTDOWN_MARGIN_S),
    )


def main(argv=None) -> int:
    settings = parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    server = GracefulServer(uvicorn_config(app, settings), app.state.lambda_state)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
