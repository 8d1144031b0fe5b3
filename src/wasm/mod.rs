//! The JavaScript API (wasm32). Errors cross the boundary as JS `Error`s carrying the engine's message;
//! panics are routed to the console and never unwind into JS. The ES module `www/lib/lambda-eclipse.js` wraps
//! this in Web Workers with the documented `load()` / `engine.prior()` contract.
//!
//! - `engine.rs`: `Engine`, the λ model (`load`, `embedText`, `embedImages`, `prior`, `matchKeywords`);
//! - `decoder.rs`: `Decoder`, the local Kandinsky decoder (`loadDecoder()` / `decoder.decode()`);
//! - `load.rs`: loading through the page's `ModelIo` (manifest, weight plan, upload progress);
//! - `convert.rs`: the typed boundary — requests deserialized into structs, results serialized from structs,
//!   number arrays as typed arrays;
//! - here: the model-free tools (`inspectImage`, `cannyPreview`, `interpolateGrid`) and `benchmark`.
//!
//! Which backend computes is decided by `ops::choice` (`BackendChoice`, `WeightStorage`); the engines hold an
//! `AnyBackend`, so nothing here depends on the `gpu` feature.

mod convert;
mod decoder;
mod engine;
mod load;

pub use decoder::Decoder;
pub use engine::Engine;

use crate::ops::choice::GPU_BUILT;
use crate::ops::gpu::GpuOptions;
use crate::ops::{Backend, BackendChoice};
use crate::pipeline;
use convert::{from_js, js_err, to_js, Bytes, F32s, Rgba};
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Crate version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Whether this build includes the WebGPU backend.
#[wasm_bindgen(js_name = hasWebGpuBackend)]
pub fn has_webgpu_backend() -> bool {
    GPU_BUILT
}

#[derive(Serialize)]
struct ImageSize {
    width: u32,
    height: u32,
}

/// Checks that the bytes of an image file decode as the engine will decode a subject photo (PNG, JPEG, WebP,
/// GIF or BMP within the decode limits): `{ width, height }`, or an Error saying what is wrong with the file.
/// Needs no model.
#[wasm_bindgen(js_name = inspectImage)]
pub fn inspect_image(bytes: &[u8]) -> Result<JsValue, JsError> {
    let rgb =
        crate::image::decode::decode_rgb(bytes, &crate::image::decode::DecodeLimits::default()).map_err(js_err)?;
    to_js(&ImageSize { width: rgb.width(), height: rgb.height() })
}

#[derive(Serialize)]
struct CannyPreview {
    width: u32,
    height: u32,
    edges: Bytes,
    rgba: Rgba,
}

/// The edge map the engine derives from an edge-control image (OpenCV-exact grayscale and Canny, the same
/// code and limits as the pipeline): `{ width, height, edges: Uint8Array (0 | 255 per pixel), rgba:
/// Uint8ClampedArray (for an ImageData) }`. Needs no model.
#[wasm_bindgen(js_name = cannyPreview)]
pub fn canny_preview(bytes: &[u8], low: f64, high: f64) -> Result<JsValue, JsError> {
    let edges = pipeline::lambda::control_edges(bytes, low, high, &crate::image::decode::DecodeLimits::default())
        .map_err(js_err)?;
    let (width, height) = edges.dimensions();
    let gray = edges.into_raw();
    let rgba = Rgba::from_gray(&gray);
    to_js(&CannyPreview { width, height, edges: Bytes(gray), rgba })
}

/// The bilinear grid between four corner embeddings (`[topLeft, topRight, bottomLeft, bottomRight]`, equal
/// length Float32Arrays), exactly as the reference interpolates (see `pipeline::interpolate`): `(steps+1)²`
/// Float32Arrays, row-major; row i blends top → bottom at i/steps, column j left → right at j/steps.
#[wasm_bindgen(js_name = interpolateGrid)]
pub fn interpolate_grid(corners: JsValue, steps: f64) -> Result<JsValue, JsError> {
    use pipeline::interpolate::MAX_STEPS;
    if !(steps >= 1.0 && steps <= MAX_STEPS as f64 && steps.fract() == 0.0) {
        return Err(JsError::new(&format!("steps must be an integer from 1 to {MAX_STEPS}, not {steps}")));
    }
    let corners: Vec<F32s> = from_js(corners, "interpolation corners")?;
    let [a, b, c, d] = &corners[..] else {
        return Err(JsError::new(&format!("interpolation needs 4 corner embeddings, got {}", corners.len())));
    };
    let grid = pipeline::interpolate::bilinear_grid(&a.0, &b.0, &c.0, &d.0, steps as usize).map_err(js_err)?;
    to_js(&grid.into_iter().map(F32s).collect::<Vec<_>>())
}

/// Benchmarks in the browser (`www/app/bench.html`): the same measurements as `lambda-eclipse bench`.
/// `backend`: `"webgpu"` or `"cpu"`; `what`: `"matmul:M,K,N"`, `"text"`, `"vision"` or `"prior"`;
/// `dtype`: `"f32"`, `"f16"`, `"q8_0"` or `"q4_0"` (ggml blocks, as a quantized folder holds them). Returns
/// GFLOP/s for a matmul, milliseconds for a model.
#[wasm_bindgen(js_name = benchmark)]
pub async fn benchmark(backend: String, what: String, dtype: String, iters: usize) -> Result<f64, JsError> {
    use crate::bench::{forward_ms, matmul_gflops, Model};
    use crate::ops::WeightDType;
    let dtype = match dtype.as_str() {
        "f32" => WeightDType::F32,
        "f16" => WeightDType::F16,
        "q8_0" => WeightDType::Q8_0,
        "q4_0" => WeightDType::Q4_0,
        other => return Err(JsError::new(&format!("dtype must be f32, f16, q8_0 or q4_0, not {other}"))),
    };
    // A benchmark measures the backend it names: no `auto`.
    let choice = match backend.as_str() {
        "cpu" => BackendChoice::Cpu,
        "webgpu" => BackendChoice::Gpu,
        other => return Err(JsError::new(&format!("backend must be \"webgpu\" or \"cpu\", not {other:?}"))),
    };
    let be = choice.open(GpuOptions::default()).await.map_err(js_err)?.backend;
    async fn run<B: Backend>(be: &B, what: &str, dtype: WeightDType, iters: usize) -> Result<f64, JsError> {
        let model = match what {
            "text" => Model::TextTower,
            "vision" => Model::VisionTower,
            "prior" => Model::Prior,
            m => {
                let dims: Vec<usize> =
                    m.strip_prefix("matmul:").unwrap_or("").split(',').filter_map(|d| d.trim().parse().ok()).collect();
                let [mm, k, n] = dims[..] else {
                    return Err(JsError::new(&format!(
                        "unknown benchmark {m:?} (matmul:M,K,N, text, vision or prior)"
                    )));
                };
                return matmul_gflops(be, (mm, k, n), dtype, iters).await.map_err(js_err);
            }
        };
        forward_ms(be, model, dtype, iters).await.map_err(js_err)
    }
    run(&be, &what, dtype, iters).await
}
