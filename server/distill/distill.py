"""Distil a smaller Kandinsky 2.2 decoder UNet from a teacher, on a folder of images.

    cd server && python3 -m distill --help
    python3 server/distill/distill.py --help            # the same, from anywhere

The decoder is trained on images alone: each image's condition is its own CLIP image embedding (the image tower of
`kandinsky-community/kandinsky-2-2-prior`, or any CLIPVisionModelWithProjection folder), its latents come from the
teacher's MoVQ encoder (`VQModel.encode(x).latents`, x in [-1, 1]), as in diffusers'
`examples/kandinsky2_2/text_to_image/train_text_to_image_decoder.py`.

Mode `block-removal`: the student is the same `UNet2DConditionModel` class with a smaller config (fewer
`layers_per_block`, optionally narrower `block_out_channels`, optionally no mid block), initialised from the teacher
(`init_student_from_teacher`), and trained with BK-SDM's loss (Kim et al., 2023):

    L = w_task · ‖ε_S[:4] − ε‖² + w_out · ‖ε_S − ε_T‖² + w_feat · Σ_blocks ‖A(f_S) − f_T‖²

ε: the noise added to the latents at a uniform random timestep; ε_S / ε_T: the student's / teacher's 8-channel
outputs (ε and the learned-variance channels); f: the outputs of every down block, the mid block and every up block
(forward hooks), at the same resolutions in both; A: a 1×1 convolution where the widths differ, else the identity.

Mode `progressive` (Salimans & Ho, 2022): the student (the teacher's architecture and weights) learns to make one
DDIM step where the teacher makes two, on diffusers' DDIM grid ("leading" spacing, as the decoder's scheduler): the
target is the ε for which one step from x_t lands on the teacher's two-step result (`pd_target`); optionally against
the teacher's classifier-free-guided prediction (`--pd-guidance`). Run again on its output to halve again. The
output's scheduler is a DDIMScheduler with the same betas.

The output folder has the layout our engine and `lambda_decoder` load (`unet/`, `movq/`, `scheduler/`) plus a
`model_index.json` so `KandinskyV22Pipeline.from_pretrained(OUT)` works, and `distill.json` (the run's record).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

SERVER_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = SERVER_DIR.parent

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DEFAULT_TEACHER = "kandinsky-community/kandinsky-2-2-decoder"
DEFAULT_IMAGE_ENCODER = "kandinsky-community/kandinsky-2-2-prior"


def shared_dir() -> Path:
    """The shared assets: $LAMBDA_SHARED, else ../shared next to the repository."""
    env = os.environ.get("LAMBDA_SHARED")
    return Path(env) if env else (REPO_DIR / ".." / "shared").resolve()


def smoke_defaults(mode: str = "block-removal") -> dict:
    """`--smoke`: the CI student (tiny teacher, 4 photos, 64 px, 20 steps on one fixed batch, CPU, < 1 min).
    With --mode progressive: the tiny teacher's own architecture, DDIM 8 → 4 steps."""
    s = shared_dir()
    d = dict(
        teacher=str(s / "goldens/kandinsky-tiny/model"),
        image_encoder=str(s / "goldens/lambda-tiny/model/image_encoder"),
        image_processor=str(s / "goldens/lambda-tiny/model/image_processor"),
        images=str(s / "assets/images"),
        max_images=4,
        resolution=64,
        block_out_channels="16,32",
        steps=20,
        batch_size=4,
        fixed_batch=True,
        lr=1e-3,
        lr_warmup_steps=0,
        seed=0,
        device="cpu",
        threads=1,
        log_every=1,
        write_embeds=True,
    )
    if mode == "progressive":
        d.update(block_out_channels=None, pd_teacher_steps=8, lr=3e-4)
    return d


# ---------------------------------------------------------------------------------------------------------------
# Loading


def resolve_model_dir(id_or_dir: str, allow_patterns: list[str]) -> Path:
    """A local folder as is; a Hub id through the local cache (huggingface_hub.snapshot_download)."""
    p = Path(id_or_dir).expanduser()
    if p.is_dir():
        return p
    if p.exists() or id_or_dir.startswith((".", "/")) or id_or_dir.count("/") != 1:
        raise SystemExit(f"error: {id_or_dir}: not a folder and not a Hub id (owner/name)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(id_or_dir, allow_patterns=allow_patterns))


def teacher_dir(id_or_dir: str) -> Path:
    d = resolve_model_dir(
        id_or_dir,
        ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "movq/config.json",
         "movq/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"],
    )
    for sub in ("unet/config.json", "movq/config.json", "scheduler/scheduler_config.json"):
        if not (d / sub).is_file():
            raise SystemExit(f"error: teacher {id_or_dir}: {sub} missing "
                             "(expected the HF layout unet/ movq/ scheduler/)")
    return d


def load_image_encoder(id_or_dir: str, processor_id_or_dir: str | None, device, dtype):
    """CLIPVisionModelWithProjection + its image processor. `id_or_dir` is the encoder folder itself (config.json),
    or a folder / Hub id with `image_encoder/` and `image_processor/` (like the Kandinsky 2.2 prior's)."""
    from transformers import CLIPVisionModelWithProjection

    try:  # the PIL processor: same numbers, and no torchvision needed (nor its warning)
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as Processor

    p = Path(id_or_dir).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        enc_dir, proc_dir = p, Path(processor_id_or_dir) if processor_id_or_dir else p.parent / "image_processor"
    else:
        root = resolve_model_dir(id_or_dir, ["image_encoder/*", "image_processor/*"])
        enc_dir = root / "image_encoder"
        proc_dir = Path(processor_id_or_dir) if processor_id_or_dir else root / "image_processor"
    if not (proc_dir / "preprocessor_config.json").is_file():
        raise SystemExit(f"error: no image processor at {proc_dir} (give --image-processor)")
    encoder = CLIPVisionModelWithProjection.from_pretrained(enc_dir, torch_dtype=dtype).to(device).eval()
    processor = Processor.from_pretrained(proc_dir)
    return encoder, processor


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"error: --images {folder}: not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if limit:
        paths = paths[:limit]
    if not paths:
        raise SystemExit(f"error: no images ({', '.join(sorted(IMAGE_EXTS))}) under {folder}")
    return paths


def movq_input(img, resolution: int):
    """As diffusers' decoder training script: centre square crop, bicubic resize, [-1, 1], [3, H, W]."""
    import numpy as np
    import torch
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    left, top = (w - s) / 2, (h - s) / 2
    img = img.crop((left, top, left + s, top + s)).resize((resolution, resolution), resample=Image.BICUBIC,
                                                           reducing_gap=1)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def zero_image_embed(encoder):
    """The CLIP tower on an all-zero (normalised) image: the decoder's negative / unconditional embedding
    (diffusers' KandinskyV22PriorPipeline.get_zero_embed; `lambda-eclipse prior` writes the same)."""
    import torch

    size = encoder.config.image_size
    p = next(encoder.parameters())
    with torch.no_grad():
        return encoder(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype)).image_embeds.float().cpu()


def encode_images(paths, movq, encoder, processor, resolution: int, flip: bool, batch: int = 8):
    """→ (latents [N, 4, h, w] f32 CPU, image_embeds [N, D] f32 CPU, names). With `flip`, each image also flipped."""
    import torch
    from PIL import Image, ImageOps

    dev = next(movq.parameters()).device
    latents, embeds, names, skipped = [], [], [], []
    items = []
    for p in paths:
        try:
            with Image.open(p) as im:
                img = im.convert("RGB")
        except Exception as e:  # noqa: BLE001 - a user's folder: skip what PIL cannot read, say so
            skipped.append(f"{p.name} ({e})")
            continue
        items.append((p.name, img))
        if flip:
            items.append((p.name + ":flip", ImageOps.mirror(img)))
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable file(s): {'; '.join(skipped[:5])}", file=sys.stderr)
    if not items:
        raise SystemExit("error: none of the images could be read")
    with torch.no_grad():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            x = torch.stack([movq_input(img, resolution) for _, img in chunk]).to(dev, next(movq.parameters()).dtype)
            latents.append(movq.encode(x).latents.float().cpu())
            clip_px = processor(images=[img for _, img in chunk], return_tensors="pt").pixel_values
            enc_p = next(encoder.parameters())
            embeds.append(encoder(clip_px.to(enc_p.device, enc_p.dtype)).image_embeds.float().cpu())
            names += [n for n, _ in chunk]
    return torch.cat(latents), torch.cat(embeds), names


# ---------------------------------------------------------------------------------------------------------------
# The student: config and initialisation from the teacher


def _per_block(v, n: int) -> list[int]:
    return [int(v)] * n if isinstance(v, int) else [int(x) for x in v]


def parse_int_list(s: str) -> int | list[int]:
    vals = [int(x) for x in s.replace(" ", "").split(",") if x]
    return vals[0] if len(vals) == 1 else vals


def student_config(teacher_cfg: dict, layers_per_block=None, block_out_channels=None, no_mid_block=False,
                   overrides: dict | None = None) -> dict:
    """The teacher's config with the student's sizes. Same block types (so the same number of resolutions)."""
    cfg = {k: v for k, v in teacher_cfg.items() if not k.startswith("_")}
    if layers_per_block is not None:
        cfg["layers_per_block"] = layers_per_block
    if block_out_channels is not None:
        cfg["block_out_channels"] = [block_out_channels] if isinstance(block_out_channels, int) else block_out_channels
    if no_mid_block:
        cfg["mid_block_type"] = None
    cfg.update(overrides or {})
    n = len(cfg["down_block_types"])
    if list(cfg["down_block_types"]) != list(teacher_cfg["down_block_types"]) or \
            list(cfg["up_block_types"]) != list(teacher_cfg["up_block_types"]):
        raise SystemExit("error: the student must keep the teacher's block types (same resolutions)")
    lpb = _per_block(cfg["layers_per_block"], n)
    boc = list(cfg["block_out_channels"])
    if len(lpb) != n or len(boc) != n:
        raise SystemExit(f"error: layers_per_block and block_out_channels need {n} values (one per resolution)")
    if min(lpb) < 1:
        raise SystemExit("error: layers_per_block must be ≥ 1 (a block without resnets cannot change channels)")
    t_lpb = _per_block(teacher_cfg["layers_per_block"], n)
    if any(s > t for s, t in zip(lpb, t_lpb)):
        raise SystemExit(f"error: the student has more layers per block ({lpb}) than the teacher ({t_lpb})")
    groups, head = cfg["norm_num_groups"], cfg["attention_head_dim"]
    for c in boc:
        if c % groups or (isinstance(head, int) and c % head):
            raise SystemExit(f"error: block_out_channels {c} must be a multiple of norm_num_groups ({groups}) "
                             f"and attention_head_dim ({head})")
    return cfg


def layer_keep_maps(t_cfg: dict, s_cfg: dict) -> tuple[list[list[int]], list[list[int]]]:
    """Which teacher resnet/attention index each student layer is copied from, per down block and per up block.

    Down block with L_T → L_S layers: keep the first L_S (the first changes the channel count; BK-SDM keeps the
    first pair too). Up block with L_T+1 → L_S+1 resnets (each eats one skip connection, last one first): keep the
    first (its input is the block below, of another width), the last (its skip comes from the previous resolution's
    downsampler, of another width), and in between the ones whose skip comes from the same down layer as in the
    teacher: student layer k ← teacher layer L_T − L_S + k. E.g. 3 → 2 (Kandinsky): down keeps [0, 1], up keeps
    [0, 2, 3] (drops the middle one, whose skip came from the removed down layer)."""
    n = len(t_cfg["down_block_types"])
    t_lpb, s_lpb = _per_block(t_cfg["layers_per_block"], n), _per_block(s_cfg["layers_per_block"], n)
    down = [list(range(s)) for s in s_lpb]
    up = []
    for lt, ls in zip(reversed(t_lpb), reversed(s_lpb)):
        up.append([0] + [lt - ls + k for k in range(1, ls)] + [lt])
    return down, up


_LAYER_RE = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$")


def teacher_name(student_name: str, keep_down, keep_up) -> str:
    m = _LAYER_RE.match(student_name)
    if not m:
        return student_name
    kind, b, sub, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    keep = keep_down if kind == "down_blocks" else keep_up
    return f"{kind}.{b}.{sub}.{keep[b][j]}.{rest}"


def _up_resnet_inputs(cfg: dict) -> dict[tuple[int, int], tuple[int, int]]:
    """(up block, resnet) → (channels from the block below, channels of the skip), as diffusers builds them."""
    n = len(cfg["down_block_types"])
    rev_boc = list(reversed(cfg["block_out_channels"]))
    rev_lpb = list(reversed(_per_block(cfg["layers_per_block"], n)))
    out, output_channel = {}, rev_boc[0]
    for u in range(n):
        prev_output_channel, output_channel = output_channel, rev_boc[u]
        input_channel = rev_boc[min(u + 1, n - 1)]
        layers = rev_lpb[u] + 1
        for k in range(layers):
            out[(u, k)] = (prev_output_channel if k == 0 else output_channel,
                           input_channel if k == layers - 1 else output_channel)
    return out


def _parts_index(t_parts: list[int], s_parts: list[int]):
    """Indices into a teacher dimension made of concatenated parts, taking the leading channels of each part."""
    import torch

    if len(t_parts) != len(s_parts) or any(s > t for s, t in zip(s_parts, t_parts)):
        return None
    idx, off = [], 0
    for t, s in zip(t_parts, s_parts):
        idx += range(off, off + s)
        off += t
    return torch.tensor(idx, dtype=torch.long)


def _slice_index(name: str, dim: int, t_size: int, s_size: int, t_cfg: dict, s_cfg: dict):
    """The teacher indices the student's `dim` of parameter `name` takes (None: incompatible)."""
    import torch

    if s_size == t_size:
        return torch.arange(t_size)
    m = _LAYER_RE.match(name)
    # Up-block resnets read cat([from below, skip]) along their input channels.
    if m and m.group(1) == "up_blocks" and m.group(3) == "resnets":
        rest = m.group(5)
        if (dim == 1 and rest in ("conv1.weight", "conv_shortcut.weight")) or (dim == 0 and rest.startswith("norm1.")):
            u, k = int(m.group(2)), int(m.group(4))
            return ("up", u, k)  # resolved by the caller (needs the teacher's layer index)
    # Scale-shift resnets: time_emb_proj outputs cat([scale, shift]).
    if name.endswith(("time_emb_proj.weight", "time_emb_proj.bias")) and dim == 0 and \
            s_cfg.get("resnet_time_scale_shift") == "scale_shift":
        if t_size % 2 or s_size % 2:
            return None
        return _parts_index([t_size // 2] * 2, [s_size // 2] * 2)
    # The sinusoidal time features: [cos(f_i t), sin(f_i t)] with f_i = 10000^(-i/half): pick the same frequencies.
    if name == "time_embedding.linear_1.weight" and dim == 1 and s_cfg.get("time_embedding_type") == "positional" \
            and not s_cfg.get("freq_shift") and not t_cfg.get("freq_shift"):
        ht, hs = t_size // 2, s_size // 2
        if ht % hs == 0:
            r = ht // hs
            return torch.tensor([i * r for i in range(hs)] + [ht + i * r for i in range(hs)], dtype=torch.long)
    # The 32 image tokens: Linear(D → 32·cross_attention_dim) reshaped [32, cross].
    if name.startswith("encoder_hid_proj.image_embeds.") and dim == 0 and t_size % 32 == 0 and s_size % 32 == 0:
        return _parts_index([t_size // 32] * 32, [s_size // 32] * 32)
    if s_size > t_size:
        return None
    return torch.arange(s_size)  # the leading channels (whole heads: widths are multiples of attention_head_dim)


def init_student_from_teacher(student, teacher, s_cfg: dict, t_cfg: dict, width_init: str = "slice") -> dict:
    """Copies the teacher's tensors into the student. Per student tensor: `copied` (same name after the layer maps
    of `layer_keep_maps`, same shape: everything when only layers are removed), `sliced` (narrower student, with
    width_init "slice": the teacher's leading channels of each concatenated part, the matching time frequencies),
    or `random` (diffusers' initialisation: nothing to take it from). Returns a report."""
    import torch

    keep_down, keep_up = layer_keep_maps(t_cfg, s_cfg)
    t_params = dict(teacher.state_dict())
    up_t, up_s = _up_resnet_inputs(t_cfg), _up_resnet_inputs(s_cfg)
    report = {"copied": [], "sliced": [], "random": [], "keep_down": keep_down, "keep_up": keep_up}
    used = set()
    new_state = {}
    for name, s_param in student.state_dict().items():
        tname = teacher_name(name, keep_down, keep_up)
        t_param = t_params.get(tname)
        if t_param is None:
            report["random"].append(name)
            continue
        used.add(tname)
        if t_param.shape == s_param.shape:
            new_state[name] = t_param.detach().clone().to(s_param.dtype)
            report["copied"].append(name)
            continue
        if width_init != "slice" or t_param.dim() != s_param.dim():
            report["random"].append(name)
            continue
        out = t_param.detach()
        for d in range(s_param.dim()):
            idx = _slice_index(name, d, out.shape[d], s_param.shape[d], t_cfg, s_cfg)
            if isinstance(idx, tuple):  # an up-block resnet's concatenated input
                _, u, k = idx
                tk = keep_up[u][k]
                idx = _parts_index(list(up_t[(u, tk)]), list(up_s[(u, k)]))
            if idx is None:
                out = None
                break
            out = out.index_select(d, idx.to(out.device))
        if out is None or tuple(out.shape) != tuple(s_param.shape):
            report["random"].append(name)
            continue
        new_state[name] = out.clone().to(s_param.dtype)
        report["sliced"].append(name)
    student.load_state_dict(new_state, strict=False)
    report["teacher_unused"] = sorted(set(t_params) - used)
    return report


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Feature distillation


class FeatureTap:
    """Forward hooks on every down block, the mid block and every up block; `feats` holds their outputs."""

    def __init__(self, unet):
        self.feats: dict = {}
        self.handles = []
        blocks = [(f"down.{i}", b) for i, b in enumerate(unet.down_blocks)]
        if unet.mid_block is not None:
            blocks.append(("mid", unet.mid_block))
        blocks += [(f"up.{i}", b) for i, b in enumerate(unet.up_blocks)]
        self.channels = {}
        for name, block in blocks:
            self.handles.append(block.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(_module, _inputs, output):
            self.feats[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def clear(self):
        self.feats = {}

    def remove(self):
        for h in self.handles:
            h.remove()


def block_channels(cfg: dict) -> dict[str, int]:
    boc = cfg["block_out_channels"]
    ch = {f"down.{i}": c for i, c in enumerate(boc)}
    if cfg.get("mid_block_type") is not None:
        ch["mid"] = boc[-1]
    ch.update({f"up.{i}": c for i, c in enumerate(reversed(boc))})
    return ch


def make_adapters(s_cfg: dict, t_cfg: dict):
    """1×1 convolutions student width → teacher width where they differ (trained, then discarded)."""
    import torch.nn as nn

    s_ch, t_ch = block_channels(s_cfg), block_channels(t_cfg)
    mods = {}
    for name in s_ch:
        if name in t_ch:
            key = name.replace(".", "_")
            mods[key] = nn.Identity() if s_ch[name] == t_ch[name] else nn.Conv2d(s_ch[name], t_ch[name], 1)
    return nn.ModuleDict(mods)


# ---------------------------------------------------------------------------------------------------------------
# Output


def write_model_index(out: Path, scheduler_class: str = "DDPMScheduler"):
    import diffusers

    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "KandinskyV22Pipeline", "_diffusers_version": diffusers.__version__,
        "movq": ["diffusers", "VQModel"], "scheduler": ["diffusers", scheduler_class],
        "unet": ["diffusers", "UNet2DConditionModel"],
    }, indent=2) + "\n")


def save_student(student, out: Path, dtype):
    import torch

    unet_dir = out / "unet"
    if unet_dir.exists():
        shutil.rmtree(unet_dir)
    if dtype != torch.float32:
        import copy

        student = copy.deepcopy(student).to(dtype)
    student.save_pretrained(unet_dir, safe_serialization=True)


def copy_teacher_parts(tdir: Path, out: Path):
    for sub in ("movq", "scheduler"):
        dst = out / sub
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for src in sorted((tdir / sub).iterdir()):
            # The weights and config only (no fp16 variants, no .bin), without the source's permissions (the
            # shared goldens are read-only).
            if src.is_file() and not src.name.startswith(".") and ".fp16." not in src.name and src.suffix != ".bin":
                shutil.copyfile(src, dst / src.name)


# ---------------------------------------------------------------------------------------------------------------
# Training


def _step_generator(seed: int, step: int):
    import torch

    # One CPU generator per step: the same batches, noise and timesteps on every device and after a resume.
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def _draw(g, n_items: int, batch: int, latent_shape, n_timesteps: int, cond_drop: float):
    import torch

    if n_items >= batch:
        idx = torch.randperm(n_items, generator=g)[:batch]
    else:
        idx = torch.randint(0, n_items, (batch,), generator=g)
    noise = torch.randn((batch, *latent_shape), generator=g)
    t = torch.randint(0, n_timesteps, (batch,), generator=g)
    drop = torch.rand(batch, generator=g) < cond_drop
    return idx, noise, t, drop


def _checkpoints(out: Path) -> list[Path]:
    cps = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(cps, key=lambda p: int(p.name.split("-")[-1]))


# --- Progressive distillation (Salimans & Ho, 2022) on diffusers' DDIM grid ------------------------------------


def pd_grid(teacher_steps: int, num_train_timesteps: int = 1000) -> tuple[int, int]:
    """(student ratio, teacher ratio) in timesteps per step. DDIM with "leading" spacing runs timesteps
    i·r + steps_offset, r = num_train // steps, and steps from t to t − r: the student's grid is the teacher's every
    other point only when r_student = 2·r_teacher (e.g. 40 → 20 → 10 → 5, 8 → 4 → 2 → 1, 50 → 25, 100 → 50)."""
    if teacher_steps < 2 or teacher_steps % 2:
        raise SystemExit(f"error: --pd-teacher-steps must be even and ≥ 2, got {teacher_steps}")
    r_t, r_s = num_train_timesteps // teacher_steps, num_train_timesteps // (teacher_steps // 2)
    if r_s != 2 * r_t:
        ok = [n for n in range(2, 201, 2) if num_train_timesteps // (n // 2) == 2 * (num_train_timesteps // n)]
        raise SystemExit(f"error: DDIM's {teacher_steps}-step grid does not contain the {teacher_steps // 2}-step one "
                         f"({num_train_timesteps} // {teacher_steps} = {r_t}, // {teacher_steps // 2} = {r_s}); "
                         f"teacher step counts that work: {ok}")
    return r_s, r_t


def _abar(alphas_cumprod, final, t):
    import torch

    return torch.where(t >= 0, alphas_cumprod[t.clamp(min=0)], final).view(-1, 1, 1, 1)


def ddim_step(x, eps, a_t, a_prev):
    """Deterministic DDIM (η = 0, no clipping): x_prev = √ā_prev·x̂₀ + √(1−ā_prev)·ε, x̂₀ = (x − √(1−ā_t)·ε)/√ā_t."""
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def pd_target(x_t, x_next, a_t, a_next):
    """The ε for which one DDIM step x_t → x_next is exact (what the student must predict to land where the
    teacher's two steps landed): x_next = √(ā_n/ā_t)·x_t + (√(1−ā_n) − √(ā_n/ā_t)·√(1−ā_t))·ε."""
    k = (a_next / a_t).sqrt()
    return (x_next - k * x_t) / ((1 - a_next).sqrt() - k * (1 - a_t).sqrt())


# --- The run --------------------------------------------------------------------------------------------------


def distill(args) -> dict:
    """Runs one distillation (args.mode); writes the output folder; returns the record also saved as distill.json."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, VQModel
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    t_start = time.monotonic()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    progressive = args.mode == "progressive"

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    mp = args.mixed_precision
    if mp == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "no"
    if mp != "no" and device.type != "cuda":
        raise SystemExit("error: --mixed-precision fp16/bf16 needs CUDA (use no on the CPU)")
    amp_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mp]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    tdir = teacher_dir(args.teacher)
    t_cfg = json.loads((tdir / "unet/config.json").read_text())
    if progressive:
        if args.layers_per_block or args.block_out_channels or args.no_mid_block or args.student_config:
            raise SystemExit("error: --mode progressive keeps the teacher's architecture (run block-removal first, "
                             "then progressive on its output)")
        if not args.pd_teacher_steps:
            raise SystemExit("error: --mode progressive needs --pd-teacher-steps N (the student samples in N/2)")
        s_cfg = {k: v for k, v in t_cfg.items() if not k.startswith("_")}
    else:
        overrides = None
        if args.student_config:
            src = Path(args.student_config)
            overrides = json.loads(src.read_text() if src.is_file() else args.student_config)
        s_cfg = student_config(
            t_cfg,
            layers_per_block=parse_int_list(args.layers_per_block) if args.layers_per_block else None,
            block_out_channels=parse_int_list(args.block_out_channels) if args.block_out_channels else None,
            no_mid_block=args.no_mid_block, overrides=overrides)

    # --- data: latents from the teacher's MoVQ, conditions from the CLIP image tower (both once, f32).
    movq = VQModel.from_pretrained(tdir / "movq", low_cpu_mem_usage=False).to(device).eval()
    n_levels = len(t_cfg["block_out_channels"])
    f = 2 ** (len(movq.config.block_out_channels) - 1)
    mult = max(f * f, f * 2 ** (n_levels - 1))
    if args.resolution % mult:
        raise SystemExit(f"error: --resolution must be a multiple of {mult} for this teacher, got {args.resolution}")
    encoder, processor = load_image_encoder(args.image_encoder, args.image_processor, device, torch.float32)
    paths = list_images(args.images, args.max_images)
    t0 = time.monotonic()
    latents, embeds, names = encode_images(paths, movq, encoder, processor, args.resolution, args.flip)
    uncond = zero_image_embed(encoder)
    if embeds.shape[1] != t_cfg["encoder_hid_dim"]:
        raise SystemExit(f"error: the image encoder gives {embeds.shape[1]}-d embeddings; the teacher UNet takes "
                         f"encoder_hid_dim {t_cfg['encoder_hid_dim']} (use the matching CLIP tower)")
    print(f"data: {len(names)} image(s) from {args.images} → latents {tuple(latents.shape[1:])}, "
          f"embeds {embeds.shape[1]}-d ({time.monotonic() - t0:.1f} s)", flush=True)
    if args.write_embeds:
        from safetensors.torch import save_file

        save_file({"image_embeds": embeds[:1].contiguous(), "negative_image_embeds": uncond.contiguous()},
                  str(out / "embeds.safetensors"))
    del movq, encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    latents, embeds, uncond = latents.to(device), embeds.to(device), uncond.to(device)

    # --- models
    noise_sched = DDPMScheduler.from_pretrained(tdir / "scheduler")
    teacher = UNet2DConditionModel.from_pretrained(tdir / "unet", low_cpu_mem_usage=False)
    teacher = teacher.to(device, amp_dtype).eval().requires_grad_(False)
    with torch.device(device):  # initialised where it trains (a 1 B-parameter init is slow on a CPU)
        student = UNet2DConditionModel.from_config(s_cfg)
    if args.student_init == "teacher":
        report = init_student_from_teacher(student, teacher, s_cfg, t_cfg, args.width_init)
    else:
        report = {"copied": [], "sliced": [], "random": [n for n in student.state_dict()], "teacher_unused": []}
    student = student.to(device).train()
    if args.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    n_t, n_s = count_params(teacher), count_params(student)
    print(f"teacher UNet {n_t / 1e6:.2f} M params; student {n_s / 1e6:.2f} M ({100 * n_s / n_t:.1f} %): "
          f"layers_per_block {s_cfg['layers_per_block']}, block_out_channels {s_cfg['block_out_channels']}, "
          f"mid block {s_cfg.get('mid_block_type')}", flush=True)
    print(f"init: {len(report['copied'])} tensors copied, {len(report['sliced'])} sliced, "
          f"{len(report['random'])} random; {len(report['teacher_unused'])} teacher tensors unused"
          + (f"; layers kept: down {report['keep_down']}, up {report['keep_up']}"
             if "keep_down" in report and not progressive else ""), flush=True)

    adapters = make_adapters(s_cfg, t_cfg).to(device)
    tap_s, tap_t = (None, None) if progressive else (FeatureTap(student), FeatureTap(teacher))
    params = list(student.parameters()) + list(adapters.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, args.lr_warmup_steps)))
    scaler = torch.amp.GradScaler("cuda", enabled=(mp == "fp16"))

    history: list[dict] = []
    start_step = 0
    if args.resume:
        cp = _checkpoints(out)[-1] if args.resume == "latest" and _checkpoints(out) else Path(args.resume)
        if args.resume == "latest" and not _checkpoints(out):
            print("resume: no checkpoint in the output folder, starting from step 0", flush=True)
        else:
            student.load_state_dict(UNet2DConditionModel.from_pretrained(cp / "unet").state_dict())
            state = torch.load(cp / "train_state.pt", map_location=device, weights_only=False)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["lr_scheduler"])
            adapters.load_state_dict(state["adapters"])
            scaler.load_state_dict(state["scaler"])
            start_step, history = state["step"], state["history"]
            print(f"resume: {cp} (step {start_step})", flush=True)

    latent_shape = tuple(latents.shape[1:])
    n_train_t = noise_sched.config.num_train_timesteps
    alphas = noise_sched.alphas_cumprod.to(device)
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=(mp != "no"))

    def unet_eps(model, x, t, cond):
        return model(x, t, None, added_cond_kwargs={"image_embeds": cond}).sample.float()

    def block_removal_loss(x0, noise, t, cond):
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise  # DDPMScheduler.add_noise
        with torch.no_grad(), autocast:
            tap_t.clear()
            eps_t = unet_eps(teacher, noisy.to(amp_dtype), t, cond.to(amp_dtype))
            feats_t = {k: v.float() for k, v in tap_t.feats.items()}
        with autocast:
            tap_s.clear()
            eps_s = unet_eps(student, noisy, t, cond)
            task = F.mse_loss(eps_s[:, :4], noise)
            out_kd = F.mse_loss(eps_s, eps_t)
            feat_kd = eps_s.new_zeros(())
            for name, fs in tap_s.feats.items():
                if name in feats_t:
                    feat_kd = feat_kd + F.mse_loss(adapters[name.replace(".", "_")](fs).float(), feats_t[name])
            loss = args.w_task * task + args.w_out * out_kd + args.w_feat * feat_kd
        return loss, {"task": task, "out_kd": out_kd, "feat_kd": feat_kd}

    if progressive:
        ddim = DDIMScheduler.from_config(noise_sched.config)
        if ddim.config.timestep_spacing != "leading":
            raise SystemExit("error: --mode progressive expects the teacher's scheduler to use leading spacing")
        r_s, r_t = pd_grid(args.pd_teacher_steps, n_train_t)
        offset = ddim.config.steps_offset
        final = ddim.final_alpha_cumprod.to(device)
        student_steps = args.pd_teacher_steps // 2
        print(f"progressive: teacher DDIM {args.pd_teacher_steps} steps → student {student_steps} "
              f"(timesteps {offset} + {r_s}·i), teacher guidance {args.pd_guidance:g}", flush=True)

    def teacher_eps_guided(x, t, cond):
        if args.pd_guidance <= 1:
            return unet_eps(teacher, x.to(amp_dtype), t, cond.to(amp_dtype))
        both = unet_eps(teacher, torch.cat([x, x]).to(amp_dtype), torch.cat([t, t]),
                        torch.cat([uncond.expand(len(x), -1), cond]).to(amp_dtype))
        e_u, e_c = both[:, :4].chunk(2)
        return torch.cat([e_u + args.pd_guidance * (e_c - e_u), both[len(x):, 4:]], dim=1)

    def progressive_loss(x0, noise, i, cond):
        t = i * r_s + offset
        a_t = _abar(alphas, final, t)
        x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise
        t_mid, t_next = t - r_t, t - r_s
        a_mid, a_next = _abar(alphas, final, t_mid), _abar(alphas, final, t_next)
        with torch.no_grad(), autocast:
            x_mid = ddim_step(x_t, teacher_eps_guided(x_t, t, cond)[:, :4], a_t, a_mid)
            two = (t_mid >= 0).view(-1, 1, 1, 1)  # the last student step (t = offset) is one teacher step
            x_next = torch.where(two, ddim_step(x_mid, teacher_eps_guided(x_mid, t_mid.clamp(min=0), cond)[:, :4],
                                                a_mid, a_next), x_mid)
            target = pd_target(x_t, x_next, a_t, a_next)
        with autocast:
            eps_s = unet_eps(student, x_t, t, cond)
            loss = F.mse_loss(eps_s[:, :4], target)
        return loss, {}

    loss_fn = progressive_loss if progressive else block_removal_loss
    n_draw_t = args.pd_teacher_steps // 2 if progressive else n_train_t
    fixed = _draw(_step_generator(args.seed, 0), len(latents), args.batch_size, latent_shape, n_draw_t,
                  args.cond_drop) if args.fixed_batch else None
    parts_names = [] if progressive else ["task", "out_kd", "feat_kd"]

    t_train = time.monotonic()
    for step in range(start_step, args.steps):
        ts = time.monotonic()
        loss_acc = {k: 0.0 for k in ["loss", *parts_names]}
        for micro in range(args.grad_accum):
            draw = fixed if fixed else _draw(_step_generator(args.seed, step * args.grad_accum + micro),
                                             len(latents), args.batch_size, latent_shape, n_draw_t, args.cond_drop)
            idx, noise, t, drop = (x.to(device) for x in draw)
            cond = torch.where(drop[:, None], uncond.expand(len(idx), -1), embeds[idx])
            loss, parts = loss_fn(latents[idx], noise, t, cond)
            scaler.scale(loss / args.grad_accum).backward()
            for k, v in (("loss", loss), *parts.items()):
                loss_acc[k] += float(v.detach()) / args.grad_accum
        if not all(math.isfinite(v) for v in loss_acc.values()):
            raise SystemExit(f"error: non-finite loss at step {step + 1}: {loss_acc} (lower --lr, or use bf16)")
        scaler.unscale_(opt)
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        rec = {"step": step + 1, **{k: round(v, 6) for k, v in loss_acc.items()}, "lr": sched.get_last_lr()[0],
               "s": round(time.monotonic() - ts, 3)}
        history.append(rec)
        if args.log_every and ((step + 1) % args.log_every == 0 or step + 1 == args.steps):
            detail = "" if progressive else \
                f" (task {rec['task']:.5f}, out {rec['out_kd']:.5f}, feat {rec['feat_kd']:.5f})"
            print(f"step {step + 1}/{args.steps} loss {rec['loss']:.5f}{detail} lr {rec['lr']:.2e} "
                  f"{rec['s']:.2f} s/step", flush=True)
        if args.checkpoint_every and (step + 1) % args.checkpoint_every == 0 and step + 1 < args.steps:
            cp = out / f"checkpoint-{step + 1}"
            save_student(student, cp, torch.float32)
            torch.save({"optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                        "adapters": adapters.state_dict(), "scaler": scaler.state_dict(), "step": step + 1,
                        "history": history}, cp / "train_state.pt")
            for old in _checkpoints(out)[:-args.checkpoints_limit] if args.checkpoints_limit else []:
                shutil.rmtree(old)
            print(f"checkpoint: {cp}", flush=True)
    train_s = time.monotonic() - t_train
    for tap in (tap_s, tap_t):
        if tap:
            tap.remove()

    # --- output
    save_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.save_dtype]
    save_student(student.eval(), out, save_dtype)
    copy_teacher_parts(tdir, out)
    scheduler_class = "DDPMScheduler"
    inference = {"scheduler": "as the teacher's"}
    if progressive:
        # The student is only right on its DDIM grid: ship a DDIM scheduler (same betas, spacing and offset).
        shutil.rmtree(out / "scheduler")
        ddim.save_pretrained(out / "scheduler")
        scheduler_class = "DDIMScheduler"
        inference = {"scheduler": "DDIMScheduler", "num_inference_steps": student_steps,
                     "guidance_scale": (f"≤ 1 (guidance {args.pd_guidance:g} is distilled in)"
                                        if args.pd_guidance > 1 else "as for the teacher")}
    write_model_index(out, scheduler_class)
    record = {
        "mode": args.mode, "teacher": args.teacher, "images": args.images, "n_images": len(names),
        "resolution": args.resolution, "device": str(device), "mixed_precision": mp,
        "teacher_params": n_t, "student_params": n_s, "inference": inference,
        "student_config": {k: s_cfg[k] for k in ("layers_per_block", "block_out_channels", "mid_block_type")},
        "init": {k: (len(v) if k in ("copied", "sliced", "random", "teacher_unused") else v)
                 for k, v in report.items()},
        "init_random": report["random"], "args": vars(args), "history": history,
        "train_seconds": round(train_s, 2), "total_seconds": round(time.monotonic() - t_start, 2),
    }
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
        record["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    (out / "distill.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({n_s / 1e6:.2f} M-param UNet; {train_s:.1f} s training, "
          f"{record['total_seconds']:.1f} s total)", flush=True)
    return record


# ---------------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m distill",
        description="Distil a smaller Kandinsky 2.2 decoder UNet from a teacher on a folder of images "
                    "(block removal + output and feature distillation, BK-SDM style). See server/distill/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="the CI preset: tiny teacher and CLIP from $LAMBDA_SHARED (../shared), 4 photos, 64 px, "
                        "student block_out_channels 16,32, 20 steps on one fixed batch, CPU; writes embeds.safetensors."
                        " Any other option given overrides the preset")
    p.add_argument("--mode", choices=["block-removal", "progressive"], default="block-removal",
                   help="block-removal: a smaller UNet (output + feature distillation); progressive: the same UNet "
                        "sampling in half the DDIM steps of the teacher (run it again on its output to halve again)")
    g = p.add_argument_group("models and data")
    g.add_argument("--teacher", default=DEFAULT_TEACHER,
                   help="teacher decoder: Hub id or folder with unet/ movq/ scheduler/")
    g.add_argument("--image-encoder", default=DEFAULT_IMAGE_ENCODER,
                   help="CLIPVisionModelWithProjection: its folder, or a Hub id / folder with image_encoder/ and "
                        "image_processor/ (the Kandinsky 2.2 prior's: ViT-bigG, 1280-d)")
    g.add_argument("--image-processor", default=None,
                   help="CLIP image processor folder (default: image_processor/ next to the image encoder)")
    g.add_argument("--images", help="folder of training images (searched recursively; jpg/png/webp/bmp)")
    g.add_argument("--max-images", type=int, default=None, help="use only the first N images (sorted by path)")
    g.add_argument("--resolution", type=int, default=512, help="training size in pixels (square centre crop)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                   help="also train on each image mirrored (doubles the data)")
    g.add_argument("--output", "-o", required=True, help="output folder (unet/ movq/ scheduler/ model_index.json)")
    g = p.add_argument_group("student")
    g.add_argument("--layers-per-block", help="e.g. 2 (the teacher has 3), or one value per resolution: 2,2,2,3")
    g.add_argument("--block-out-channels", help="narrower widths, e.g. 320,640,960,1280 (teacher 384,768,1152,1536)")
    g.add_argument("--no-mid-block", action="store_true", help="drop the mid block (BK-SDM-Small style)")
    g.add_argument("--student-config", help="JSON object (or a file with one) of further UNet config overrides")
    g.add_argument("--student-init", choices=["teacher", "random"], default="teacher",
                   help="start from the teacher's weights (see init_student_from_teacher) or from scratch")
    g.add_argument("--width-init", choices=["slice", "random"], default="slice",
                   help="narrower tensors: the teacher's leading channels, or random")
    g = p.add_argument_group("progressive (--mode progressive)")
    g.add_argument("--pd-teacher-steps", type=int, default=None,
                   help="DDIM steps of the teacher; the student learns to do two of them in one. Needs diffusers' "
                        "grids to nest (1000 // (N/2) == 2 · (1000 // N)): e.g. 100, 50, 40, 20, 10, 8, 4, 2")
    g.add_argument("--pd-guidance", type=float, default=1.0,
                   help="> 1: the teacher's targets use classifier-free guidance at this scale (against the zero-image "
                        "embedding), so the student is sampled WITHOUT guidance (one UNet pass per step)")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=10000, help="optimisation steps")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimisation step")
    g.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (BK-SDM: 5e-5)")
    g.add_argument("--lr-warmup-steps", type=int, default=500)
    g.add_argument("--weight-decay", type=float, default=1e-2)
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    g.add_argument("--w-task", type=float, default=1.0, help="weight of ‖ε_S − ε‖² (ground-truth noise)")
    g.add_argument("--w-out", type=float, default=1.0, help="weight of ‖ε_S − ε_T‖² (output distillation)")
    g.add_argument("--w-feat", type=float, default=1.0, help="weight of Σ‖f_S − f_T‖² (feature distillation)")
    g.add_argument("--cond-drop", type=float, default=0.1,
                   help="probability of replacing an image's embedding by the zero-image embedding (the "
                        "decoder's negative), so the student keeps classifier-free guidance")
    g.add_argument("--fixed-batch", action=argparse.BooleanOptionalAction, default=False,
                   help="reuse the first batch (images, noise, timesteps) every step: an overfitting check")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("hardware and output")
    g.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    g.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="CUDA autocast (auto: bf16 where supported, else fp16; the CPU runs f32)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="less memory, ~30 %% slower")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--log-every", type=int, default=50, help="print the losses every N steps (0: never)")
    g.add_argument("--checkpoint-every", type=int, default=0, help="save OUT/checkpoint-STEP every N steps (0: never)")
    g.add_argument("--checkpoints-limit", type=int, default=2, help="keep the last N checkpoints (0: all)")
    g.add_argument("--resume", help="continue from a checkpoint folder, or `latest` in --output")
    g.add_argument("--save-dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="dtype of unet/ weights")
    g.add_argument("--write-embeds", action=argparse.BooleanOptionalAction, default=False,
                   help="write OUT/embeds.safetensors: image_embeds [1, D] (the first image's) and "
                        "negative_image_embeds [1, D] (the zero-image embedding), f32, "
                        "for `lambda-eclipse decode-local`")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--smoke" in argv:
        mode = parser.parse_known_args(argv)[0].mode
        parser.set_defaults(**smoke_defaults(mode))
    args = parser.parse_args(argv)
    if not args.images:
        parser.error("--images is required (or --smoke)")
    for name in ("steps", "batch_size", "grad_accum", "resolution"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if not 0 <= args.cond_drop <= 1:
        parser.error("--cond-drop must be in [0, 1]")
    return args


def main(argv=None) -> dict:
    return distill(parse_args(argv))


if __name__ == "__main__":
    main()
