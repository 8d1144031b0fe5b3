"""The decode itself: request validation, the diffusers Kandinsky 2.2 pipeline, image encoding.

Nothing here knows about HTTP except `ApiError` (status + code + message), which both the FastAPI app and the
Hugging Face handler turn into their own error replies.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import secrets
import time
from dataclasses import dataclass

import numpy as np

from . import config as C

log = logging.getLogger("lambda_decoder")


class ApiError(Exception):
    """An error reply: HTTP status, a stable machine-readable code, a message for humans."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


# ---------------------------------------------------------------------------------------------------------------
# Request validation


@dataclass(frozen=True)
class DecodeParams:
    image_embeds: np.ndarray  # float32 [D]
    negative_image_embeds: np.ndarray | None  # float32 [D], None: the server's default
    seed: int | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    format: str


FIELDS = {
    "image_embeds",
    "negative_image_embeds",
    "seed",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "format",
}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"invalid_{field}", f"{field}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_embedding(value, field: str, dim: int) -> np.ndarray:
    """A list of D numbers, or base64 of D little-endian f32 (4·D bytes); finite values only."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(field, "not valid base64 (standard alphabet, padded)") from None
        if len(raw) != 4 * dim:
            raise _invalid(field, f"expected {dim} little-endian f32 ({4 * dim} bytes), got {len(raw)} bytes")
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif isinstance(value, list):
        if len(value) != dim:
            raise _invalid(field, f"expected {dim} numbers, got {len(value)}")
        if not all(_is_number(x) for x in value):
            raise _invalid(field, "every element must be a number")
        arr = np.asarray(value, dtype=np.float64)
        # Values beyond f32's range would become ±inf below; say so rather than decoding garbage.
        if np.isfinite(arr).all() and np.abs(arr).max(initial=0.0) > np.finfo(np.float32).max:
            raise _invalid(field, "a value is outside the f32 range")
        arr = arr.astype(np.float32)
    else:
        raise _invalid(field, f"expected a list of {dim} numbers or a base64 string of {dim} f32")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise _invalid(field, f"element {bad} is {arr[bad]} (NaN and ±Infinity are not accepted)")
    return arr


def _side(body: dict, name: str, max_side: int) -> int:
    v = body.get(name, C.DEFAULT_SIDE)
    if not _is_int(v):
        raise _invalid("size", f"{name} must be an integer, got {v!r}")
    if v < C.SIDE_MULTIPLE or v % C.SIDE_MULTIPLE:
        raise _invalid("size", f"{name} must be a positive multiple of {C.SIDE_MULTIPLE}, got {v}")
    if v > max_side:
        raise _invalid("size", f"{name} {v} is over this server's limit of {max_side}")
    return v


def parse_request(body, *, embed_dim: int, max_side: int, max_steps: int) -> DecodeParams:
    """Validates a decoded JSON body; every problem is an ApiError (422, or 400 when it is not an object)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        # Strict on purpose: a misspelt "steps" would otherwise silently decode 50 steps.
        raise ApiError(422, "unknown_field", f"unknown field(s): {', '.join(unknown)}")
    if "image_embeds" not in body:
        raise _invalid("image_embeds", "required")
    image = parse_embedding(body["image_embeds"], "image_embeds", embed_dim)
    negative = None
    if body.get("negative_image_embeds") is not None:
        negative = parse_embedding(body["negative_image_embeds"], "negative_image_embeds", embed_dim)

    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= C.MAX_SEED):
        raise _invalid("seed", f"must be an integer in [0, 2^63-1], got {seed!r}")

    width = _side(body, "width", max_side)
    height = _side(body, "height", max_side)

    steps = body.get("num_inference_steps", C.DEFAULT_STEPS)
    if not _is_int(steps) or not 1 <= steps <= max_steps:
        raise _invalid("num_inference_steps", f"must be an integer in [1, {max_steps}], got {steps!r}")

    guidance = body.get("guidance_scale", C.DEFAULT_GUIDANCE)
    if not _is_number(guidance) or not math.isfinite(guidance) or not 0 <= guidance <= C.MAX_GUIDANCE:
        raise _invalid("guidance_scale", f"must be a number in [0, {C.MAX_GUIDANCE:g}], got {guidance!r}")

    fmt = body.get("format", C.DEFAULT_FORMAT)
    if fmt not in C.FORMATS:
        raise _invalid("format", f"must be one of {', '.join(C.FORMATS)}, got {fmt!r}")

    return DecodeParams(image, negative, seed, width, height, steps, float(guidance), fmt)


# ---------------------------------------------------------------------------------------------------------------
# Models


def tiny_random_components(embed_dim: int = 32, seed: int = 0):
    """A tiny random Kandinsky 2.2 decoder (same classes and config style as the real one) for tests and
    offline demos. The same seed (and torch version) builds the same weights."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=8,  # 4 ε channels + 4 learned-variance channels the pipeline drops
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        attention_head_dim=8,
        cross_attention_dim=24,
        norm_num_groups=8,
        encoder_hid_dim=embed_dim,
        encoder_hid_dim_type="image_proj",
        addition_embed_type="image",
        resnet_time_scale_shift="scale_shift",
        only_cross_attention=False,
        class_embed_type=None,
    )
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
    )
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    return unet, movq, scheduler


# The decoder's DDPM settings (../shared/docs/decoder-spec.md, "Sampling"; the hub's scheduler_config.json).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.00085,
    beta_end=0.012,
    clip_sample=False,
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
    variance_type="fixed_small",
    thresholding=False,
)


def pick_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


@dataclass
class DecodeResult:
    image_bytes: bytes
    content_type: str
    seed: int
    decode_ms: float
    negative_source: str  # request | configured | zeros


class Decoder:
    """One Kandinsky 2.2 decoder pipeline on one device. Not thread-safe: the app runs one decode at a time."""

    def __init__(self, pipe, *, model_id: str, device: str, default_negative: np.ndarray | None = None):
        self.pipe = pipe
        self.model_id = model_id
        self.device = device
        self.dtype = str(pipe.unet.dtype).removeprefix("torch.")
        self.embed_dim = int(pipe.unet.config.encoder_hid_dim)
        if default_negative is not None and default_negative.shape != (self.embed_dim,):
            raise ValueError(f"the negative embedding has {default_negative.size} values, the model takes {self.embed_dim}")
        self.default_negative = default_negative

    @classmethod
    def load(cls, settings: C.Settings) -> "Decoder":
        import torch
        from diffusers import DDPMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

        device = pick_device(settings.device)
        threads = settings.threads or (1 if settings.tiny_random else None)
        if threads:
            torch.set_num_threads(threads)  # process-wide, so the decode worker thread uses it too
        # fp16 on CUDA as the reference runs it; f32 on the CPU (fp16 CPU kernels are slow or missing).
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        t0 = time.perf_counter()
        if settings.tiny_random:
            unet, movq, scheduler = tiny_random_components(settings.embed_dim, settings.tiny_seed)
            if dtype != torch.float32:
                unet, movq = unet.to(dtype), movq.to(dtype)
            model_id = f"tiny-random (embed_dim {settings.embed_dim}, seed {settings.tiny_seed})"
        else:
            # Component by component, so a folder with only unet/ movq/ scheduler/ (no model_index.json) works
            # as well as a hub id.
            model_id = settings.model
            unet = UNet2DConditionModel.from_pretrained(model_id, subfolder="unet", torch_dtype=dtype)
            movq = VQModel.from_pretrained(model_id, subfolder="movq", torch_dtype=dtype)
            scheduler = DDPMScheduler.from_pretrained(model_id, subfolder="scheduler")
        # Weights already have their dtype (casting through the pipeline makes diffusers warn).
        pipe = KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq).to(device)
        pipe.set_progress_bar_config(disable=True)
        negative = load_negative(settings.negative_embeds) if settings.negative_embeds else None
        log.info("loaded %s on %s (%s) in %.1f s", model_id, device, dtype, time.perf_counter() - t0)
        return cls(pipe, model_id=model_id, device=device, default_negative=negative)

    @property
    def negative_default_source(self) -> str:
        return "configured" if self.default_negative is not None else "zeros"

    def render(self, p: DecodeParams):
        """Runs the pipeline; returns (PIL image, seed used, source of the negative embedding)."""
        import torch

        seed = p.seed if p.seed is not None else secrets.randbelow(C.MAX_CHOSEN_SEED + 1)
        if p.negative_image_embeds is not None:
            negative, source = p.negative_image_embeds, "request"
        elif self.default_negative is not None:
            negative, source = self.default_negative, "configured"
        else:
            negative, source = np.zeros(self.embed_dim, dtype=np.float32), "zeros"
        dtype = self.pipe.unet.dtype
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).reshape(1, -1).to(self.device, dtype)
        # A CPU generator on every device: the same seed draws the same latents and step noise on CPU and GPU.
        generator = torch.Generator("cpu").manual_seed(seed)
        out = self.pipe(
            image_embeds=as_tensor(p.image_embeds),
            negative_image_embeds=as_tensor(negative),
            height=p.height,
            width=p.width,
            num_inference_steps=p.num_inference_steps,
            guidance_scale=p.guidance_scale,
            generator=generator,
            output_type="pil",
        )
        return out.images[0], seed, source

    def decode(self, p: DecodeParams) -> DecodeResult:
        t0 = time.perf_counter()
        image, seed, source = self.render(p)
        data = encode_image(image, p.format)
        ms = (time.perf_counter() - t0) * 1000
        return DecodeResult(data, C.FORMATS[p.format], seed, ms, source)


def load_negative(path: str) -> np.ndarray:
    from safetensors.numpy import load_file

    tensors = load_file(path)
    if "negative_image_embeds" not in tensors:
        raise ValueError(f"{path}: has no tensor `negative_image_embeds`")
    return tensors["negative_image_embeds"].astype(np.float32).reshape(-1)


def encode_image(image, fmt: str) -> bytes:
    """PNG is lossless and deterministic (Pillow writes no timestamp): the same pixels give the same bytes."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=90)
    else:
        image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()
