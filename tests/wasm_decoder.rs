//! In the browser (wasm-bindgen-test, headless Chromium): the tiny Kandinsky decoder, loaded from in-memory
//! files, decodes the `ddpm_nocfg` golden case (diffusers' own noise injected) on the CPU (wasm) and on WebGPU
//! (SwiftShader: no `shader-f16`) and matches the golden latents after every step and the image.
#![cfg(target_arch = "wasm32")]

use lambda_eclipse::models::conv::nchw_to_rows;
use lambda_eclipse::ops::Backend;
use lambda_eclipse::pipeline::{DecodeRequest, DecoderEngine, DecoderNoise, SchedulerKind};
use lambda_eclipse::tensor_file;
use lambda_eclipse::weights::MemFiles;
use std::sync::atomic::AtomicBool;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! golden {
    ($p:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/goldens/kandinsky-tiny/", $p)).as_slice()
    };
}

fn decoder_files() -> MemFiles {
    let mut f = MemFiles::new();
    f.insert("unet/config.json", golden!("model/unet/config.json"));
    f.insert("unet/diffusion_pytorch_model.safetensors", golden!("model/unet/diffusion_pytorch_model.safetensors"));
    f.insert("movq/config.json", golden!("model/movq/config.json"));
    f.insert("movq/diffusion_pytorch_model.safetensors", golden!("model/movq/diffusion_pytorch_model.safetensors"));
    f.insert("scheduler/scheduler_config.json", golden!("model/scheduler/scheduler_config.json"));
    f
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// The `ddpm_nocfg` case (3 DDPM steps, guidance 1, 64×64): latents after each step ≤ 1e-3, image ≤ 1e-3,
/// 8-bit image equal or off by one on ≤ 0.1 % of the values.
async fn decode_ddpm_nocfg<B: Backend>(be: B) {
    let g = golden!("ddpm_nocfg.safetensors");
    let f32s = |name: &str| tensor_file::read_f32(g, name, "ddpm_nocfg").unwrap();
    let engine = DecoderEngine::load(be.clone(), &decoder_files(), &mut |_, _, _| {}).await.unwrap();
    let noise =
        DecoderNoise::Explicit { initial_latents: f32s("initial_latents").1, step_noise: Some(f32s("step_noise").1) };
    let mut req = DecodeRequest::new(f32s("image_embeds").1, f32s("negative_image_embeds").1, noise);
    (req.steps, req.guidance, req.width, req.height, req.scheduler) = (3, 1.0, 64, 64, Some(SchedulerKind::Ddpm));
    req.keep_step_latents = true;
    let mut steps_seen = 0;
    let out = engine.decode(&req, &mut |_, _, _| steps_seen += 1, &AtomicBool::new(false)).await.unwrap();
    assert_eq!(steps_seen, 3, "one progress call per step");
    let (shape, after) = f32s("latents_after_step");
    let per = after.len() / shape[0];
    for (i, got) in out.step_latents.iter().enumerate() {
        let d = max_abs(got, &after[i * per..(i + 1) * per]);
        assert!(d <= 1e-3, "[{}] latents after step {}: {d}", be.name(), i + 1);
    }
    let want_image = nchw_to_rows(&f32s("image").1, 3, 64, 64);
    let d = max_abs(&out.image, &want_image);
    assert!(d <= 1e-3, "[{}] image differs by {d}", be.name());
    let want_u8 = nchw_to_rows(&f32s("image_uint8").1, 3, 64, 64);
    let off: Vec<i32> = out.rgb.iter().zip(&want_u8).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
    assert!(off.iter().all(|&o| o <= 1), "[{}] 8-bit values off by more than one", be.name());
    let ones = off.iter().filter(|&&o| o == 1).count();
    assert!(ones <= off.len() / 1000, "[{}] {ones} 8-bit values off by one", be.name());
    web_sys_log(&format!(
        "[{}] ddpm_nocfg image max-abs {d:e}, {ones} of {} 8-bit values off by one",
        be.name(),
        off.len()
    ));
}

fn web_sys_log(s: &str) {
    wasm_bindgen_test::console_log!("{s}");
}

#[wasm_bindgen_test]
async fn tiny_decoder_on_the_wasm_cpu_matches_the_golden_image() {
    decode_ddpm_nocfg(lambda_eclipse::ops::cpu::CpuBackend::new()).await;
}

#[cfg(feature = "gpu")]
#[wasm_bindgen_test]
async fn tiny_decoder_on_webgpu_in_the_browser_matches_the_golden_image() {
    let gpu = lambda_eclipse::ops::gpu::GpuBackend::new().await.expect("a WebGPU adapter in the test browser");
    decode_ddpm_nocfg(gpu).await;
}
