//! In the browser (wasm-bindgen-test, headless Chromium, CPU backend): the tiny model, loaded from in-memory
//! files, reproduces the goldens — the text tower alone, and the whole `cat_glasses` pipeline; and the CPU's
//! panel products (the simd128 kernel) match the exact ones.
#![cfg(target_arch = "wasm32")]

use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::pipeline::{self, lambda::Noise, LambdaEngine, PriorRequest, Subject};
use lambda_eclipse::tensor_file;
use lambda_eclipse::weights::MemFiles;
use wasm_bindgen_test::*;

mod panel_products;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! asset {
    ($p:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/images/", $p)).to_vec()
    };
}

macro_rules! golden {
    ($p:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/goldens/lambda-tiny/", $p)).as_slice()
    };
}

fn tiny_text_files() -> MemFiles {
    let mut f = MemFiles::new();
    f.insert("tokenizer/tokenizer.json", golden!("model/tokenizer/tokenizer.json"));
    f.insert("tokenizer/tokenizer_config.json", golden!("model/tokenizer/tokenizer_config.json"));
    f.insert("text_encoder/config.json", golden!("model/text_encoder/config.json"));
    f.insert("text_encoder/model.safetensors", golden!("model/text_encoder/model.safetensors"));
    f
}

fn tiny_model_files() -> MemFiles {
    let mut f = tiny_text_files();
    f.insert("image_encoder/config.json", golden!("model/image_encoder/config.json"));
    f.insert("image_encoder/model.safetensors", golden!("model/image_encoder/model.safetensors"));
    f.insert("image_processor/preprocessor_config.json", golden!("model/image_processor/preprocessor_config.json"));
    f.insert("prior/config.json", golden!("model/prior/config.json"));
    f.insert("prior/diffusion_pytorch_model.safetensors", golden!("model/prior/diffusion_pytorch_model.safetensors"));
    f
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[wasm_bindgen_test]
async fn tiny_text_tower_in_browser_matches_golden_text_embeds() {
    let be = CpuBackend::new();
    let files = tiny_text_files();
    let tok = pipeline::load_tokenizer(&files).await.unwrap();
    let model = pipeline::load_text_encoder(&be, &files, &mut |_, _, _| {}).await.unwrap();
    let golden = golden!("cat_glasses.safetensors");
    let emb = pipeline::embed_text(&be, &tok, &model, "a cat wearing glasses at a park").await.unwrap();
    let (_, want) = tensor_file::read_f32(golden, "text_embeds", "cat_glasses").unwrap();
    let diff = emb.text_embeds.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert_eq!(emb.text_embeds.len(), want.len());
    assert!(diff <= 1e-4, "text_embeds differ by {diff}");
    let (_, hidden) = tensor_file::read_f32(golden, "last_hidden_state", "cat_glasses").unwrap();
    let diff = emb.last_hidden_state.iter().zip(&hidden).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-4, "last_hidden_state differs by {diff}");
}

fn golden_noise() -> Vec<f32> {
    tensor_file::read_f32(golden!("cat_glasses.safetensors"), "noise", "cat_glasses").unwrap().1
}

/// The cat_glasses request: the golden prompt, photos and noise.
fn cat_glasses_request() -> PriorRequest {
    let mut req = PriorRequest::new("a cat wearing glasses at a park", Noise::Explicit(golden_noise()));
    req.subjects.push(Subject { keyword: "cat".into(), image: asset!("chelsea.png") });
    req.subjects.push(Subject { keyword: "glasses".into(), image: asset!("coffee.png") });
    req
}

/// Runs cat_glasses on `engine` and compares the prior output and the negative with the golden.
async fn check_cat_glasses<B: lambda_eclipse::ops::Backend>(engine: &LambdaEngine<B>, tol: f32) {
    let read = |name: &str| tensor_file::read_f32(golden!("cat_glasses.safetensors"), name, "cat_glasses").unwrap().1;
    let out = engine.run(&cat_glasses_request()).await.unwrap();
    let d = max_abs(&out.image_embeds, &read("image_embeds"));
    assert!(d <= tol, "image_embeds on {} differ by {d}", engine.backend.name());
    let d = max_abs(&out.negative_image_embeds, &read("negative_image_embeds"));
    assert!(d <= tol, "negative_image_embeds on {} differ by {d}", engine.backend.name());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

/// The CPU's products with weights in panels, in wasm: the simd128 kernel (src/ops/cpu/panel_kernel/simd128.rs)
/// against the exact product, with its epilogue; see `panel_products::check_panels`.
#[wasm_bindgen_test]
async fn cpu_product_weights_in_panels_match_the_exact_products_in_wasm() {
    for shape in panel_products::SHAPES {
        panel_products::check_panels(shape).await;
    }
    for shape in panel_products::Q8_0_SHAPES {
        panel_products::check_q8_0_panels(shape).await;
    }
}

#[wasm_bindgen_test]
async fn cat_glasses_pipeline_in_browser_matches_golden_image_embeds() {
    let engine = LambdaEngine::load(CpuBackend::new(), &tiny_model_files(), &mut |_, _, _| {}).await.unwrap();
    check_cat_glasses(&engine, 1e-4).await;
}

/// The same case entirely on WebGPU (SwiftShader in headless Chromium: no `shader-f16`).
#[cfg(feature = "gpu")]
#[wasm_bindgen_test]
async fn cat_glasses_pipeline_on_webgpu_in_browser_matches_golden_image_embeds() {
    let gpu = lambda_eclipse::ops::gpu::GpuBackend::new().await.expect("a WebGPU adapter in the test browser");
    let engine = LambdaEngine::load(gpu, &tiny_model_files(), &mut |_, _, _| {}).await.unwrap();
    check_cat_glasses(&engine, 1e-3).await;
}

/// Bytes of the wasm linear memory.
fn wasm_memory_bytes() -> f64 {
    use wasm_bindgen::JsCast;
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().dyn_into().unwrap();
    memory.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64
}

/// Runs cat_glasses 100 times after a warm-up call: the wasm heap must not grow with the number of calls.
async fn heap_stays_flat<B: lambda_eclipse::ops::Backend>(engine: LambdaEngine<B>, label: &str) {
    let req = cat_glasses_request();
    engine.run(&req).await.unwrap();
    let before = wasm_memory_bytes();
    for _ in 0..100 {
        engine.run(&req).await.unwrap();
    }
    let after = wasm_memory_bytes();
    web_sys_log(&format!("{label}: wasm memory {before} bytes after the first call, {after} after 100 more"));
    assert_eq!(after, before, "{label}: the wasm heap grew from {before} to {after} bytes over 100 calls");
}

fn web_sys_log(s: &str) {
    wasm_bindgen_test::console_log!("{s}");
}

#[wasm_bindgen_test]
async fn wasm_heap_does_not_grow_over_100_pipeline_calls_on_cpu() {
    let engine = LambdaEngine::load(CpuBackend::new(), &tiny_model_files(), &mut |_, _, _| {}).await.unwrap();
    heap_stays_flat(engine, "cpu").await;
}

#[cfg(feature = "gpu")]
#[wasm_bindgen_test]
async fn wasm_heap_does_not_grow_over_100_pipeline_calls_on_webgpu() {
    let gpu = lambda_eclipse::ops::gpu::GpuBackend::new().await.expect("a WebGPU adapter in the test browser");
    let engine = LambdaEngine::load(gpu, &tiny_model_files(), &mut |_, _, _| {}).await.unwrap();
    heap_stays_flat(engine, "webgpu").await;
}

/// The same case on WebGPU with split-K forced on (every tiled product whose K holds two K-tiles runs as K
/// slices and the reduce), within the same bound. wgpu offers no subgroups in the browser, so the norms, the
/// softmax and the GEMV take the portable reductions here.
#[cfg(feature = "gpu")]
#[wasm_bindgen_test]
async fn cat_glasses_on_webgpu_with_split_k_forced_matches_golden_on_the_portable_reductions() {
    use lambda_eclipse::ops::gpu::{GpuBackend, GpuOptions};
    let options = GpuOptions { split_k: Some(true), ..GpuOptions::default() };
    let gpu = GpuBackend::with_options(options).await.expect("a WebGPU adapter in the test browser");
    assert_eq!(gpu.subgroup_sizes(), None, "wgpu 30 offers no subgroups on the web");
    web_sys_log(&format!("{}: CPU adapter {}", gpu.adapter_description(), gpu.is_cpu_adapter()));
    // A product of the tiny model's size is split: its slices and its reduce, two dispatches.
    use lambda_eclipse::ops::{Activation, Backend};
    let (x, w) =
        (gpu.from_f32(&[0.5; 77 * 64], &[77, 64]).unwrap(), gpu.from_f32(&[0.25; 32 * 64], &[32, 64]).unwrap());
    let before = gpu.bind_group_stats().dispatches;
    let y = gpu.linear(&x, &w, None, Activation::Identity).unwrap();
    assert_eq!(gpu.bind_group_stats().dispatches - before, 2, "split-K: slices + reduce");
    assert!(gpu.read_f32(&y).await.unwrap().iter().all(|v| *v == 8.0), "64 · 0.5 · 0.25 in every output");
    let engine = LambdaEngine::load(gpu, &tiny_model_files(), &mut |_, _, _| {}).await.unwrap();
    check_cat_glasses(&engine, 1e-3).await;
}
