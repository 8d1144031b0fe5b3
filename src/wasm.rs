//! The JavaScript API (wasm32). Errors cross the boundary as JS `Error`s carrying the engine's message;
//! panics are routed to the console and never unwind into JS. The ES module `www/lib/lambda-eclipse.js` wraps
//! this in a Web Worker with the documented `load()` / `engine.prior()` contract; `decoder` is the local
//! Kandinsky decoder (`loadDecoder()` / `decoder.decode()`).

use crate::error::Error;
use crate::ops::cpu::CpuBackend;
use crate::ops::Backend;
use crate::pipeline::lambda::Noise;
use crate::pipeline::{self, LambdaEngine, PriorRequest, Subject};
use crate::weights::http::{HttpFiles, ModelIo};
use crate::weights::{open_component, ModelFiles};
use js_sys::{Array, Float32Array, Function, Object, Reflect, Uint8Array};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

mod decoder;
pub use decoder::Decoder;

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
    cfg!(feature = "gpu")
}

/// Checks that the bytes of an image file decode as the engine will decode a subject photo (PNG, JPEG, WebP,
/// GIF or BMP within the decode limits): `{ width, height }`, or an Error saying what is wrong with the file.
/// Needs no model.
#[wasm_bindgen(js_name = inspectImage)]
pub fn inspect_image(bytes: &[u8]) -> Result<JsValue, JsError> {
    let rgb = crate::image::decode::decode_rgb(bytes, &crate::image::decode::DecodeLimits::default()).map_err(js_err)?;
    let out = Object::new();
    set(&out, "width", rgb.width())?;
    set(&out, "height", rgb.height())?;
    Ok(out.into())
}

/// The edge map the engine derives from an edge-control image (OpenCV-exact grayscale and Canny, the same
/// code and limits as the pipeline): `{ width, height, edges: Uint8Array (0 | 255 per pixel), rgba:
/// Uint8ClampedArray (for an ImageData) }`. Needs no model.
#[wasm_bindgen(js_name = cannyPreview)]
pub fn canny_preview(bytes: &[u8], low: f64, high: f64) -> Result<JsValue, JsError> {
    let edges = pipeline::lambda::control_edges(bytes, low, high, &crate::image::decode::DecodeLimits::default()).map_err(js_err)?;
    let (w, h) = edges.dimensions();
    let gray = edges.into_raw();
    let mut rgba = Vec::with_capacity(gray.len() * 4);
    for &v in &gray {
        rgba.extend_from_slice(&[v, v, v, 255]);
    }
    let out = Object::new();
    set(&out, "width", w)?;
    set(&out, "height", h)?;
    set(&out, "edges", Uint8Array::from(gray.as_slice()))?;
    set(&out, "rgba", js_sys::Uint8ClampedArray::from(rgba.as_slice()))?;
    Ok(out.into())
}

/// The bilinear grid between four corner embeddings (`[topLeft, topRight, bottomLeft, bottomRight]`, equal
/// length Float32Arrays), exactly as the reference interpolates (see `pipeline::interpolate`): `(steps+1)²`
/// Float32Arrays, row-major; row i blends top → bottom at i/steps, column j left → right at j/steps.
#[wasm_bindgen(js_name = interpolateGrid)]
pub fn interpolate_grid(corners: Array, steps: f64) -> Result<Array, JsError> {
    use pipeline::interpolate::MAX_STEPS;
    if !(steps >= 1.0 && steps <= MAX_STEPS as f64 && steps.fract() == 0.0) {
        return Err(JsError::new(&format!("steps must be an integer from 1 to {MAX_STEPS}, not {steps}")));
    }
    if corners.length() != 4 {
        return Err(JsError::new(&format!("interpolation needs 4 corner embeddings, got {}", corners.length())));
    }
    let names = ["top-left", "top-right", "bottom-left", "bottom-right"];
    let mut c = Vec::with_capacity(4);
    for (i, v) in corners.iter().enumerate() {
        let a = v.dyn_ref::<Float32Array>().ok_or_else(|| JsError::new(&format!("the {} corner must be a Float32Array", names[i])))?;
        c.push(a.to_vec());
    }
    let grid = pipeline::interpolate::bilinear_grid(&c[0], &c[1], &c[2], &c[3], steps as usize).map_err(js_err)?;
    Ok(grid.iter().map(|v| JsValue::from(f32s(v))).collect())
}

/// The folders of a model, each given its own URL by the manifest.
const MODEL_FOLDERS: [&str; 5] = ["tokenizer", "text_encoder", "image_encoder", "image_processor", "prior"];

/// Every weight file of `components` (`(folder, file stem)`) with the bytes of the tensors that will be
/// loaded (those `keep(component, tensor)` accepts), in loading order: `[{ component, file, url, bytes }]`;
/// and the bytes those tensors take as f32 (what the CPU backend holds).
async fn weight_plan<F: ModelFiles>(files: &F, components: &[(&str, &str)], keep: fn(&str, &str) -> bool)
    -> crate::Result<(Array, u64)> {
    use crate::weights::ByteSource;
    let out = Array::new();
    let mut f32_bytes = 0u64;
    for &(component, stem) in components {
        let (_, weight_files) = open_component(files, component, stem).await?;
        for wf in weight_files {
            let bytes = wf.tensor_bytes_where(|tensor| keep(component, tensor));
            f32_bytes += wf.header.tensors.iter().filter(|t| keep(component, &t.name)).map(|t| 4 * t.shape.iter().product::<usize>() as u64).sum::<u64>();
            let o = Object::new();
            let entries: [(&str, JsValue); 4] = [
                ("component", component.into()),
                ("file", wf.path.as_str().into()),
                ("url", wf.source.name().into()),
                ("bytes", (bytes as f64).into()),
            ];
            for (k, v) in entries {
                let _ = Reflect::set(&o, &JsValue::from_str(k), &v);
            }
            out.push(&o);
        }
    }
    Ok((out, f32_bytes))
}

/// The model files behind a manifest `{ folder: URL }` read through `io`; `what` names the manifest in errors.
pub(crate) fn files_of(io: &ModelIo, manifest: &JsValue, folders: &[&str], what: &str) -> Result<HttpFiles, JsError> {
    let mut files = HttpFiles::new(io.clone());
    for &folder in folders {
        let url = get(manifest, folder).as_string().filter(|u| !u.is_empty()).ok_or_else(|| {
            JsError::new(&format!("{what} manifest: `{folder}` must be the URL of the folder that holds its files"))
        })?;
        files = files.with_folder(folder, &url);
    }
    Ok(files)
}

/// Hands the weight plan to `io.plan` and returns the bytes the weights take as f32. The plan reads the
/// weight headers (the loader keeps them for the load proper); when it fails, the load itself reports the
/// same problem in its usual order, so the error is dropped here (`None`).
pub(crate) async fn announce_plan(io: &ModelIo, files: &HttpFiles, components: &[(&str, &str)], keep: fn(&str, &str) -> bool)
    -> Option<u64> {
    let (plan, f32_bytes) = weight_plan(files, components, keep).await.ok()?;
    if let Some(f) = get(io, "plan").dyn_ref::<Function>() {
        let _ = f.call1(io, &plan);
    }
    Some(f32_bytes)
}

/// After each tensor upload: `io.uploaded(component, bytesDone, bytesTotal)`, so the page can tell "all
/// weights are on the device, the engine is finishing" from "still downloading".
pub(crate) fn upload_progress(io: &ModelIo) -> impl FnMut(&str, u64, u64) + '_ {
    let uploaded = get(io, "uploaded").dyn_into::<Function>().ok();
    move |component: &str, done: u64, total: u64| {
        if let Some(f) = &uploaded {
            let _ = f.call3(io, &JsValue::from_str(component), &JsValue::from_f64(done as f64), &JsValue::from_f64(total as f64));
        }
    }
}

/// The engine on the backend chosen at load time.
enum AnyEngine {
    Cpu(LambdaEngine<CpuBackend>),
    #[cfg(feature = "gpu")]
    Gpu(LambdaEngine<crate::ops::gpu::GpuBackend>),
}

/// Runs `$body` with `$e` bound to the concrete `LambdaEngine`.
macro_rules! on_engine {
    ($any:expr, $e:ident => $body:expr) => {
        match $any {
            AnyEngine::Cpu($e) => $body,
            #[cfg(feature = "gpu")]
            AnyEngine::Gpu($e) => $body,
        }
    };
}

fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) -> Result<(), JsError> {
    Reflect::set(obj, &JsValue::from_str(key), &value.into()).map(|_| ()).map_err(|_| JsError::new("cannot build the result object"))
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn f32s(v: &[f32]) -> Float32Array {
    Float32Array::from(v)
}

fn bytes_of(v: &JsValue, what: &str) -> Result<Vec<u8>, JsError> {
    v.dyn_ref::<Uint8Array>().map(|a| a.to_vec()).ok_or_else(|| JsError::new(&format!("{what} must be a Uint8Array of the file's bytes")))
}

/// A loaded λ-ECLIPSE model (tokenizer, CLIP towers, prior).
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<AnyEngine>,
    /// Why WebGPU was not used when `auto` fell back to the CPU.
    fallback_reason: Option<String>,
}

#[wasm_bindgen]
impl Engine {
    /// Loads the model whose component folders are at the URLs of `manifest` (`{ tokenizer, text_encoder,
    /// image_encoder, image_processor, prior }`, each a folder in the Hugging Face layout) through `io`, the
    /// page's loader (`ModelReader` of `www/lib/model-reader.js`: Range requests, browser cache, progress,
    /// cancellation). Before the weights, `io.plan([{ component, file, url, bytes }])` receives every weight
    /// file with its tensor bytes; after each tensor upload, `io.uploaded(component, done, total)`.
    /// `backend`: `"auto"` (WebGPU when an adapter exists, else the CPU), `"webgpu"` or `"cpu"`.
    pub async fn load(manifest: JsValue, backend: String, io: ModelIo) -> Result<Engine, JsError> {
        let files = files_of(&io, &manifest, &MODEL_FOLDERS, "model")?;
        const COMPONENTS: [(&str, &str); 3] = [("text_encoder", "model"), ("image_encoder", "model"), ("prior", "diffusion_pytorch_model")];
        announce_plan(&io, &files, &COMPONENTS, |_, _| true).await;
        let mut progress = upload_progress(&io);
        let mut fallback_reason = None;
        let inner = match backend.as_str() {
            "cpu" => AnyEngine::Cpu(LambdaEngine::load(CpuBackend::new(), &files, &mut progress).await.map_err(js_err)?),
            #[cfg(feature = "gpu")]
            "webgpu" | "gpu" | "auto" => match crate::ops::gpu::GpuBackend::new().await {
                Ok(gpu) => AnyEngine::Gpu(LambdaEngine::load(gpu, &files, &mut progress).await.map_err(js_err)?),
                Err(e) if backend == "auto" => {
                    fallback_reason = Some(e.to_string());
                    AnyEngine::Cpu(LambdaEngine::load(CpuBackend::new(), &files, &mut progress).await.map_err(js_err)?)
                }
                Err(e) => return Err(js_err(e)),
            },
            #[cfg(not(feature = "gpu"))]
            "auto" => {
                fallback_reason = Some("this build has no WebGPU backend".into());
                AnyEngine::Cpu(LambdaEngine::load(CpuBackend::new(), &files, &mut progress).await.map_err(js_err)?)
            }
            other => return Err(JsError::new(&format!("backend must be \"auto\", \"webgpu\" or \"cpu\", not \"{other}\""))),
        };
        Ok(Engine { inner: Rc::new(inner), fallback_reason })
    }

    /// `"cpu"` or `"webgpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        on_engine!(&*self.inner, e => match e.backend.name() { "cpu" => "cpu", _ => "webgpu" }).to_string()
    }

    /// Why `auto` fell back to the CPU (no WebGPU, no adapter), if it did.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback_reason.clone()
    }

    /// The WebGPU adapter in words (e.g. "SwiftShader Device (Vulkan)"), or undefined on the CPU.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        match &*self.inner {
            AnyEngine::Cpu(_) => None,
            #[cfg(feature = "gpu")]
            AnyEngine::Gpu(e) => Some(e.backend.adapter_description()),
        }
    }

    /// For each keyword, whether the pipeline will find it in `prompt` and which characters its subject
    /// replaces: `[{ found, empty, spans: [[start, end], …] }]`, offsets in UTF-16 code units (JS string
    /// indices). Only the tokenizer runs: cheap.
    #[wasm_bindgen(js_name = matchKeywords)]
    pub fn match_keywords(&self, prompt: String, keywords: Array) -> Result<Array, JsError> {
        let mut kws = Vec::new();
        for (i, k) in keywords.iter().enumerate() {
            kws.push(k.as_string().ok_or_else(|| JsError::new(&format!("keyword {} must be a string", i + 1)))?);
        }
        let matches = on_engine!(&*self.inner, e => e.keyword_matches(&prompt, &kws)).map_err(js_err)?;
        // Character index → UTF-16 index.
        let mut utf16_at = Vec::with_capacity(prompt.len() + 1);
        let mut u = 0u32;
        for c in prompt.chars() {
            utf16_at.push(u);
            u += c.len_utf16() as u32;
        }
        utf16_at.push(u);
        let at = |i: usize| utf16_at.get(i).copied().unwrap_or(u);
        let out = Array::new();
        for m in matches {
            let o = Object::new();
            set(&o, "found", m.found)?;
            set(&o, "empty", m.empty)?;
            let spans: Array = m.spans.iter().map(|&(s, e)| JsValue::from(Array::of2(&at(s).into(), &at(e).into()))).collect();
            set(&o, "spans", spans)?;
            out.push(&o);
        }
        Ok(out)
    }

    /// Embedding width (1280 for the real model).
    #[wasm_bindgen(getter, js_name = embeddingDim)]
    pub fn embedding_dim(&self) -> usize {
        on_engine!(&*self.inner, e => e.embedding_dim())
    }

    /// `{ inputIds, attentionMask, textEmbeds, lastHiddenState, truncated }`.
    #[wasm_bindgen(js_name = embedText)]
    pub async fn embed_text(&self, prompt: String) -> Result<JsValue, JsError> {
        let inner = self.inner.clone();
        let t = on_engine!(&*inner, e => pipeline::embed_text(&e.backend, &e.tokenizer, &e.text, &prompt).await).map_err(js_err)?;
        let out = Object::new();
        set(&out, "inputIds", js_sys::Int32Array::from(t.encoded.input_ids.iter().map(|&x| x as i32).collect::<Vec<_>>().as_slice()))?;
        set(&out, "attentionMask", js_sys::Int32Array::from(t.encoded.attention_mask.iter().map(|&x| x as i32).collect::<Vec<_>>().as_slice()))?;
        set(&out, "textEmbeds", f32s(&t.text_embeds))?;
        set(&out, "lastHiddenState", f32s(&t.last_hidden_state))?;
        set(&out, "truncated", t.encoded.truncated)?;
        Ok(out.into())
    }

    /// Image embeddings of encoded image files: `{ imageEmbeds: Float32Array[] }`.
    #[wasm_bindgen(js_name = embedImages)]
    pub async fn embed_images(&self, images: Array) -> Result<JsValue, JsError> {
        let inner = self.inner.clone();
        let embeds = Array::new();
        for (i, img) in images.iter().enumerate() {
            let bytes = bytes_of(&img, &format!("image {}", i + 1))?;
            let v = on_engine!(&*inner, e => e.subject_embedding(&bytes).await)
                .map_err(|err| JsError::new(&format!("image {}: {err}", i + 1)))?;
            embeds.push(&f32s(&v));
        }
        let out = Object::new();
        set(&out, "imageEmbeds", embeds)?;
        Ok(out.into())
    }

    /// The whole pipeline. `request` = `{ prompt, subjects: [{ keyword, image: Uint8Array }], control?:
    /// Uint8Array, seed?: number, noise?: Float32Array, cannyLow?, cannyHigh? }` →
    /// `{ imageEmbeds, negativeImageEmbeds, encoderHiddenStates, controlEmbeds, textEmbeds, noise, warnings:
    /// string[], timings: {stage: ms}, cannyEdges? }`.
    pub async fn prior(&self, request: JsValue) -> Result<JsValue, JsError> {
        let inner = self.inner.clone();
        let prompt = get(&request, "prompt").as_string().ok_or_else(|| JsError::new("prompt must be a string"))?;
        let noise_v = get(&request, "noise");
        let noise = if let Some(arr) = noise_v.dyn_ref::<Float32Array>() {
            Noise::Explicit(arr.to_vec())
        } else {
            let seed = get(&request, "seed").as_f64().unwrap_or(0.0);
            if !(seed >= 0.0 && seed.fract() == 0.0 && seed <= 9_007_199_254_740_991.0) {
                return Err(JsError::new("seed must be a non-negative integer"));
            }
            Noise::Seed(seed as u64)
        };
        let mut req = PriorRequest::new(prompt, noise);
        if let Some(low) = get(&request, "cannyLow").as_f64() {
            req.canny_low = low;
        }
        if let Some(high) = get(&request, "cannyHigh").as_f64() {
            req.canny_high = high;
        }
        let subjects = get(&request, "subjects");
        if !subjects.is_undefined() && !subjects.is_null() {
            let subjects: Array = subjects.dyn_into().map_err(|_| JsError::new("subjects must be an array"))?;
            for (i, s) in subjects.iter().enumerate() {
                let keyword = get(&s, "keyword").as_string().ok_or_else(|| JsError::new(&format!("subject {}: keyword must be a string", i + 1)))?;
                let image = bytes_of(&get(&s, "image"), &format!("subject {} image", i + 1))?;
                req.subjects.push(Subject { keyword, image });
            }
        }
        let control = get(&request, "control");
        if !control.is_undefined() && !control.is_null() {
            req.control = Some(bytes_of(&control, "control")?);
        }
        let r = on_engine!(&*inner, e => e.run(&req).await).map_err(js_err)?;
        let out = Object::new();
        set(&out, "imageEmbeds", f32s(&r.image_embeds))?;
        set(&out, "negativeImageEmbeds", f32s(&r.negative_image_embeds))?;
        set(&out, "encoderHiddenStates", f32s(&r.encoder_hidden_states))?;
        set(&out, "controlEmbeds", f32s(&r.control_embeds))?;
        set(&out, "textEmbeds", f32s(&r.text_embeds))?;
        set(&out, "noise", f32s(&r.noise))?;
        let warnings = Array::new();
        for w in &r.warnings {
            warnings.push(&JsValue::from_str(&w.to_string()));
        }
        set(&out, "warnings", warnings)?;
        let timings = Object::new();
        for (stage, ms) in &r.timings {
            set(&timings, stage, *ms)?;
        }
        set(&out, "timings", timings)?;
        if let Some((w, h, edges)) = r.canny_edges {
            let c = Object::new();
            set(&c, "width", w)?;
            set(&c, "height", h)?;
            set(&c, "data", Uint8Array::from(edges.as_slice()))?;
            set(&out, "cannyEdges", c)?;
        }
        Ok(out.into())
    }
}

/// Benchmarks in the browser (`www/app/bench.html`): the same measurements as `lambda-eclipse bench`.
/// `backend`: `"webgpu"` or `"cpu"`; `what`: `"matmul:M,K,N"`, `"text"`, `"vision"` or `"prior"`;
/// `dtype`: `"f32"` or `"f16"`. Returns GFLOP/s for a matmul, milliseconds for a model.
#[wasm_bindgen(js_name = benchmark)]
pub async fn benchmark(backend: String, what: String, dtype: String, iters: usize) -> Result<f64, JsError> {
    use crate::bench::{forward_ms, matmul_gflops, Model};
    use crate::ops::WeightDType;
    let dtype = match dtype.as_str() {
        "f32" => WeightDType::F32,
        "f16" => WeightDType::F16,
        other => return Err(JsError::new(&format!("dtype must be f32 or f16, not {other}"))),
    };
    async fn run<B: Backend>(be: &B, what: &str, dtype: WeightDType, iters: usize) -> Result<f64, JsError> {
        let model = match what {
            "text" => Model::TextTower,
            "vision" => Model::VisionTower,
            "prior" => Model::Prior,
            m => {
                let dims: Vec<usize> = m.strip_prefix("matmul:").unwrap_or("").split(',').filter_map(|d| d.trim().parse().ok()).collect();
                let [mm, k, n] = dims[..] else {
                    return Err(JsError::new(&format!("unknown benchmark {m:?} (matmul:M,K,N, text, vision or prior)")));
                };
                return matmul_gflops(be, (mm, k, n), dtype, iters).await.map_err(js_err);
            }
        };
        forward_ms(be, model, dtype, iters).await.map_err(js_err)
    }
    match backend.as_str() {
        "cpu" => run(&CpuBackend::new(), &what, dtype, iters).await,
        #[cfg(feature = "gpu")]
        "webgpu" => run(&crate::ops::gpu::GpuBackend::new().await.map_err(js_err)?, &what, dtype, iters).await,
        other => Err(JsError::new(&format!("backend {other:?} is not available in this build"))),
    }
}
