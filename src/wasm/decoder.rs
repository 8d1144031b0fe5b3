//! The local decoder in JavaScript: `Decoder` loads the Kandinsky 2.2 decoder (UNet + MoVQ + scheduler)
//! through the same `ModelIo` as the λ model (streamed, cached, cancellable) and decodes image embeddings
//! to pictures with step progress and cancellation. `www/lib/worker.js` runs it in a decoder worker of its own.

use super::{get, js_err, set};
use crate::error::Error;
use crate::models::movq::is_decoder_tensor;
use crate::ops::cpu::CpuBackend;
use crate::ops::Backend;
use crate::pipeline::{DecodeRequest, DecoderEngine, DecoderNoise, LatentPreview, SchedulerKind};
use crate::timing::now_ms;
use crate::weights::http::{HttpFiles, ModelIo};
use js_sys::{Array, Float32Array, Function, Object, Uint8ClampedArray};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasm_bindgen::prelude::*;

/// The folders of a decoder (`kandinsky-2-2-decoder` layout); a manifest gives each its URL.
const DECODER_FOLDERS: [&str; 3] = ["unet", "movq", "scheduler"];

enum AnyDecoder {
    Cpu(DecoderEngine<CpuBackend>),
    #[cfg(feature = "gpu")]
    Gpu(DecoderEngine<crate::ops::gpu::GpuBackend>),
}

macro_rules! on_decoder {
    ($any:expr, $e:ident => $body:expr) => {
        match $any {
            AnyDecoder::Cpu($e) => $body,
            #[cfg(feature = "gpu")]
            AnyDecoder::Gpu($e) => $body,
        }
    };
}

/// An Error whose `name` is `AbortError` (what `fetch` and the load throw when cancelled), so callers tell a
/// cancel from a failure.
fn abort_error(message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name("AbortError");
    e.into()
}

fn decode_err(e: Error) -> JsValue {
    match e {
        Error::Cancelled => abort_error("decoding was cancelled"),
        other => js_err(other).into(),
    }
}

/// A non-negative integer field of the request (up to 2⁵³, what a JS number holds exactly), or its default
/// when absent.
fn integer_field(request: &JsValue, key: &str, default: u64) -> Result<u64, JsValue> {
    let v = get(request, key);
    if v.is_undefined() || v.is_null() {
        return Ok(default);
    }
    match v.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => Ok(n as u64),
        _ => Err(JsError::new(&format!("{key} must be a non-negative integer")).into()),
    }
}

/// A count or size field (steps, width, height): [`integer_field`] that must also fit this platform's usize.
fn count_field(request: &JsValue, key: &str, default: usize) -> Result<usize, JsValue> {
    let v = integer_field(request, key, default as u64)?;
    usize::try_from(v).map_err(|_| JsError::new(&format!("{key} = {v} is too large")).into())
}

/// RGB bytes as RGBA (opaque), what `ImageData` takes.
fn rgba_of(rgb: &[u8]) -> Uint8ClampedArray {
    let mut rgba = Vec::with_capacity(rgb.len() / 3 * 4);
    for px in rgb.chunks_exact(3) {
        rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
    }
    Uint8ClampedArray::from(rgba.as_slice())
}

fn f32_field(request: &JsValue, key: &str) -> Result<Option<Vec<f32>>, JsValue> {
    let v = get(request, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.dyn_ref::<Float32Array>().map(|a| Some(a.to_vec())).ok_or_else(|| JsError::new(&format!("{key} must be a Float32Array")).into())
}

fn preview_object(p: &LatentPreview) -> Result<Object, JsError> {
    let o = Object::new();
    set(&o, "width", p.width)?;
    set(&o, "height", p.height)?;
    set(&o, "rgba", rgba_of(&p.rgb))?;
    Ok(o)
}

/// A loaded Kandinsky 2.2 decoder (UNet, MoVQ's decoder half, scheduler config).
#[wasm_bindgen]
pub struct Decoder {
    inner: Rc<AnyDecoder>,
    /// Set by `cancel()`, checked before every step and before the MoVQ; cleared when a decode starts.
    cancel: AtomicBool,
    /// One decode at a time: a second would interleave with the first on the same device.
    busy: Cell<bool>,
    fallback_reason: Option<String>,
    /// How the weight matrices are kept (f32 on the CPU whatever was asked).
    weights: WeightChoice,
}

/// How the GPU keeps the decoder's weight matrices (`Decoder.load`'s `weights`). The CPU keeps f32 whatever
/// is asked: it computes in f32 and has no int8 storage, so int8 there would change the picture and save no
/// memory.
#[derive(Clone, Copy)]
enum WeightChoice {
    F16,
    Int8,
    F32,
}

impl WeightChoice {
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    fn apply<B: Backend>(self, be: B) -> B {
        match self {
            WeightChoice::F16 => be.with_f16_weights(),
            WeightChoice::Int8 => be.with_int8_weights(),
            WeightChoice::F32 => be,
        }
    }

    fn name(self) -> &'static str {
        match self {
            WeightChoice::F16 => "f16",
            WeightChoice::Int8 => "int8",
            WeightChoice::F32 => "f32",
        }
    }
}

/// Bytes of f32 weights above which the wasm CPU fallback refuses a decoder before downloading it: WebAssembly
/// memory ends at 4 GiB and decoding needs room for activations (the real UNet is 5 GB in f32).
const CPU_WEIGHT_LIMIT: u64 = 3 << 30;

#[wasm_bindgen]
impl Decoder {
    /// Loads the decoder whose folders are at the URLs of `manifest` (`{ unet, movq, scheduler }`, each a
    /// folder in the Hugging Face layout) through `io` (as `Engine.load`: `io.plan(files)` first, then
    /// `io.uploaded(component, done, total)` after each tensor). `backend`: `"auto"`, `"webgpu"` or `"cpu"`.
    /// `weights`: `"f16"` (default: f32 weight matrices kept as f16 on the GPU, half the memory, about 1e-3
    /// relative error), `"int8"` (quantised per output channel at load, a quarter of f32: the real UNet in
    /// 1.26 GB instead of 2.51) or `"f32"` (as stored; what parity with diffusers' float32 goldens needs); the
    /// CPU keeps f32 whatever is asked, and refuses (before any download) weights above 3 GiB as f32. The GPU
    /// device is opened with the adapter's own limits: the MoVQ at 512 px needs 256 MiB activations.
    pub async fn load(manifest: JsValue, backend: String, io: ModelIo, weights: Option<String>) -> Result<Decoder, JsError> {
        let files = super::files_of(&io, &manifest, &DECODER_FOLDERS, "decoder")?;
        let weights = match weights.as_deref() {
            None | Some("f16") => WeightChoice::F16,
            Some("int8") => WeightChoice::Int8,
            Some("f32") => WeightChoice::F32,
            Some(other) => return Err(JsError::new(&format!("weights must be \"f16\", \"int8\" or \"f32\", not \"{other}\""))),
        };
        // Configs first: a folder that is not a decoder fails before any weight, with its URL.
        let configs = crate::pipeline::DecoderConfigs::read(&files).await.map_err(js_err)?;
        // The MoVQ's encoder half is never loaded, so it is not in the plan.
        let keep = |component: &str, tensor: &str| component != "movq" || is_decoder_tensor(tensor);
        let components = [("unet", "diffusion_pytorch_model"), ("movq", "diffusion_pytorch_model")];
        let cpu_bytes = super::announce_plan(&io, &files, &components, keep).await;
        let mut progress = super::upload_progress(&io);
        let cpu = CpuBackend::new();
        async fn on_cpu(cpu: CpuBackend, cpu_bytes: Option<u64>, files: &HttpFiles, configs: crate::pipeline::DecoderConfigs,
            progress: crate::pipeline::Progress<'_>) -> Result<AnyDecoder, JsError> {
            if let Some(bytes) = cpu_bytes.filter(|&b| b > CPU_WEIGHT_LIMIT) {
                return Err(JsError::new(&format!(
                    "this decoder's weights take {:.2} GB as f32 on the CPU, more than the WebAssembly CPU fallback can \
                     hold (its memory ends at 4 GiB): decode it in a browser with WebGPU, or on an endpoint",
                    bytes as f64 / 1e9
                )));
            }
            Ok(AnyDecoder::Cpu(DecoderEngine::load_with(cpu, files, configs, progress).await.map_err(js_err)?))
        }
        let mut fallback_reason = None;
        let inner = match backend.as_str() {
            "cpu" => on_cpu(cpu, cpu_bytes, &files, configs, &mut progress).await?,
            #[cfg(feature = "gpu")]
            "webgpu" | "gpu" | "auto" => {
                use crate::ops::gpu::{GpuBackend, GpuOptions};
                match GpuBackend::with_options(GpuOptions { adapter_limits: true, ..Default::default() }).await {
                    Ok(gpu) => {
                        let gpu = weights.apply(gpu);
                        AnyDecoder::Gpu(DecoderEngine::load_with(gpu, &files, configs, &mut progress).await.map_err(js_err)?)
                    }
                    Err(e) if backend == "auto" => {
                        fallback_reason = Some(e.to_string());
                        on_cpu(cpu, cpu_bytes, &files, configs, &mut progress).await?
                    }
                    Err(e) => return Err(js_err(e)),
                }
            }
            #[cfg(not(feature = "gpu"))]
            "auto" => {
                fallback_reason = Some("this build has no WebGPU backend".into());
                on_cpu(cpu, cpu_bytes, &files, configs, &mut progress).await?
            }
            other => return Err(JsError::new(&format!("backend must be \"auto\", \"webgpu\" or \"cpu\", not \"{other}\""))),
        };
        let weights = if matches!(inner, AnyDecoder::Cpu(_)) { WeightChoice::F32 } else { weights };
        Ok(Decoder { inner: Rc::new(inner), cancel: AtomicBool::new(false), busy: Cell::new(false), fallback_reason, weights })
    }

    /// `"cpu"` or `"webgpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        on_decoder!(&*self.inner, e => match e.backend.name() { "cpu" => "cpu", _ => "webgpu" }).to_string()
    }

    /// How the weight matrices are kept: `"f16"`, `"int8"` or `"f32"` (always `"f32"` on the CPU).
    #[wasm_bindgen(getter)]
    pub fn weights(&self) -> String {
        self.weights.name().to_string()
    }

    /// Why `auto` fell back to the CPU, if it did.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback_reason.clone()
    }

    /// The WebGPU adapter in words, or undefined on the CPU.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        match &*self.inner {
            AnyDecoder::Cpu(_) => None,
            #[cfg(feature = "gpu")]
            AnyDecoder::Gpu(e) => Some(e.backend.adapter_description()),
        }
    }

    /// Width of the image embeddings the UNet takes (1280 for the real decoder).
    #[wasm_bindgen(getter, js_name = embeddingDim)]
    pub fn embedding_dim(&self) -> usize {
        on_decoder!(&*self.inner, e => e.embedding_dim())
    }

    /// Image pixels per latent along a side (8 for the real MoVQ).
    #[wasm_bindgen(getter, js_name = latentScale)]
    pub fn latent_scale(&self) -> usize {
        on_decoder!(&*self.inner, e => e.latent_scale())
    }

    /// Image sides must be multiples of this (64 for the real decoder).
    #[wasm_bindgen(getter, js_name = sizeMultiple)]
    pub fn size_multiple(&self) -> usize {
        on_decoder!(&*self.inner, e => e.configs.size_multiple())
    }

    /// The sampler `scheduler_config.json` names: `"ddpm"`, `"ddim"` or `"dpmpp"`.
    #[wasm_bindgen(getter, js_name = defaultScheduler)]
    pub fn default_scheduler(&self) -> String {
        on_decoder!(&*self.inner, e => scheduler_id(e.configs.default_scheduler)).to_string()
    }

    /// Stops the running decode before its next step (or before the MoVQ): it rejects with an AbortError.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Decodes an embedding. `request`: `{ imageEmbeds: Float32Array [D], negativeImageEmbeds?: Float32Array
    /// [D] (needed when guidance > 1), seed?: integer (default 0), steps? (50), guidance? (4), width?, height?
    /// (512; multiples of sizeMultiple), scheduler?: "ddpm" | "ddim" | "dpmpp" (default: the config's),
    /// noise?: { initialLatents: Float32Array [1, C, h, w], stepNoise?: Float32Array [steps, 1, C, h, w]
    /// (DDPM) } }` — `noise` replaces the seed with given draws, in the layout of the golden files and the
    /// CLI's `--noise`. `onStep({ step, total, msPerStep, preview: { width, height, rgba } })` after every
    /// step (preview: the latents' first three channels at latent resolution). Resolves `{ width, height,
    /// rgba: Uint8ClampedArray, steps, scheduler, stepMs: number[], msPerStep, movqMs, seconds }`; rejects
    /// with an AbortError after `cancel()`, else an Error in words.
    pub async fn decode(&self, request: JsValue, step_callback: Option<Function>) -> Result<JsValue, JsValue> {
        if self.busy.get() {
            return Err(JsError::new("this decoder is already decoding: wait for it or cancel it").into());
        }
        let req = self.request(&request)?;
        self.busy.set(true);
        self.cancel.store(false, Ordering::Relaxed);
        let inner = self.inner.clone();
        let t0 = now_ms();
        let mut last = t0;
        let mut on_step = |step: usize, total: usize, preview: &LatentPreview| {
            let Some(f) = &step_callback else { return };
            let now = now_ms();
            let info = Object::new();
            let built = (|| {
                set(&info, "step", step)?;
                set(&info, "total", total)?;
                set(&info, "msPerStep", now - last)?;
                set(&info, "preview", preview_object(preview)?)
            })();
            last = now;
            if built.is_ok() {
                let _ = f.call1(&JsValue::NULL, &info);
            }
        };
        let result = on_decoder!(&*inner, e => e.decode(&req, &mut on_step, &self.cancel).await);
        self.busy.set(false);
        let r = result.map_err(decode_err)?;
        let steps = r.timesteps.len();
        let step_ms: Vec<f64> = r.timings.iter().take(steps).map(|(_, ms)| *ms).collect();
        let movq_ms = r.timings.get(steps).map_or(0.0, |(_, ms)| *ms);
        let out = Object::new();
        set(&out, "width", r.width)?;
        set(&out, "height", r.height)?;
        set(&out, "rgba", rgba_of(&r.rgb))?;
        set(&out, "steps", steps)?;
        set(&out, "scheduler", scheduler_id(r.scheduler))?;
        set(&out, "msPerStep", if steps > 0 { step_ms.iter().sum::<f64>() / steps as f64 } else { 0.0 })?;
        set(&out, "stepMs", step_ms.iter().map(|&ms| JsValue::from(ms)).collect::<Array>())?;
        set(&out, "movqMs", movq_ms)?;
        set(&out, "seconds", (now_ms() - t0) / 1000.0)?;
        Ok(out.into())
    }

    /// The request object as a [`DecodeRequest`] (checked further by the engine).
    fn request(&self, request: &JsValue) -> Result<DecodeRequest, JsValue> {
        let image_embeds = f32_field(request, "imageEmbeds")?.ok_or_else(|| JsError::new("imageEmbeds (a Float32Array) is required"))?;
        let negative = f32_field(request, "negativeImageEmbeds")?.unwrap_or_default();
        let noise = match get(request, "noise") {
            n if n.is_undefined() || n.is_null() => DecoderNoise::Seed(integer_field(request, "seed", 0)?),
            n => DecoderNoise::Explicit {
                initial_latents: f32_field(&n, "initialLatents")?.ok_or_else(|| JsError::new("noise.initialLatents (a Float32Array) is required"))?,
                step_noise: f32_field(&n, "stepNoise")?,
            },
        };
        let mut req = DecodeRequest::new(image_embeds, negative, noise);
        req.steps = count_field(request, "steps", req.steps)?;
        req.width = count_field(request, "width", req.width)?;
        req.height = count_field(request, "height", req.height)?;
        let guidance = get(request, "guidance");
        if !guidance.is_undefined() && !guidance.is_null() {
            req.guidance = guidance.as_f64().ok_or_else(|| JsError::new("guidance must be a number"))? as f32;
        }
        let scheduler = get(request, "scheduler");
        if let Some(name) = scheduler.as_string().filter(|s| !s.is_empty()) {
            req.scheduler = Some(name.parse::<SchedulerKind>().map_err(js_err)?);
        } else if !scheduler.is_undefined() && !scheduler.is_null() && scheduler.as_string().is_none() {
            return Err(JsError::new("scheduler must be \"ddpm\", \"ddim\" or \"dpmpp\"").into());
        }
        Ok(req)
    }
}

/// The short name the API uses for a sampler.
fn scheduler_id(kind: SchedulerKind) -> &'static str {
    match kind {
        SchedulerKind::Ddpm => "ddpm",
        SchedulerKind::Ddim => "ddim",
        SchedulerKind::DpmSolverPP => "dpmpp",
    }
}
