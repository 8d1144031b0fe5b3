//! The unchanged models (CLIP towers, λ prior) on the WebGPU backend reproduce every case of
//! `shared/goldens/lambda-tiny` within 1e-3 (the CPU backend's own golden tests hold 1e-4). Without an
//! adapter these tests fail, unless `LAMBDA_ECLIPSE_SKIP_GPU=1`.
#![cfg(all(feature = "gpu", not(target_arch = "wasm32")))]

mod common;
use common::*;
use lambda_eclipse::ops::gpu::GpuBackend;
use lambda_eclipse::pipeline::lambda::Noise;
use lambda_eclipse::pipeline::{self, LambdaEngine};
use lambda_eclipse::weights::DirFiles;

const TOL: f32 = 1e-3;

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    pollster::block_on(f)
}

fn gpu() -> Option<GpuBackend> {
    let be = open_gpu_or_skip()?;
    eprintln!("GPU adapter: {}", be.adapter_description());
    Some(be)
}

/// Asserts closeness and reports the difference, so the margin to `TOL` shows in the test log.
#[track_caller]
fn check(what: &str, got: &[f32], want: &[f32], worst: &mut f32) {
    let d = max_abs_diff(got, want);
    *worst = worst.max(d);
    assert!(d <= TOL, "{what}: max-abs difference {d:e} exceeds {TOL:e}");
}

#[test]
fn text_tower_on_gpu_matches_golden() {
    let Some(be) = gpu() else { return };
    let files = DirFiles::new(tiny_model());
    let tok = block(pipeline::load_tokenizer(&files)).unwrap();
    let model = block(pipeline::load_text_encoder(&be, &files, &mut |_, _, _| {})).unwrap();
    let mut worst = 0.0;
    for case in cases() {
        let g = Golden::open(&case);
        let emb = block(pipeline::embed_text(&be, &tok, &model, &case.prompt)).unwrap();
        check(
            &format!("{}: last_hidden_state", case.name),
            &emb.last_hidden_state,
            &g.f32("last_hidden_state").1,
            &mut worst,
        );
        check(&format!("{}: text_embeds", case.name), &emb.text_embeds, &g.f32("text_embeds").1, &mut worst);
    }
    eprintln!("text tower on GPU: worst max-abs {worst:e}");
}

#[test]
fn vision_tower_on_gpu_matches_golden() {
    let Some(be) = gpu() else { return };
    let files = DirFiles::new(tiny_model());
    let processor = block(pipeline::load_image_processor(&files)).unwrap();
    let model = block(pipeline::load_image_encoder(&be, &files, &mut |_, _, _| {})).unwrap();
    let zero = block(pipeline::zero_image_embeds(&be, &model)).unwrap();
    let mut worst = 0.0;
    let mut checked = 0;
    for case in cases() {
        let g = Golden::open(&case);
        check(&format!("{}: zero_image_embeds", case.name), &zero, &g.f32("zero_image_embeds").1, &mut worst);
        for (j, subject) in case.subjects.iter().enumerate() {
            let bytes = std::fs::read(asset(&subject.image)).unwrap();
            let pv = pipeline::pixel_values_from_bytes(&bytes, &processor).unwrap();
            let e = block(pipeline::embed_pixels(&be, &model, &pv)).unwrap();
            check(
                &format!("{}: subject{j}_image_embeds", case.name),
                &e,
                &g.f32(&format!("subject{j}_image_embeds")).1,
                &mut worst,
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "every golden subject was checked");
    eprintln!("vision tower on GPU: worst max-abs {worst:e}");
}

#[test]
fn every_golden_case_on_gpu_end_to_end() {
    let Some(be) = gpu() else { return };
    let engine = block(LambdaEngine::load(be, &DirFiles::new(tiny_model()), &mut |_, _, _| {})).unwrap();
    let mut worst = 0.0;
    for case in cases() {
        let g = Golden::open(&case);
        let out = block(engine.run(&golden_request(&case, Noise::Explicit(g.f32("noise").1)))).unwrap();
        let n = &case.name;
        check(
            &format!("{n}: encoder_hidden_states"),
            &out.encoder_hidden_states,
            &g.f32("encoder_hidden_states").1,
            &mut worst,
        );
        check(&format!("{n}: image_embeds"), &out.image_embeds, &g.f32("image_embeds").1, &mut worst);
        check(
            &format!("{n}: negative_image_embeds"),
            &out.negative_image_embeds,
            &g.f32("negative_image_embeds").1,
            &mut worst,
        );
        let control = if case.canny.is_some() { "control_embeds" } else { "zero_image_embeds" };
        check(&format!("{n}: control_embeds"), &out.control_embeds, &g.f32(control).1, &mut worst);
        eprintln!("{n}: ok");
    }
    eprintln!("λ pipeline on GPU, all golden cases: worst max-abs {worst:e}");
}

/// After loading, the GPU holds about the weights' own bytes (each tensor its own buffer, f32 as stored):
/// no hidden copies. Reported, and bounded to +1 % for padding.
#[test]
fn gpu_buffer_bytes_match_weight_bytes_after_loading() {
    use lambda_eclipse::weights::{load_component_weights, safetensors::read_header, ModelFiles};
    let Some(be) = gpu() else { return };
    let files = DirFiles::new(tiny_model());
    for (dir, stem) in [("text_encoder", "model"), ("image_encoder", "model"), ("prior", "diffusion_pytorch_model")] {
        let header = block(read_header(&files.open(&format!("{dir}/{stem}.safetensors")))).unwrap();
        let weight_bytes: usize = header.tensors.iter().map(|t| t.len).sum();
        let store = block(load_component_weights(&be, &files, dir, stem, |_, _| {})).unwrap();
        let gpu_bytes = store.device_bytes(&be);
        eprintln!("{dir}: weights {weight_bytes} bytes, GPU buffers {gpu_bytes} bytes");
        assert!(
            gpu_bytes >= weight_bytes && gpu_bytes as f64 <= weight_bytes as f64 * 1.01,
            "{dir}: {gpu_bytes} GPU bytes for {weight_bytes} weight bytes"
        );
    }
}

/// The whole λ pipeline run twice over every golden case on one engine: a dispatch that binds only weights
/// and pooled activations finds its bind group in the cache whenever an earlier forward of the same shape
/// recorded it (the pool hands repeated forwards the same buffers); bind groups are created for the first
/// forward of a shape and where a dispatch binds an input uploaded for that run (token ids, masks, pixels).
#[test]
fn a_second_pass_over_the_golden_cases_reuses_bind_groups() {
    let Some(be) = gpu() else { return };
    let engine = block(LambdaEngine::load(be.clone(), &DirFiles::new(tiny_model()), &mut |_, _, _| {})).unwrap();
    let run_all = || -> Vec<Vec<f32>> {
        cases()
            .iter()
            .map(|case| {
                let g = Golden::open(case);
                block(engine.run(&golden_request(case, Noise::Explicit(g.f32("noise").1)))).unwrap().image_embeds
            })
            .collect()
    };
    let s0 = be.bind_group_stats();
    let first = run_all();
    let s1 = be.bind_group_stats();
    let second = run_all();
    let s2 = be.bind_group_stats();
    let (d1, c1) = (s1.dispatches - s0.dispatches, s1.created - s0.created);
    let (d2, c2) = (s2.dispatches - s1.dispatches, s2.created - s1.created);
    eprintln!("golden cases, pass 1: {d1} dispatches, {c1} bind groups created; pass 2: {d2} dispatches, {c2} created; cached {}", s2.cached);
    assert_eq!(second, first, "the second pass computes the same");
    assert!(c1 < d1 && c2 < d2, "dispatches found their bind groups in the cache");
}
