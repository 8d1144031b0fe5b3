"""Server settings: every knob of the command line, with the protocol's defaults and limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_MODEL = "kandinsky-community/kandinsky-2-2-decoder"
FORMATS = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}

# Protocol defaults (what a request that leaves a field out gets).
DEFAULT_SIDE = 512
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 4.0
DEFAULT_FORMAT = "png"
# Sides are multiples of the loaded model's size multiple (Decoder.size_multiple: 64 for the real MoVQ, whose
# latents are side / 8, as diffusers rounds them to multiples of movq_scale_factor²).
MAX_SEED = 2**63 - 1
# Seeds the server picks itself stay below 2^53 so a JavaScript client can read them back exactly.
MAX_CHOSEN_SEED = 2**53 - 1
MAX_GUIDANCE = 50.0

# Per-device caps on the work of one request, used unless --max-side / --max-steps say otherwise. A GPU decodes
# 1024 px × 100 steps of the real model in seconds; a CPU needs minutes for 512 px × 50 (and a 1024 px request
# would hold a CPU server for over 15 minutes), so CPU servers accept less by default.
DEVICE_CAPS = {"gpu": {"max_side": 1024, "max_steps": 100}, "cpu": {"max_side": 512, "max_steps": 50}}

# Slow clients (nginx's client_header_timeout / client_body_timeout; uvicorn has neither, see http_guard.py).
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 100
# Shutdown: the running decode gets this long to finish, then it is cancelled between two steps; the process is
# gone at most SHUTDOWN_MARGIN_S later whatever happens (uvicorn's timeout_graceful_shutdown).
DEFAULT_SHUTDOWN_GRACE_S = 5.0
SHUTDOWN_MARGIN_S = 5.0


def device_class(device: str) -> str:
    return "cpu" if device == "cpu" else "gpu"


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    tiny_random: bool = False
    # Embedding dimension of the --tiny-random decoder (the tiny λ model's is 32; the real one's 1280).
    embed_dim: int = 32
    # Seed of the --tiny-random weights: the same seed builds the same decoder.
    tiny_seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # torch's CPU threads. None: 1 for --tiny-random (too small to gain from threads, and OpenMP threads that
    # spin on a busy machine make it 10× slower), torch's default (one per core) otherwise.
    threads: int | None = None
    # Safetensors file with `negative_image_embeds` (e.g. written by `lambda-eclipse prior`): the negative used
    # when a request has none. Without it such requests get zeros (see README.md, "The negative embedding").
    negative_embeds: str | None = None
    token: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    # None: the device's default (DEVICE_CAPS), known once the model is on its device.
    max_side: int | None = None
    max_steps: int | None = None
    max_body_bytes: int = 1 << 20
    # Requests allowed to wait while one decodes; one more gets 429.
    max_waiting: int = 8
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_S
    host: str = "127.0.0.1"
    port: int = 8765
    log_level: str = "info"

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Defaults, then LAMBDA_DECODER_* environment variables, then `overrides` (not None)."""
        s = cls()
        env = os.environ
        if "LAMBDA_DECODER_MODEL" in env:
            s.model = env["LAMBDA_DECODER_MODEL"]
        if env.get("LAMBDA_DECODER_TOKEN"):
            s.token = env["LAMBDA_DECODER_TOKEN"]
        if env.get("LAMBDA_DECODER_CORS_ORIGINS"):
            s.cors_origins = [o.strip() for o in env["LAMBDA_DECODER_CORS_ORIGINS"].split(",") if o.strip()]
        for name in ("max_side", "max_steps", "max_body_bytes", "max_waiting", "embed_dim", "threads", "max_connections"):
            key = "LAMBDA_DECODER_" + name.upper()
            if key in env:
                setattr(s, name, int(env[key]))
        for name in ("header_timeout", "body_timeout", "shutdown_grace"):
            key = "LAMBDA_DECODER_" + name.upper()
            if key in env:
                setattr(s, name, float(env[key]))
        for name, value in overrides.items():
            if value is not None:
                setattr(s, name, value)
        s.validate()
        return s

    def validate(self) -> None:
        for name in ("max_side", "max_steps", "max_body_bytes", "embed_dim", "max_connections"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.max_waiting < 0:
            raise ValueError("max_waiting must be at least 0")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 seconds")
        if not self.shutdown_grace >= 0:
            raise ValueError("shutdown_grace must be at least 0 seconds")


def resolve_limits(settings: Settings, *, device: str, embed_dim: int, side_multiple: int):
    """The limits a loaded model on `device` enforces: the settings' caps or the device's defaults, max_side
    rounded down to the model's size multiple. Raises ValueError when max_side is below that multiple."""
    from .validation import RequestLimits

    caps = DEVICE_CAPS[device_class(device)]
    max_side = settings.max_side if settings.max_side is not None else caps["max_side"]
    max_steps = settings.max_steps if settings.max_steps is not None else caps["max_steps"]
    if max_side < side_multiple:
        raise ValueError(f"max_side {max_side} is below this model's size multiple {side_multiple}")
    return RequestLimits(
        embed_dim=embed_dim,
        side_multiple=side_multiple,
        max_side=max_side - max_side % side_multiple,
        max_steps=max_steps,
    )
