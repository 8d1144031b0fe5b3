"""Measure a distillation recipe's step time and GPU memory at Kandinsky 2.2's real size, offline, before
downloading anything: a random-weight teacher with the real decoder's configs (UNet 1.253 B, MoVQ 67.8 M), a
random 1280-d CLIP tower, random-noise images; then the real `distill` code path for a few steps.

    cd server && python3 -m distill.bench_real_size --work /tmp/kbench --steps 30 --batch-size 8 \
        -- --layers-per-block 2 --mixed-precision bf16
    # everything after `--` goes to `python3 -m distill` (student, precision, checkpointing ...)

Prints the median seconds per step (after the first 5), samples/s and the peak GPU memory. The weights are random,
so the losses mean nothing; the arithmetic and memory are the real ones (no sparsity is involved).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # python3 server/distill/bench_real_size.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill import distill as D  # noqa: E402

# kandinsky-community/kandinsky-2-2-decoder unet/config.json and movq/config.json (the fields that differ from
# diffusers' defaults; checked: 1,253,057,288 and 67,832,495 parameters).
REAL_UNET = {
    "act_fn": "silu", "addition_embed_type": "image", "addition_embed_type_num_heads": 64,
    "attention_head_dim": 64, "block_out_channels": [384, 768, 1152, 1536], "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                         "SimpleCrossAttnDownBlock2D"],
    "downsample_padding": 1, "encoder_hid_dim": 1280, "encoder_hid_dim_type": "image_proj", "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "layers_per_block": 3, "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 8,
    "resnet_time_scale_shift": "scale_shift", "sample_size": 64, "time_embedding_type": "positional",
    "up_block_types": ["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                       "ResnetUpsampleBlock2D"],
}
REAL_MOVQ = {
    "act_fn": "silu", "block_out_channels": [128, 256, 256, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "norm_type": "spatial",
    "num_vq_embeddings": 16384, "out_channels": 3, "sample_size": 256,
    "up_block_types": ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "vq_embed_dim": 4,
}
SCHEDULER = {
    "_class_name": "DDPMScheduler", "beta_end": 0.012, "beta_schedule": "linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "steps_offset": 1, "timestep_spacing": "leading", "variance_type": "fixed_small",
}
CLIP_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224},
}


def build(work: Path, n_images: int, resolution: int, device: str):
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel, VQModel
    from PIL import Image
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    teacher = work / "teacher"
    if not (teacher / "unet/diffusion_pytorch_model.safetensors").is_file():
        torch.manual_seed(0)
        with torch.device(device):
            unet = UNet2DConditionModel.from_config(REAL_UNET)
            movq = VQModel.from_config(REAL_MOVQ)
        print(f"random teacher: UNet {D.count_params(unet) / 1e9:.3f} B, MoVQ {D.count_params(movq) / 1e6:.1f} M",
              flush=True)
        unet.to(torch.float16).save_pretrained(teacher / "unet")  # fp16 on disk: half the bytes
        movq.save_pretrained(teacher / "movq")
        (teacher / "scheduler").mkdir(parents=True, exist_ok=True)
        (teacher / "scheduler/scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=1))
        del unet, movq
    clip = work / "clip"
    if not (clip / "image_encoder/config.json").is_file():
        cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               image_size=224, patch_size=14, projection_dim=1280)
        CLIPVisionModelWithProjection(cfg).save_pretrained(clip / "image_encoder")
        (clip / "image_processor").mkdir(parents=True, exist_ok=True)
        (clip / "image_processor/preprocessor_config.json").write_text(json.dumps(CLIP_PROCESSOR, indent=1))
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_images):
        p = images / f"noise{i:04d}.png"
        if not p.is_file():
            Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)).save(p)
    return teacher, clip, images


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="folder for the random teacher, CLIP, images and outputs")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--images", type=int, default=64, help="random images to make")
    p.add_argument("--device", default="cuda")
    a = p.parse_args(argv)
    work = Path(a.work)
    teacher, clip, images = build(work, a.images, a.resolution, a.device)
    rec = D.main(["--teacher", str(teacher), "--image-encoder", str(clip / "image_encoder"), "--images", str(images),
                  "--resolution", str(a.resolution), "--steps", str(a.steps), "--batch-size", str(a.batch_size),
                  "--device", a.device, "--lr-warmup-steps", "0", "--log-every", "10", "--output", str(work / "out"),
                  *extra])
    times = [h["s"] for h in rec["history"]][5:] or [h["s"] for h in rec["history"]]
    med = statistics.median(times)
    bs = a.batch_size * rec["args"]["grad_accum"]
    summary = {"student": rec["student_config"], "student_params": rec["student_params"],
               "teacher_params": rec["teacher_params"], "batch": bs, "resolution": a.resolution,
               "mixed_precision": rec["mixed_precision"],
               "gradient_checkpointing": rec["args"]["gradient_checkpointing"],
               "median_s_per_step": round(med, 4), "samples_per_s": round(bs / med, 2),
               "cuda_peak_gib": rec.get("cuda_peak_gib"), "device_name": rec.get("device_name")}
    print("bench: " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
