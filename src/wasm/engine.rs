//! `Engine`: a loaded λ-ECLIPSE model (tokenizer, CLIP towers, prior) for `www/lib/worker.js`. Its requests
//! and results are the typed structs below; its state (the engine, why `auto` fell back) is private.

use super::convert::{from_js, js_err, to_js, whole_number, Bytes, F32s, I32s, Ordered};
use super::load::{announce_plan, files_of, upload_progress};
use crate::ops::gpu::GpuOptions;
use crate::ops::{AnyBackend, BackendChoice};
use crate::pipeline::lambda::Noise;
use crate::pipeline::{LambdaEngine, PriorRequest, Subject};
use crate::weights::http::ModelIo;
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// The URL of each folder of a λ model (`resolveManifest` in `www/lib/lambda-eclipse.js`).
#[derive(Deserialize)]
struct ModelManifest {
    tokenizer: Option<String>,
    text_encoder: Option<String>,
    image_encoder: Option<String>,
    image_processor: Option<String>,
    prior: Option<String>,
}

impl ModelManifest {
    fn folders(&self) -> [(&str, Option<&str>); 5] {
        [
            ("tokenizer", self.tokenizer.as_deref()),
            ("text_encoder", self.text_encoder.as_deref()),
            ("image_encoder", self.image_encoder.as_deref()),
            ("image_processor", self.image_processor.as_deref()),
            ("prior", self.prior.as_deref()),
        ]
    }
}

/// `embedText`'s result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TextEmbeddingJs {
    input_ids: I32s,
    attention_mask: I32s,
    text_embeds: F32s,
    last_hidden_state: F32s,
    truncated: bool,
}

/// `embedImages`' result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageEmbeddingsJs {
    image_embeds: Vec<F32s>,
}

/// One keyword of `matchKeywords`' result; spans in UTF-16 code units (JS string indices).
#[derive(Serialize)]
struct KeywordMatchJs {
    found: bool,
    empty: bool,
    spans: Vec<(u32, u32)>,
}

/// `prior`'s request (`engine.prior(...)` in `www/lib/lambda-eclipse.js`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriorRequestJs {
    prompt: String,
    subjects: Option<Vec<SubjectJs>>,
    control: Option<Bytes>,
    seed: Option<f64>,
    /// ε itself; replaces the seed.
    noise: Option<F32s>,
    canny_low: Option<f64>,
    canny_high: Option<f64>,
}

#[derive(Deserialize)]
struct SubjectJs {
    keyword: String,
    image: Bytes,
}

impl PriorRequestJs {
    fn into_request(self) -> Result<PriorRequest, JsError> {
        let noise = match self.noise {
            Some(eps) => Noise::Explicit(eps.0),
            None => Noise::Seed(whole_number(self.seed, "seed", 0)?),
        };
        let mut req = PriorRequest::new(self.prompt, noise);
        req.canny_low = self.canny_low.unwrap_or(req.canny_low);
        req.canny_high = self.canny_high.unwrap_or(req.canny_high);
        req.subjects = self
            .subjects
            .unwrap_or_default()
            .into_iter()
            .map(|s| Subject { keyword: s.keyword, image: s.image.0 })
            .collect();
        req.control = self.control.map(|c| c.0);
        Ok(req)
    }
}

/// The Canny edge map of the control image, in `prior`'s result.
#[derive(Serialize)]
struct EdgesJs {
    width: u32,
    height: u32,
    data: Bytes,
}

/// `prior`'s result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PriorResultJs<'a> {
    image_embeds: F32s,
    negative_image_embeds: F32s,
    encoder_hidden_states: F32s,
    control_embeds: F32s,
    text_embeds: F32s,
    noise: F32s,
    warnings: Vec<String>,
    timings: Ordered<'a, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    canny_edges: Option<EdgesJs>,
}

/// A loaded λ-ECLIPSE model (tokenizer, CLIP towers, prior).
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<LambdaEngine<AnyBackend>>,
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
        let manifest: ModelManifest = from_js(manifest, "model manifest")?;
        let files = files_of(&io, &manifest.folders(), "model")?;
        let choice: BackendChoice = backend.parse().map_err(js_err)?;
        const COMPONENTS: [(&str, &str); 3] =
            [("text_encoder", "model"), ("image_encoder", "model"), ("prior", "diffusion_pytorch_model")];
        announce_plan(&io, &files, &COMPONENTS, |_, _| true).await;
        let mut progress = upload_progress(&io);
        let opened = choice.open(GpuOptions::default()).await.map_err(js_err)?;
        let inner = LambdaEngine::load(opened.backend, &files, &mut progress).await.map_err(js_err)?;
        Ok(Engine { inner: Rc::new(inner), fallback_reason: opened.fallback_reason })
    }

    /// `"cpu"` or `"webgpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        if self.inner.backend().is_gpu() { "webgpu" } else { "cpu" }.to_string()
    }

    /// Why `auto` fell back to the CPU (no WebGPU, no adapter), if it did.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback_reason.clone()
    }

    /// The WebGPU adapter in words (e.g. "SwiftShader Device (Vulkan)"), or undefined on the CPU.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        self.inner.backend().adapter_description()
    }

    /// For each keyword, whether the pipeline will find it in `prompt` and which characters its subject
    /// replaces: `[{ found, empty, spans: [[start, end], …] }]`, offsets in UTF-16 code units (JS string
    /// indices). Only the tokenizer runs: cheap.
    #[wasm_bindgen(js_name = matchKeywords)]
    pub fn match_keywords(&self, prompt: String, keywords: JsValue) -> Result<JsValue, JsError> {
        let keywords: Vec<String> = from_js(keywords, "keywords")?;
        let matches = self.inner.keyword_matches(&prompt, &keywords).map_err(js_err)?;
        // Character index → UTF-16 index.
        let mut utf16_at = Vec::with_capacity(prompt.len() + 1);
        let mut u = 0u32;
        for c in prompt.chars() {
            utf16_at.push(u);
            u += c.len_utf16() as u32;
        }
        utf16_at.push(u);
        let at = |i: usize| utf16_at.get(i).copied().unwrap_or(u);
        let out: Vec<KeywordMatchJs> = matches
            .into_iter()
            .map(|m| KeywordMatchJs {
                found: m.found,
                empty: m.empty,
                spans: m.spans.iter().map(|&(s, e)| (at(s), at(e))).collect(),
            })
            .collect();
        to_js(&out)
    }

    /// Embedding width (1280 for the real model).
    #[wasm_bindgen(getter, js_name = embeddingDim)]
    pub fn embedding_dim(&self) -> usize {
        self.inner.embedding_dim()
    }

    /// `{ inputIds, attentionMask, textEmbeds, lastHiddenState, truncated }`.
    #[wasm_bindgen(js_name = embedText)]
    pub async fn embed_text(&self, prompt: String) -> Result<JsValue, JsError> {
        let inner = self.inner.clone();
        let t = inner.embed_text(&prompt).await.map_err(js_err)?;
        let ids = |v: &[u32]| I32s(v.iter().map(|&x| x as i32).collect());
        to_js(&TextEmbeddingJs {
            input_ids: ids(&t.encoded.input_ids),
            attention_mask: ids(&t.encoded.attention_mask),
            text_embeds: F32s(t.text_embeds),
            last_hidden_state: F32s(t.last_hidden_state),
            truncated: t.encoded.truncated,
        })
    }

    /// Image embeddings of encoded image files (`Uint8Array`s): `{ imageEmbeds: Float32Array[] }`.
    #[wasm_bindgen(js_name = embedImages)]
    pub async fn embed_images(&self, images: JsValue) -> Result<JsValue, JsError> {
        let images: Vec<Bytes> = from_js(images, "images")?;
        let inner = self.inner.clone();
        let mut image_embeds = Vec::with_capacity(images.len());
        for (i, img) in images.iter().enumerate() {
            let v = inner
                .subject_embedding(&img.0)
                .await
                .map_err(|err| JsError::new(&format!("image {}: {err}", i + 1)))?;
            image_embeds.push(F32s(v));
        }
        to_js(&ImageEmbeddingsJs { image_embeds })
    }

    /// The whole pipeline. `request` = `{ prompt, subjects: [{ keyword, image: Uint8Array }], control?:
    /// Uint8Array, seed?: number, noise?: Float32Array, cannyLow?, cannyHigh? }` →
    /// `{ imageEmbeds, negativeImageEmbeds, encoderHiddenStates, controlEmbeds, textEmbeds, noise, warnings:
    /// string[], timings: {stage: ms}, cannyEdges? }`.
    pub async fn prior(&self, request: JsValue) -> Result<JsValue, JsError> {
        let req = from_js::<PriorRequestJs>(request, "prior request")?.into_request()?;
        let inner = self.inner.clone();
        let r = inner.run(&req).await.map_err(js_err)?;
        to_js(&PriorResultJs {
            image_embeds: F32s(r.image_embeds),
            negative_image_embeds: F32s(r.negative_image_embeds),
            encoder_hidden_states: F32s(r.encoder_hidden_states),
            control_embeds: F32s(r.control_embeds),
            text_embeds: F32s(r.text_embeds),
            noise: F32s(r.noise),
            warnings: r.warnings.iter().map(|w| w.to_string()).collect(),
            timings: Ordered(&r.timings),
            canny_edges: r.canny_edges.map(|(width, height, edges)| EdgesJs { width, height, data: Bytes(edges) }),
        })
    }
}
