"""The decode itself: the diffusers Kandinsky 2.2 pipeline, cancellable between steps, and image encoding.

Request validation lives in `validation` (shared with every front end); nothing here knows about HTTP.
"""

from __future__ import annotations

import io
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import config as C
from .validation import DecodeParams, RequestLimits

log = logging.getLogger("lambda_decoder")


# ---------------------------------------------------------------------------------------------------------------
# Models


def tiny_random_components(embed_dim: int = 32, seed: int = 0, movq_channels: tuple[int, ...] = (32, 64)):
    """A tiny random Kandinsky 2.2 decoder (same classes and config style as the real one) for tests and
    offline demos. The same seed (and torch version) builds the same weights. `movq_channels` has one entry per
    MoVQ level: 2 levels downsample by 2 (size multiple 4), 3 by 4 (size multiple 16)."""
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
    levels = len(movq_channels)
    movq = VQModel(
        block_out_channels=list(movq_channels),
        down_block_types=["DownEncoderBlock2D"] * (levels - 1) + ["AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * (levels - 1),
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


def size_multiple(pipe) -> int:
    """Image sides must be multiples of this. diffusers' Kandinsky 2.2 pipeline computes the latent size with
    downscale_height_and_width, which rounds the image up to a multiple of movq_scale_factor² (other sizes would
    come back larger than asked), and the UNet halves the latents once per down block but the last. The same
    rule as the wasm decoder's sizeMultiple (src/pipeline/decoder.rs): 64 for the real decoder (MoVQ ×8, 4-level
    UNet), 16 for a MoVQ that downsamples by 4, 4 for --tiny-random."""
    f = pipe.movq_scale_factor  # 2 ** (len(movq.config.block_out_channels) - 1), as diffusers sets it
    unet_halvings = len(pipe.unet.config.block_out_channels) - 1
    return math.lcm(f * f, f * 2**unet_halvings)


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
        self.size_multiple = size_multiple(pipe)
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

    def limits(self, settings: C.Settings) -> RequestLimits:
        """What requests to this decoder may ask for (validation.parse_request's limits)."""
        return C.resolve_limits(settings, device=self.device, embed_dim=self.embed_dim, side_multiple=self.size_multiple)

    def render(self, p: DecodeParams, on_step: Callable[[int], None] | None = None):
        """Runs the pipeline; returns (PIL image, seed used, source of the negative embedding).

        on_step(steps_done) runs after every denoising step, in the decoding thread; whatever it raises stops the
        decode there (decode_queue.Job uses it to cancel abandoned work and to report progress)."""
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
            callback_on_step_end=_step_callback(on_step) if on_step else None,
            callback_on_step_end_tensor_inputs=[],
        )
        return out.images[0], seed, source

    def decode(self, p: DecodeParams, on_step: Callable[[int], None] | None = None) -> DecodeResult:
        t0 = time.perf_counter()
        image, seed, source = self.render(p, on_step)
        data = encode_image(image, p.format)
        ms = (time.perf_counter() - t0) * 1000
        return DecodeResult(data, C.FORMATS[p.format], seed, ms, source)


def _step_callback(on_step: Callable[[int], None]):
    def callback(_pipe, i: int, _t, callback_kwargs: dict) -> dict:
        on_step(i + 1)
        return callback_kwargs

    return callback


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
