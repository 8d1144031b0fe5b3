#!/usr/bin/env python3
"""Our GPU bench and PyTorch on the same shapes and model parts, in one run, printed side by side with the ratio.

PyTorch times (CUDA, or `--device cpu` for a smoke run anywhere):
- the bigG GEMMs of `lambda-eclipse bench --only matmul` (x [m, k] · wᵀ, w [n, k]) in f32 with TF32 off, and f16;
- the attention shapes of `--only attention` (scaled_dot_product_attention, f32 with TF32 off, and f16);
- the real-size model parts with random weights from src/bench/real_configs/: the bigG text tower (77 tokens),
  vision tower (1 image), the λ prior (one forward, 81 tokens), one UNet step with guidance (2 forwards as a
  batch of 2, as diffusers runs it) and the MoVQ decode, at `--size` px, f32 (TF32 off) and f16.
Then it runs `lambda-eclipse bench --gpu-only --adapter-limits` for the same items (the binary given by --ours),
parses its table, and prints one table: item, ours, PyTorch f32, PyTorch f16, ours/f32, ours/f16 (> 1: ours
is faster), plus our "% peak" column and the FMA peak our bench measured.

    python3 tests/bench/torch_side_by_side.py --ours target/release/lambda-eclipse              # CUDA
    python3 tests/bench/torch_side_by_side.py --device cpu --only matmul --only attention --iters 2   # smoke

Timing: median of --iters after one warm-up, each with torch.cuda.synchronize (our bench includes its
read-back). Needs torch, diffusers and transformers (server/requirements.txt installs them).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
REAL = os.path.join(ROOT, "src", "bench", "real_configs")

# Kept equal to src/bench/mod.rs (BIGG_MATMULS + SKINNY_MATMULS, ATTENTION_SHAPES): the parser below matches rows by these.
MATMULS = [(77, 1280, 5120), (77, 5120, 1280), (257, 1664, 8192), (257, 8192, 1664), (1, 1280, 5120), (8, 1280, 5120)]
ATTENTION = [("bigG text", (77, 77, 20, 64)), ("bigG vision", (257, 257, 16, 104)),
             ("UNet 512 px", (1024, 1034, 12, 64)), ("UNet 768 px", (2304, 2314, 12, 64))]
ITEMS = ["matmul", "attention", "text", "vision", "prior", "unet", "movq"]


def config(name):
    with open(os.path.join(REAL, f"{name}.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def timed(fn, iters, device):
    """Median milliseconds of `fn()` over `iters` runs after one warm-up."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    with torch.inference_mode():
        fn()
        sync()
        times = []
        for _ in range(max(iters, 1)):
            t = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def gemm_rows(device, dtype, iters):
    rows = {}
    for m, k, n in MATMULS:
        x = torch.randn(m, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype)
        ms = timed(lambda: torch.nn.functional.linear(x, w), iters, device)
        rows[f"linear [{m}×{k}]·[{k}×{n}]"] = ("GF/s", 2 * m * k * n / (ms * 1e6))
    return rows


def attention_rows(device, dtype, iters):
    rows = {}
    for what, (t, s, h, d) in ATTENTION:
        q = torch.randn(1, h, t, d, device=device, dtype=dtype)
        k = torch.randn(1, h, s, d, device=device, dtype=dtype)
        v = torch.randn(1, h, s, d, device=device, dtype=dtype)
        ms = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), iters, device)
        rows[f"attention {what} {t}×{s}, {h}×{d}"] = ("GF/s", 4 * t * s * h * d / (ms * 1e6))
    return rows


def model_rows(items, device, dtype, iters, size):
    """Forward milliseconds of the real-size parts, random weights (values do not change speed)."""
    rows = {}
    if "text" in items:
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection
        m = CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder"))).to(device, dtype).eval()
        ids = torch.full((1, 77), 49407, device=device)
        ids[0, 0] = 49406
        rows["bigG text tower (77 tokens)"] = ("ms", timed(lambda: m(input_ids=ids), iters, device))
        del m
    if "vision" in items:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        m = CLIPVisionModelWithProjection(CLIPVisionConfig(**config("image_encoder"))).to(device, dtype).eval()
        px = torch.randn(1, 3, 224, 224, device=device, dtype=dtype)
        rows["bigG vision tower (1 image)"] = ("ms", timed(lambda: m(pixel_values=px), iters, device))
        del m
    if "prior" in items:
        from diffusers import PriorTransformer
        cfg = config("prior")
        m = PriorTransformer(**cfg).to(device, dtype).eval()
        d, n = cfg["embedding_dim"], cfg["num_embeddings"]
        args = dict(hidden_states=torch.randn(1, d, device=device, dtype=dtype), timestep=0,
                    proj_embedding=torch.randn(1, d, device=device, dtype=dtype),
                    encoder_hidden_states=torch.randn(1, n, d, device=device, dtype=dtype),
                    attention_mask=torch.ones(1, n, device=device, dtype=torch.bool))
        rows["λ prior (81 tokens)"] = ("ms", timed(lambda: m(**args), iters, device))
        del m
    latent = size // 8
    if "unet" in items:
        from diffusers import UNet2DConditionModel
        m = UNet2DConditionModel(**config("unet")).to(device, dtype).eval()
        x = torch.randn(2, m.config.in_channels, latent, latent, device=device, dtype=dtype)
        embeds = torch.randn(2, m.config.encoder_hid_dim, device=device, dtype=dtype)
        step = lambda: m(x, 500, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": embeds})
        rows[f"UNet step, 2 forwards ({size} px)"] = ("ms", timed(step, iters, device))
        del m
    if "movq" in items:
        from diffusers import VQModel
        m = VQModel(**config("movq")).to(device, dtype).eval()
        z = torch.randn(1, m.config.latent_channels, latent, latent, device=device, dtype=dtype)
        rows[f"MoVQ decode ({size} px)"] = ("ms", timed(lambda: m.decode(z, force_not_quantize=True), iters, device))
        del m
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def torch_rows(items, device, dtype, iters, size):
    rows = {}
    if "matmul" in items:
        rows.update(gemm_rows(device, dtype, iters))
    if "attention" in items:
        rows.update(attention_rows(device, dtype, iters))
    rows.update(model_rows(items, device, dtype, iters, size))
    return rows


ROW = re.compile(r"^(?P<label>\S.*?)\s{2,}(?P<cpu>—|[\d.]+ (?:GF/s|ms))\s+(?P<gpu>—|[\d.]+ (?:GF/s|ms))\s+"
                 r"(?P<ratio>\S+)\s*(?P<peak>[\d.]+ %|—)?\s*$")


def ours(binary, items, dtype, iters, size, extra):
    """Our bench's GPU column by row label, and its header lines."""
    cmd = [binary, "bench", "--gpu-only", "--adapter-limits", "--iters", str(iters), "--size", str(size),
           "--dtype", dtype, *extra]
    for item in items:
        cmd += ["--only", item]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"our bench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    rows, header = {}, [l for l in out.stdout.splitlines() if l.startswith(("cpu:", "gpu FMA"))]
    for line in out.stdout.splitlines():
        m = ROW.match(line)
        if m and m["gpu"] != "—":
            value, unit = m["gpu"].split()
            rows[m["label"].strip()] = (unit, float(value), (m["peak"] or "").strip())
    return rows, header


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", default=os.path.join(ROOT, "target", "release", "lambda-eclipse"))
    ap.add_argument("--only", action="append", choices=ITEMS, help="repeatable; default all")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--size", type=int, default=512, help="decoder items: image side in px")
    ap.add_argument("--ours-dtype", default="f16", choices=["f32", "f16", "int8", "q8_0", "q4_0"],
                    help="weights of our bench's model rows (f16 as the hub stores the vision tower and the UNet)")
    ap.add_argument("--skip-ours", action="store_true", help="PyTorch only (no GPU adapter for wgpu here)")
    ap.add_argument("ours_args", nargs="*", help="passed to our bench after --, e.g. -- --blocked-attention")
    a = ap.parse_args()
    items = a.only or ITEMS
    device = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)

    ref32 = torch_rows(items, device, torch.float32, a.iters, a.size)
    ref16 = torch_rows(items, device, torch.float16, a.iters, a.size) if device.type == "cuda" else {}
    mine, header = ({}, []) if a.skip_ours else ours(a.ours, items, a.ours_dtype, a.iters, a.size, a.ours_args)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"PyTorch {torch.__version__} on {name} (TF32 off) | ours: weights {a.ours_dtype}")
    for line in header:
        print("ours", line)
    print(f"{'benchmark':<42} {'ours':>12} {'% peak':>8} {'torch f32':>12} {'torch f16':>12} {'ours/f32':>9} {'ours/f16':>9}")
    for label, (unit, v32) in ref32.items():
        v16 = ref16.get(label, (unit, None))[1]
        o = mine.get(label)
        ov, peak = (o[1], o[2]) if o else (None, "")

        def ratio(ref):
            if ov is None or ref is None:
                return "—"
            return f"{(ov / ref) if unit == 'GF/s' else (ref / ov):.2f}×"
        cell = lambda v: "—" if v is None else f"{v:.1f} {unit}"
        print(f"{label:<42} {cell(ov):>12} {peak or '—':>8} {cell(v32):>12} {cell(v16):>12} {ratio(v32):>9} {ratio(v16):>9}")


if __name__ == "__main__":
    main()
