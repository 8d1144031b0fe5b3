//! The local decoder in JavaScript: `Decoder` loads the Kandinsky 2.2 decoder (UNet + MoVQ + scheduler)
//! through the same `ModelIo` as the λ model (streamed, cached, cancellable) and decodes image embeddings
//! to pictures with step progress and cancellation. `www/lib/worker.js` runs it in a decoder worker of its own.

use super::convert::{count, from_js, js_err, to_js, whole_number, F32s, Rgba};
use super::load::{announce_plan, files_of, upload_progress};
use crate::error::Error;
use crate::models::movq::is_decoder_tensor;
use crate::ops::gpu::GpuOptions;
use crate::ops::{AnyBackend, BackendChoice, WeightStorage};
use crate::pipeline::{DecodeRequest, DecoderConfigs, DecoderEngine, DecoderNoise, LatentPreview, SchedulerKind};
use crate::timing::now_ms;
use crate::weights::http::ModelIo;
use js_sys::Function;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasm_bindgen::prelude::*;

/// The URL of each folder of a decoder (`kandinsky-2-2-decoder` layout; `resolveDecoderManifest`).
#[derive(Deserialize)]
struct DecoderManifest {
    unet: Option<String>,
    movq: Option<String>,
    scheduler: Option<String>,
}

/// `decode`'s request (`decoder.decode(...)` in `www/lib/lambda-eclipse.js`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecodeRequestJs {
    image_embeds: Option<F32s>,
    negative_image_embeds: Option<F32s>,
    seed: Option<f64>,
    steps: Option<f64>,
    guidance: Option<f64>,
    width: Option<f64>,
    height: Option<f64>,
    /// `"ddpm"`, `"ddim"` or `"dpmpp"`; absent or empty: the scheduler config's.
    scheduler: Option<String>,
    /// Given draws instead of the seed's.
    noise: Option<NoiseJs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NoiseJs {
    initial_latents: Option<F32s>,
    step_noise: Option<F32s>,
}

impl DecodeRequestJs {
    /// The request as a [`DecodeRequest`] (checked further by the engine).
    fn into_request(self) -> Result<DecodeRequest, JsError> {
        let image_embeds = self.image_embeds.ok_or_else(|| JsError::new("imageEmbeds (a Float32Array) is required"))?;
        let noise = match self.noise {
            None => DecoderNoise::Seed(whole_number(self.seed, "seed", 0)?),
            Some(n) => DecoderNoise::Explicit {
                initial_latents: n
                    .initial_latents
                    .ok_or_else(|| JsError::new("noise.initialLatents (a Float32Array) is required"))?
                    .0,
                step_noise: n.step_noise.map(|s| s.0),
            },
        };
        let mut req = DecodeRequest::new(image_embeds.0, self.negative_image_embeds.unwrap_or_default().0, noise);
        req.steps = count(self.steps, "steps", req.steps)?;
        req.width = count(self.width, "width", req.width)?;
        req.height = count(self.height, "height", req.height)?;
        if let Some(g) = self.guidance {
            req.guidance = g as f32;
        }
        if let Some(name) = self.scheduler.filter(|s| !s.is_empty()) {
            req.scheduler = Some(name.parse::<SchedulerKind>().map_err(js_err)?);
        }
        Ok(req)
    }
}

/// Latents after a step, as a small picture.
#[derive(Serialize)]
struct PreviewJs {
    width: usize,
    height: usize,
    rgba: Rgba,
}

/// What `onStep` receives after every step.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepJs {
    step: usize,
    total: usize,
    ms_per_step: f64,
    preview: PreviewJs,
}

/// `decode`'s result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DecodedJs {
    width: usize,
    height: usize,
    rgba: Rgba,
    steps: usize,
    scheduler: &'static str,
    ms_per_step: f64,
    step_ms: Vec<f64>,
    movq_ms: f64,
    seconds: f64,
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

/// A loaded Kandinsky 2.2 decoder (UNet, MoVQ's decoder half, scheduler config).
#[wasm_bindgen]
pub struct Decoder {
    inner: Rc<DecoderEngine<AnyBackend>>,
    /// Set by `cancel()`, checked before every step and before the MoVQ; cleared when a decode starts.
    cancel: AtomicBool,
    /// One decode at a time: a second would interleave with the first on the same device.
    busy: Cell<bool>,
    fallback_reason: Option<String>,
    /// How the weight matrices are kept (f32 on the CPU whatever was asked: `WeightStorage::in_browser_on`).
    weights: WeightStorage,
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
    pub async fn load(
        manifest: JsValue,
        backend: String,
        io: ModelIo,
        weights: Option<String>,
    ) -> Result<Decoder, JsError> {
        let manifest: DecoderManifest = from_js(manifest, "decoder manifest")?;
        let folders = [
            ("unet", manifest.unet.as_deref()),
            ("movq", manifest.movq.as_deref()),
            ("scheduler", manifest.scheduler.as_deref()),
        ];
        let files = files_of(&io, &folders, "decoder")?;
        let weights: WeightStorage = weights.as_deref().map_or(Ok(WeightStorage::F16), str::parse).map_err(js_err)?;
        let choice: BackendChoice = backend.parse().map_err(js_err)?;
        // Configs first: a folder that is not a decoder fails before any weight, with its URL.
        let configs = DecoderConfigs::read(&files).await.map_err(js_err)?;
        // The MoVQ's encoder half is never loaded, so it is not in the plan.
        let keep = |component: &str, tensor: &str| component != "movq" || is_decoder_tensor(tensor);
        let components = [("unet", "diffusion_pytorch_model"), ("movq", "diffusion_pytorch_model")];
        let cpu_bytes = announce_plan(&io, &files, &components, keep).await;
        let mut progress = upload_progress(&io);
        let opened = choice.open(GpuOptions { adapter_limits: true, ..Default::default() }).await.map_err(js_err)?;
        if let Some(bytes) = cpu_bytes.filter(|&b| !opened.backend.is_gpu() && b > CPU_WEIGHT_LIMIT) {
            return Err(JsError::new(&format!(
                "this decoder's weights take {:.2} GB as f32 on the CPU, more than the WebAssembly CPU fallback can \
                 hold (its memory ends at 4 GiB): decode it in a browser with WebGPU, or on an endpoint",
                bytes as f64 / 1e9
            )));
        }
        let weights = weights.in_browser_on(&opened.backend);
        let backend = weights.apply(opened.backend);
        let inner = DecoderEngine::load_with(backend, &files, configs, &mut progress).await.map_err(js_err)?;
        Ok(Decoder {
            inner: Rc::new(inner),
            cancel: AtomicBool::new(false),
            busy: Cell::new(false),
            fallback_reason: opened.fallback_reason,
            weights,
        })
    }

    /// `"cpu"` or `"webgpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        if self.inner.backend().is_gpu() { "webgpu" } else { "cpu" }.to_string()
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
        self.inner.backend().adapter_description()
    }

    /// Width of the image embeddings the UNet takes (1280 for the real decoder).
    #[wasm_bindgen(getter, js_name = embeddingDim)]
    pub fn embedding_dim(&self) -> usize {
        self.inner.embedding_dim()
    }

    /// Image pixels per latent along a side (8 for the real MoVQ).
    #[wasm_bindgen(getter, js_name = latentScale)]
    pub fn latent_scale(&self) -> usize {
        self.inner.latent_scale()
    }

    /// Image sides must be multiples of this (64 for the real decoder).
    #[wasm_bindgen(getter, js_name = sizeMultiple)]
    pub fn size_multiple(&self) -> usize {
        self.inner.size_multiple()
    }

    /// The sampler `scheduler_config.json` names: `"ddpm"`, `"ddim"` or `"dpmpp"`.
    #[wasm_bindgen(getter, js_name = defaultScheduler)]
    pub fn default_scheduler(&self) -> String {
        scheduler_id(self.inner.default_scheduler()).to_string()
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
        let req = from_js::<DecodeRequestJs>(request, "decode request")?.into_request()?;
        self.busy.set(true);
        self.cancel.store(false, Ordering::Relaxed);
        let inner = self.inner.clone();
        let t0 = now_ms();
        let mut last = t0;
        let mut on_step = |step: usize, total: usize, preview: &LatentPreview| {
            let Some(f) = &step_callback else { return };
            let now = now_ms();
            let preview =
                PreviewJs { width: preview.width, height: preview.height, rgba: Rgba::from_rgb(&preview.rgb) };
            let info = to_js(&StepJs { step, total, ms_per_step: now - last, preview });
            last = now;
            if let Ok(info) = info {
                let _ = f.call1(&JsValue::NULL, &info);
            }
        };
        let result = inner.decode(&req, &mut on_step, &self.cancel).await;
        self.busy.set(false);
        let r = result.map_err(decode_err)?;
        let steps = r.timesteps.len();
        let step_ms: Vec<f64> = r.timings.iter().take(steps).map(|(_, ms)| *ms).collect();
        let movq_ms = r.timings.get(steps).map_or(0.0, |(_, ms)| *ms);
        Ok(to_js(&DecodedJs {
            width: r.width,
            height: r.height,
            rgba: Rgba::from_rgb(&r.rgb),
            steps,
            scheduler: scheduler_id(r.scheduler),
            ms_per_step: if steps > 0 { step_ms.iter().sum::<f64>() / steps as f64 } else { 0.0 },
            step_ms,
            movq_ms,
            seconds: (now_ms() - t0) / 1000.0,
        })?)
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
