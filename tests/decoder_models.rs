//! The decoder's models and engine beyond the goldens: a "distilled student" (other sizes and options of the same
//! diffusers classes, `tests/fixtures/decoder/make_student.py`) loads with no code change and matches diffusers;
//! unsupported configs and mismatched weights fail naming the field or tensor; decoding reports every step,
//! can be cancelled, and is deterministic per seed.

mod common;
use common::*;
use lambda_eclipse::error::Error;
use lambda_eclipse::models::conv::{nchw_to_rows, rows_to_nchw};
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::Backend;
use lambda_eclipse::pipeline::{DecodeRequest, DecoderConfigs, DecoderEngine, DecoderNoise, SchedulerKind};
use lambda_eclipse::tensor_file;
use lambda_eclipse::weights::{DirFiles, MemFiles};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

fn student() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoder/student")
}

fn tiny() -> PathBuf {
    shared().join("goldens/kandinsky-tiny/model")
}

fn load(dir: &Path) -> Result<DecoderEngine<CpuBackend>, Error> {
    pollster::block_on(DecoderEngine::load(CpuBackend::new(), &DirFiles::new(dir), &mut |_, _, _| {}))
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn a_student_with_other_sizes_and_options_loads_and_matches_diffusers() {
    let engine = load(&student()).unwrap();
    let be = &engine.backend;
    let bytes = std::fs::read(student().join("outputs.safetensors")).unwrap();
    let f = |n: &str| tensor_file::read_f32(&bytes, n, "outputs").unwrap();
    let (s, sample) = f("unet_sample");
    let (c, h, w) = (s[1], s[2], s[3]);
    let x = be.from_f32(&nchw_to_rows(&sample, c, h, w), &[h * w, c]).unwrap();
    let emb = f("unet_image_embeds").1;
    let emb = be.from_f32(&emb, &[1, emb.len()]).unwrap();
    let out = engine.unet.forward(be, &x, h, w, f("unet_timestep").1[0], &emb).unwrap();
    let (os, want) = f("unet_out");
    let got = rows_to_nchw(&pollster::block_on(be.read_f32(&out)).unwrap(), os[1], h, w, os[1]);
    let d = max_abs_diff(&got, &want);
    eprintln!("student unet_out: max-abs error {d:.3e} (scale {:.3e})", max_abs(&want));
    assert!(d <= 1e-4 * max_abs(&want), "student unet_out: {d:e}");

    let (ls, latents) = f("movq_latents");
    let (lh, lw) = (ls[2], ls[3]);
    let decoded = pollster::block_on(engine.decode_latents(&latents, lh, lw)).unwrap();
    let (ms, want) = f("movq_out");
    assert_eq!((decoded.height, decoded.width), (ms[2], ms[3]));
    let d = max_abs_diff(&decoded.decoded, &want);
    eprintln!("student movq_out: max-abs error {d:.3e} (scale {:.3e})", max_abs(&want));
    assert!(d <= 1e-4 * max_abs(&want), "student movq_out: {d:e}");
    // The student's sampler config is a DDIM class of its own.
    assert_eq!(engine.configs.default_scheduler, SchedulerKind::Ddim);
}

/// The tiny golden decoder in memory with `edit` applied to one config.
fn tiny_with(config: &str, edit: impl FnOnce(&mut serde_json::Value)) -> MemFiles {
    let mut files = MemFiles::new();
    let mut edit = Some(edit);
    for rel in [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "movq/config.json",
        "movq/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        let mut bytes = std::fs::read(tiny().join(rel)).unwrap();
        if rel == config {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            edit.take().expect("one config edited")(&mut v);
            bytes = serde_json::to_vec(&v).unwrap();
        }
        files.insert(rel, bytes);
    }
    files
}

fn load_err(files: &MemFiles) -> String {
    match pollster::block_on(DecoderEngine::load(CpuBackend::new(), files, &mut |_, _, _| {})) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_unet_options_are_refused_naming_the_field() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("down_block_types", json!(["ResnetDownsampleBlock2D", "CrossAttnDownBlock2D"])),
        ("up_block_types", json!(["UpBlock2D", "ResnetUpsampleBlock2D"])),
        ("mid_block_type", json!("UNetMidBlock2DCrossAttn")),
        ("resnet_time_scale_shift", json!("ada_group")),
        ("encoder_hid_dim_type", json!("text_proj")),
        ("addition_embed_type", json!("text")),
        ("act_fn", json!("gelu")),
        ("only_cross_attention", json!(true)),
        ("cross_attention_norm", json!("group_norm")),
        ("class_embed_type", json!("timestep")),
        ("resnet_out_scale_factor", json!(2.0)),
        ("conv_in_kernel", json!(5)),
        ("norm_num_groups", json!(null)),
        ("attention_head_dim", json!(7)),
        ("layers_per_block", json!([1])),
        ("time_embedding_type", json!("fourier")),
        ("time_embedding_act_fn", json!("silu")),
    ];
    for (field, value) in cases {
        let err = load_err(&tiny_with("unet/config.json", |v| v[field] = value.clone()));
        assert!(err.contains(&format!("`{field}`")) && err.contains("unet/config.json"), "{field}: {err}");
    }
}

#[test]
fn unsupported_movq_options_are_refused_naming_the_field() {
    use serde_json::json;
    for (field, value) in [
        ("norm_type", json!("group")),
        ("up_block_types", json!(["AttnUpDecoderBlock2D", "UpBlock2D"])),
        ("vq_embed_dim", json!(3)),
        ("block_out_channels", json!([32, 48])),
        ("lookup_from_codebook", json!(true)),
        ("act_fn", json!("relu")),
    ] {
        let err = load_err(&tiny_with("movq/config.json", |v| v[field] = value.clone()));
        assert!(err.contains(&format!("`{field}`")) && err.contains("movq/config.json"), "{field}: {err}");
    }
}

#[test]
fn weights_that_do_not_fit_the_config_name_the_tensor() {
    // One more resnet per block than the checkpoint has.
    let err = load_err(&tiny_with("unet/config.json", |v| v["layers_per_block"] = serde_json::json!(2)));
    assert!(err.contains("missing tensor `down_blocks.0.resnets.1.norm1.weight`"), "{err}");
    // Another context width than the checkpoint's.
    let err = load_err(&tiny_with("unet/config.json", |v| v["cross_attention_dim"] = serde_json::json!(16)));
    assert!(
        err.contains(
            "`down_blocks.1.attentions.0.add_k_proj.weight` has shape [64, 24] but the config implies [64, 16]"
        ),
        "{err}"
    );
    // UNet and MoVQ disagree on the latent channels.
    let err = load_err(&tiny_with("unet/config.json", |v| v["in_channels"] = serde_json::json!(3)));
    assert!(err.contains("unet/config.json") && err.contains("MoVQ"), "{err}");
}

#[test]
fn a_missing_component_folder_is_named() {
    let mut files = MemFiles::new();
    files.insert("unet/config.json", std::fs::read(tiny().join("unet/config.json")).unwrap());
    let err = load_err(&files);
    assert!(err.contains("movq/config.json") && err.contains("movq/"), "{err}");
}

fn seeded<B: Backend>(engine: &DecoderEngine<B>, seed: u64, kind: SchedulerKind, steps: usize) -> DecodeRequest {
    let d = engine.embedding_dim();
    let e: Vec<f32> = (0..d).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let mut req = DecodeRequest::new(e, vec![0.0; d], DecoderNoise::Seed(seed));
    req.steps = steps;
    req.width = 32;
    req.height = 32;
    req.scheduler = Some(kind);
    req
}

#[test]
fn decoding_reports_every_step_with_a_latent_preview_and_stops_when_cancelled() {
    let engine = load(&tiny()).unwrap();
    let req = seeded(&engine, 3, SchedulerKind::Ddpm, 3);
    let mut seen = Vec::new();
    let out = pollster::block_on(engine.decode(
        &req,
        &mut |s, t, p| seen.push((s, t, p.width, p.height, p.rgb.len())),
        &AtomicBool::new(false),
    ))
    .unwrap();
    assert_eq!(seen, vec![(1, 3, 16, 16, 768), (2, 3, 16, 16, 768), (3, 3, 16, 16, 768)]);
    assert_eq!((out.width, out.height, out.rgb.len(), out.image.len()), (32, 32, 32 * 32 * 3, 32 * 32 * 3));
    assert_eq!(out.latents.len(), 4 * 16 * 16);

    let cancel = AtomicBool::new(false);
    let mut steps = 0;
    let r = pollster::block_on(engine.decode(
        &req,
        &mut |s, _, _| {
            steps = s;
            cancel.store(true, Ordering::Relaxed);
        },
        &cancel,
    ));
    assert!(matches!(r, Err(Error::Cancelled)), "{:?}", r.map(|_| ()));
    assert_eq!(steps, 1, "cancelled between step 1 and step 2");
    assert_eq!(Error::Cancelled.to_string(), "cancelled");
}

#[test]
fn the_same_seed_decodes_bit_identically_and_another_seed_differently() {
    let engine = load(&tiny()).unwrap();
    let never = AtomicBool::new(false);
    for kind in [SchedulerKind::Ddpm, SchedulerKind::Ddim, SchedulerKind::DpmSolverPP] {
        let a = pollster::block_on(engine.decode(&seeded(&engine, 11, kind, 2), &mut |_, _, _| {}, &never)).unwrap();
        let b = pollster::block_on(engine.decode(&seeded(&engine, 11, kind, 2), &mut |_, _, _| {}, &never)).unwrap();
        let c = pollster::block_on(engine.decode(&seeded(&engine, 12, kind, 2), &mut |_, _, _| {}, &never)).unwrap();
        assert_eq!(a.rgb, b.rgb, "{kind}");
        assert_eq!(
            a.latents.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.latents.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_ne!(a.rgb, c.rgb, "{kind}");
    }
}

#[test]
fn seeded_noise_is_the_documented_stream_initial_latents_then_ddpm_step_noise() {
    // Seed(s) ≡ Explicit with gaussian_noise(s, n·(steps + 1)) split into the initial latents and per-step noise.
    let engine = load(&tiny()).unwrap();
    let never = AtomicBool::new(false);
    let req = seeded(&engine, 21, SchedulerKind::Ddpm, 2);
    let n = 4 * 16 * 16;
    let stream = lambda_eclipse::pipeline::noise::gaussian_noise(21, n * 3);
    let mut explicit = req.clone();
    explicit.noise =
        DecoderNoise::Explicit { initial_latents: stream[..n].to_vec(), step_noise: Some(stream[n..].to_vec()) };
    let a = pollster::block_on(engine.decode(&req, &mut |_, _, _| {}, &never)).unwrap();
    let b = pollster::block_on(engine.decode(&explicit, &mut |_, _, _| {}, &never)).unwrap();
    assert_eq!(a.rgb, b.rgb);
}

#[test]
fn requests_are_checked_against_the_configs_before_any_weight() {
    let configs = pollster::block_on(DecoderConfigs::read(&DirFiles::new(tiny()))).unwrap();
    assert_eq!((configs.embedding_dim(), configs.latent_scale(), configs.size_multiple()), (32, 2, 4));
    let d = configs.embedding_dim();
    let ok = DecodeRequest::new(vec![0.1; d], vec![0.0; d], DecoderNoise::Seed(0));
    let mut req = ok.clone();
    req.width = 64;
    req.height = 64;
    assert!(configs.prepare(&req).is_ok());
    let check = |edit: &dyn Fn(&mut DecodeRequest), needle: &str| {
        let mut r = req.clone();
        edit(&mut r);
        let err = configs.prepare(&r).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    };
    check(&|r| r.height = 66, "height 66");
    check(&|r| r.width = 0, "width 0");
    check(&|r| r.image_embeds = vec![0.0; 31], "image_embeds has 31 values");
    check(&|r| r.negative_image_embeds = vec![0.0; 5], "negative_image_embeds has 5 values");
    check(&|r| r.image_embeds[3] = f32::NAN, "NaN");
    check(&|r| r.steps = 0, "steps");
    check(&|r| r.guidance = f32::INFINITY, "guidance");
    check(
        &|r| r.noise = DecoderNoise::Explicit { initial_latents: vec![0.0; 10], step_noise: None },
        "initial_latents has 10 values",
    );
    // Without guidance the negative embedding is not needed.
    let mut r = req.clone();
    r.guidance = 1.0;
    r.negative_image_embeds.clear();
    assert!(configs.prepare(&r).is_ok());
}

#[test]
fn the_largest_activation_is_the_movq_upsample_into_its_last_level_and_the_cpu_has_no_buffer_limit() {
    let engine = load(&tiny()).unwrap();
    // The tiny MoVQ (block_out_channels [32, 64], ×2): at 1024×1024 the nearest ×2 upsample into the last level
    // holds 1024² positions × 64 channels in f32.
    assert_eq!(engine.largest_activation(1024, 1024).unwrap(), (1024 * 1024 * 64 * 4, "MoVQ"));
    assert_eq!(engine.backend.max_activation_bytes(), None);
    assert!(engine.check_fits(1024, 1024).is_ok());
}

#[cfg(feature = "gpu")]
#[test]
fn a_size_above_the_gpu_buffer_limit_is_refused_before_any_step_naming_a_size_that_fits() {
    let Some(be) = open_gpu_or_skip() else { return };
    let engine = pollster::block_on(DecoderEngine::load(be, &DirFiles::new(tiny()), &mut |_, _, _| {})).unwrap();
    assert_eq!(engine.backend.max_activation_bytes(), Some(128 << 20), "WebGPU's default storage-binding limit");
    let mut req = seeded(&engine, 5, SchedulerKind::Ddim, 2);
    (req.width, req.height) = (1024, 1024);
    let mut steps = 0;
    let err = pollster::block_on(engine.decode(&req, &mut |_, _, _| steps += 1, &AtomicBool::new(false)))
        .unwrap_err()
        .to_string();
    assert_eq!(steps, 0, "refused before the first step");
    assert!(
        err.starts_with("a 1024×1024 image needs a 256 MiB GPU buffer (the MoVQ's largest feature map), above this device's 128 MiB per-buffer limit"),
        "{err}"
    );
    let side: usize =
        err.rsplit("fits is ").next().and_then(|s| s.split('×').next()).and_then(|s| s.parse().ok()).expect(&err);
    let m = engine.configs.size_multiple();
    assert!(engine.check_fits(side, side).is_ok(), "{side} should fit");
    assert!(engine.check_fits(side + m, side + m).is_err(), "{} should not fit", side + m);
}

/// One UNet forward of `x [h·w, c]` at timestep 500 with `embeds`, read back.
fn unet_forward<B: Backend>(
    engine: &DecoderEngine<B>,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    embeds: &[f32],
) -> Vec<f32> {
    let be = &engine.backend;
    let x = be.from_f32(x, &[h * w, c]).unwrap();
    let e = be.from_f32(embeds, &[1, embeds.len()]).unwrap();
    pollster::block_on(be.read_f32(&engine.unet.forward(be, &x, h, w, 500.0, &e).unwrap())).unwrap()
}

/// The UNet at a 768×768 picture's size: latents 96×96, so its attention level (48×48) has 2304 positions + the
/// image context as keys — more than the old fused kernel's 1024 — through the flash kernel on the GPU.
#[test]
fn the_gpu_unet_runs_at_768_px_with_2304_attention_positions_like_the_cpu() {
    let Some(be) = open_gpu_or_skip() else { return };
    let gpu = pollster::block_on(DecoderEngine::load(be, &DirFiles::new(tiny()), &mut |_, _, _| {})).unwrap();
    let cpu = load(&tiny()).unwrap();
    let (h, w) = (96, 96);
    let c = cpu.configs.unet.in_channels;
    let d = cpu.embedding_dim();
    let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let e: Vec<f32> = (0..d).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let want = unet_forward(&cpu, &x, (h, w, c), &e);
    let got = unet_forward(&gpu, &x, (h, w, c), &e);
    assert_eq!(got.len(), want.len());
    // Each backend's UNet forward is held to 1e-4 of the output scale from diffusers' f32 result (the component
    // goldens, tests/golden_decoder.rs), so the two are within 2e-4 of each other; the attention's longer sums
    // (2314 keys instead of the goldens' few) are summed in tiles of 32 on the GPU, which keeps their rounding
    // to the goldens' order.
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = max_abs(&want);
    eprintln!(
        "UNet forward at 96×96 latents: GPU vs CPU max-abs {diff:.3e} (scale {scale:.3e}, relative {:.3e})",
        diff / scale
    );
    assert!(diff <= 2e-4 * scale, "UNet forward at 96×96: max-abs {diff:e} exceeds 2e-4 × {scale:e}");
}
