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
# Sides are multiples of 64: Kandinsky's latents are side / 8 and the UNet halves them three times.
SIDE_MULTIPLE = 64
MAX_SEED = 2**63 - 1
# Seeds the server picks itself stay below 2^53 so a JavaScript client can read them back exactly.
MAX_CHOSEN_SEED = 2**53 - 1
MAX_GUIDANCE = 50.0


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
    max_side: int = 1024
    max_steps: int = 100
    max_body_bytes: int = 1 << 20
    # Requests allowed to wait while one decodes; one more gets 429.
    max_waiting: int = 8
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
        for name in ("max_side", "max_steps", "max_body_bytes", "max_waiting", "embed_dim", "threads"):
            key = "LAMBDA_DECODER_" + name.upper()
            if key in env:
                setattr(s, name, int(env[key]))
        for name, value in overrides.items():
            if value is not None:
                setattr(s, name, value)
        s.validate()
        return s

    def validate(self) -> None:
        if self.max_side < SIDE_MULTIPLE or self.max_side % SIDE_MULTIPLE:
            raise ValueError(f"max_side must be a positive multiple of {SIDE_MULTIPLE}, not {self.max_side}")
        for name in ("max_steps", "max_body_bytes", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_waiting < 0:
            raise ValueError("max_waiting must be at least 0")
