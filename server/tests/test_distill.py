"""server/distill: the smoke student (the CLI's --smoke preset, as CI and `make_smoke_student.sh` run it) and the
exactness of the student's initialisation from the teacher.

    cd server && python3 -m pytest -q tests/test_distill.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SERVER_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SERVER_DIR))

from distill import distill as D  # noqa: E402

SHARED = Path(os.environ.get("LAMBDA_SHARED") or (Path(__file__).parents[2] / "../shared")).resolve()
TEACHER = SHARED / "goldens/kandinsky-tiny/model"
CLIP = SHARED / "goldens/lambda-tiny/model/image_encoder"
IMAGES = SHARED / "assets/images"

needs_shared = pytest.mark.skipif(
    not (TEACHER / "unet/config.json").is_file() or not (CLIP / "config.json").is_file() or not IMAGES.is_dir(),
    reason=f"shared goldens/assets not found under {SHARED} (set LAMBDA_SHARED)")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`python3 -m distill --smoke --output OUT`: the student CI decodes with the Rust engine too."""
    out = tmp_path_factory.mktemp("distill") / "student"
    env = {**os.environ, "LAMBDA_SHARED": str(SHARED)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distill", "--smoke", "--output", str(out)], cwd=SERVER_DIR,
                          env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "distill.json").read_text())
    print(f"\nsmoke student: {seconds:.1f} s wall ({record['train_seconds']} s training); loss "
          f"{record['history'][0]['loss']:.4f} → {record['history'][-1]['loss']:.4f}")
    return out, record, proc.stdout


@needs_shared
def test_smoke_loss_goes_down(smoke):
    _, record, stdout = smoke
    losses = [h["loss"] for h in record["history"]]
    assert len(losses) == 20
    assert all(map(lambda v: v == v and abs(v) < 1e6, losses))
    # One fixed batch (same images, noise, timesteps every step): the decrease is the optimisation, not the draw.
    assert record["args"]["fixed_batch"] and record["args"]["seed"] == 0
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, losses
    assert "step 20/20 loss" in stdout  # --log-every 1 prints every step


@needs_shared
def test_smoke_output_layout_and_smaller_student(smoke):
    out, record, _ = smoke
    for f in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "movq/config.json",
              "movq/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json", "model_index.json",
              "embeds.safetensors", "distill.json"):
        assert (out / f).is_file(), f
    # movq/ and scheduler/ are the teacher's, byte for byte.
    for f in ("movq/diffusion_pytorch_model.safetensors", "movq/config.json", "scheduler/scheduler_config.json"):
        assert (out / f).read_bytes() == (TEACHER / f).read_bytes(), f
    s_cfg = json.loads((out / "unet/config.json").read_text())
    t_cfg = json.loads((TEACHER / "unet/config.json").read_text())
    assert s_cfg["_class_name"] == t_cfg["_class_name"] == "UNet2DConditionModel"
    assert s_cfg["block_out_channels"] == [16, 32] and t_cfg["block_out_channels"] == [32, 64]
    for k in ("down_block_types", "up_block_types", "encoder_hid_dim", "cross_attention_dim", "out_channels",
              "addition_embed_type", "encoder_hid_dim_type", "resnet_time_scale_shift"):
        assert s_cfg[k] == t_cfg[k], k
    assert record["student_params"] < 0.5 * record["teacher_params"]
    assert (out / "unet/diffusion_pytorch_model.safetensors").stat().st_size < \
        0.5 * (TEACHER / "unet/diffusion_pytorch_model.safetensors").stat().st_size
    # Initialised from the teacher (sliced: narrower), nothing left random.
    assert record["init"]["random"] == 0 and record["init"]["copied"] + record["init"]["sliced"] > 100


@needs_shared
def test_smoke_embeds_file_is_what_decode_local_reads(smoke):
    from safetensors.torch import load_file

    out, _, _ = smoke
    t = load_file(str(out / "embeds.safetensors"))
    assert set(t) == {"image_embeds", "negative_image_embeds"}
    for k, v in t.items():
        assert v.dtype == torch.float32 and tuple(v.shape) == (1, 32), (k, v.shape)
        assert torch.isfinite(v).all()
    assert not torch.equal(t["image_embeds"], t["negative_image_embeds"])


@needs_shared
def test_smoke_student_decodes_with_diffusers(smoke):
    from diffusers import KandinskyV22Pipeline
    from safetensors.torch import load_file

    out, _, _ = smoke
    pipe = KandinskyV22Pipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    embeds = load_file(str(out / "embeds.safetensors"))
    g = torch.Generator().manual_seed(0)
    image_embeds = torch.randn(1, 32, generator=g)
    img = pipe(image_embeds=image_embeds, negative_image_embeds=embeds["negative_image_embeds"], height=64,
               width=64, num_inference_steps=3, guidance_scale=4.0, generator=g, output_type="np").images
    assert img.shape == (1, 64, 64, 3)
    assert ((img >= 0) & (img <= 1)).all() and img.std() > 0


# ---------------------------------------------------------------------------------------------------------------
# Initialisation from the teacher (no training, no shared files)


def _random_unet(**cfg):
    from diffusers import UNet2DConditionModel

    base = dict(
        block_out_channels=(16, 32), layers_per_block=2, down_block_types=("ResnetDownsampleBlock2D",
                                                                          "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", in_channels=4, out_channels=8, norm_num_groups=8,
        attention_head_dim=8, cross_attention_dim=24, encoder_hid_dim=32, encoder_hid_dim_type="image_proj",
        addition_embed_type="image", resnet_time_scale_shift="scale_shift", sample_size=16)
    base.update(cfg)
    torch.manual_seed(1)
    return UNet2DConditionModel(**base)


def _zero(*tensors):
    for t in tensors:
        torch.nn.init.zeros_(t)


@torch.no_grad()
def test_block_removal_init_is_exact_when_the_removed_layers_are_identities():
    """Make the layers the student drops identities in the teacher (resnet conv2 = 0, attention to_out = 0, the
    dropped up resnet's shortcut = [I, 0]): the teacher then computes the student's function exactly, so
    teacher == student after init proves the layer maps and the skip connections line up."""
    teacher = _random_unet(layers_per_block=3).eval()
    t_cfg = dict(teacher.config)
    s_cfg = D.student_config(t_cfg, layers_per_block=1, no_mid_block=True)
    keep_down, keep_up = D.layer_keep_maps(t_cfg, s_cfg)
    assert keep_down == [[0], [0]] and keep_up == [[0, 3], [0, 3]]
    assert D.layer_keep_maps(t_cfg, D.student_config(t_cfg, layers_per_block=2))[1] == [[0, 2, 3], [0, 2, 3]]

    def identity_resnet(r):
        _zero(r.conv2.weight, r.conv2.bias)

    for i, block in enumerate(teacher.down_blocks):
        for j in range(1, 3):
            identity_resnet(block.resnets[j])
            if hasattr(block, "attentions"):
                _zero(block.attentions[j].to_out[0].weight, block.attentions[j].to_out[0].bias)
    for u, block in enumerate(teacher.up_blocks):
        for k in (1, 2):
            r = block.resnets[k]
            identity_resnet(r)
            out_ch = r.conv2.out_channels
            w = torch.zeros_like(r.conv_shortcut.weight)  # [out, out + skip, 1, 1]: pass the hidden part through
            w[:, :out_ch, 0, 0] = torch.eye(out_ch)
            r.conv_shortcut.weight.copy_(w)
            _zero(r.conv_shortcut.bias)
            if hasattr(block, "attentions"):
                _zero(block.attentions[k].to_out[0].weight, block.attentions[k].to_out[0].bias)
    mid = teacher.mid_block
    for r in mid.resnets:
        identity_resnet(r)
    _zero(mid.attentions[0].to_out[0].weight, mid.attentions[0].to_out[0].bias)

    from diffusers import UNet2DConditionModel

    student = UNet2DConditionModel.from_config(s_cfg).eval()
    assert student.mid_block is None
    report = D.init_student_from_teacher(student, teacher, s_cfg, t_cfg)
    assert report["random"] == [] and report["sliced"] == []
    assert any(n.startswith("mid_block.") for n in report["teacher_unused"])
    assert D.count_params(student) < 0.6 * D.count_params(teacher)
    # A copied tensor really comes from the mapped teacher layer.
    assert torch.equal(student.up_blocks[0].resnets[1].conv1.weight, teacher.up_blocks[0].resnets[3].conv1.weight)

    g = torch.Generator().manual_seed(0)
    x, emb = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 32, generator=g)
    t = torch.tensor([10, 700])
    y_t = teacher(x, t, None, added_cond_kwargs={"image_embeds": emb}).sample
    y_s = student(x, t, None, added_cond_kwargs={"image_embeds": emb}).sample
    assert y_t.abs().mean() > 0.01
    torch.testing.assert_close(y_s, y_t, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_narrower_student_takes_the_teachers_time_frequencies_and_concat_parts():
    teacher = _random_unet(layers_per_block=1, block_out_channels=(32, 64)).eval()
    t_cfg = dict(teacher.config)
    s_cfg = D.student_config(t_cfg, block_out_channels=[16, 32])
    from diffusers import UNet2DConditionModel

    student = UNet2DConditionModel.from_config(s_cfg)
    report = D.init_student_from_teacher(student, teacher, s_cfg, t_cfg)
    assert report["random"] == [] and len(report["sliced"]) > 50
    # Same timestep features: the student's sinusoid columns are the teacher's at the same frequencies.
    t = torch.tensor([0, 1, 37, 999])
    phi_t, phi_s = teacher.time_proj(t), student.time_proj(t)  # [4, 32], [4, 16]
    w_t, w_s = teacher.time_embedding.linear_1.weight, student.time_embedding.linear_1.weight  # [128,32], [64,16]
    torch.testing.assert_close(phi_s @ w_s.T, (phi_t @ _restricted(w_t, phi_t, phi_s).T)[:, :64])
    # An up resnet's input is cat([from below, skip]): each part keeps its own leading channels.
    r_t, r_s = teacher.up_blocks[0].resnets[1], student.up_blocks[0].resnets[1]  # in 64+32 → 32+16
    assert torch.equal(r_s.conv1.weight[:, :32], r_t.conv1.weight[:32, :32])
    assert torch.equal(r_s.conv1.weight[:, 32:], r_t.conv1.weight[:32, 64:80])
    # scale_shift: time_emb_proj's rows are [scale; shift].
    p_t = teacher.down_blocks[0].resnets[0].time_emb_proj.weight
    p_s = student.down_blocks[0].resnets[0].time_emb_proj.weight
    assert torch.equal(p_s[16:], p_t[32:48, :64])


def _restricted(w_t, phi_t, phi_s):
    """w_t with the columns whose teacher feature the student lacks zeroed: the student's linear_1 sees exactly
    the teacher's features at its own frequencies, so the products agree on the kept rows."""
    keep = torch.zeros(phi_t.shape[1], dtype=torch.bool)
    for j in range(phi_s.shape[1]):
        keep |= (phi_t - phi_s[:, j:j + 1]).abs().amax(0) < 1e-6
    return w_t * keep


def test_cli_rejects_bad_students(tmp_path):
    t_cfg = dict(_random_unet(layers_per_block=1).config)
    with pytest.raises(SystemExit):
        D.student_config(t_cfg, layers_per_block=2)  # more layers than the teacher
    with pytest.raises(SystemExit):
        D.student_config(t_cfg, block_out_channels=[12, 32])  # not a multiple of 8 groups / head dim
    with pytest.raises(SystemExit):
        D.student_config(t_cfg, overrides={"down_block_types": ["ResnetDownsampleBlock2D"] * 2})
    with pytest.raises(SystemExit):
        D.parse_args(["--output", str(tmp_path)])  # no --images


@needs_shared
def test_checkpoint_resume_continues_the_same_run(tmp_path):
    """Random batches (not the fixed one): a run resumed from its step-2 checkpoint ends where an uninterrupted
    run ends (per-step generators, optimizer and LR state restored)."""
    common = ["--smoke", "--no-fixed-batch", "--no-write-embeds", "--resolution", "32", "--batch-size", "2",
              "--log-every", "0", "--steps", "4", "--lr-warmup-steps", "3"]
    full = D.main([*common, "--output", str(tmp_path / "full")])
    D.main([*common, "--output", str(tmp_path / "cut"), "--steps", "2", "--checkpoint-every", "1",
            "--checkpoints-limit", "1"])
    # --steps 2 saved checkpoint-1 only (none at the last step: the output itself is the final state).
    assert [p.name for p in (tmp_path / "cut").glob("checkpoint-*")] == ["checkpoint-1"]
    resumed = D.main([*common, "--output", str(tmp_path / "cut"), "--resume", "latest"])
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]
    for a, b in zip(full["history"], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6), (a, b)


# ---------------------------------------------------------------------------------------------------------------
# Progressive distillation (--mode progressive)


def test_progressive_grid_must_nest():
    assert D.pd_grid(40) == (50, 25) and D.pd_grid(8) == (250, 125) and D.pd_grid(50) == (40, 20)
    for bad in (16, 64, 6, 7):
        with pytest.raises(SystemExit):
            D.pd_grid(bad)


@torch.no_grad()
@pytest.mark.parametrize("teacher_steps", [8, 40])
def test_progressive_target_makes_one_student_step_land_on_two_teacher_steps(teacher_steps):
    """Against diffusers' own DDIMScheduler (the decoder's betas, leading spacing, offset 1): with the target ε,
    one step of the N/2-step sampler from each of its timesteps lands exactly where two steps of the N-step
    sampler land (one at the last timestep, where both samplers end)."""
    from diffusers import DDIMScheduler

    kw = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False, set_alpha_to_one=False,
              steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
    s_t, s_s = DDIMScheduler(**kw), DDIMScheduler(**kw)
    s_t.set_timesteps(teacher_steps)
    s_s.set_timesteps(teacher_steps // 2)
    tt, ts = s_t.timesteps.tolist(), s_s.timesteps.tolist()
    assert set(ts) <= set(tt)
    r_s, r_t = D.pd_grid(teacher_steps)
    assert ts == [i * r_s + 1 for i in reversed(range(teacher_steps // 2))]
    unet = _random_unet(layers_per_block=1).eval()
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(1, 32, generator=g)

    def eps(x, t):
        return unet(x, torch.tensor([t]), None, added_cond_kwargs={"image_embeds": emb}).sample[:, :4]

    ac, final = s_t.alphas_cumprod, s_t.final_alpha_cumprod
    for t in ts:
        x_t = torch.randn(1, 4, 16, 16, generator=g)
        x = s_t.step(eps(x_t, t), t, x_t).prev_sample
        k = tt.index(t)
        if k + 1 < len(tt):
            assert tt[k + 1] == t - r_t
            x = s_t.step(eps(x, tt[k + 1]), tt[k + 1], x).prev_sample
        a_t = D._abar(ac, final, torch.tensor([t]))
        a_n = D._abar(ac, final, torch.tensor([t - r_s]))
        target = D.pd_target(x_t, x, a_t, a_n)
        one = s_s.step(target, t, x_t).prev_sample
        torch.testing.assert_close(one, x, rtol=1e-4, atol=1e-4)
        # and ddim_step is diffusers' step
        torch.testing.assert_close(D.ddim_step(x_t, target, a_t, a_n), one, rtol=1e-5, atol=1e-5)


@needs_shared
def test_progressive_smoke_halves_the_steps(tmp_path):
    from diffusers import KandinskyV22Pipeline

    out = tmp_path / "pd"
    rec = D.main(["--smoke", "--mode", "progressive", "--output", str(out), "--steps", "12", "--log-every", "0"])
    losses = [h["loss"] for h in rec["history"]]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert rec["inference"]["num_inference_steps"] == 4 and rec["student_params"] == rec["teacher_params"]
    assert json.loads((out / "scheduler/scheduler_config.json").read_text())["_class_name"] == "DDIMScheduler"
    pipe = KandinskyV22Pipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    g = torch.Generator().manual_seed(0)
    img = pipe(image_embeds=torch.randn(1, 32, generator=g), negative_image_embeds=torch.zeros(1, 32), height=64,
               width=64, num_inference_steps=4, guidance_scale=4.0, generator=g, output_type="np").images
    assert img.shape == (1, 64, 64, 3) and ((img >= 0) & (img <= 1)).all()
