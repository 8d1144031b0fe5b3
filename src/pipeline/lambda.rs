//! The whole λ-ECLIPSE embedding pipeline: prompt + subjects (keyword, photo) + optional edge control +
//! noise → the image embedding the decoder turns into a picture.

use super::noise::gaussian_noise;
use super::{load_image_encoder, load_image_processor, load_text_encoder, load_tokenizer, read_config, Progress};
use crate::error::{Error, Result};
use crate::image::canny::{canny, edges_to_rgb};
use crate::image::decode::{decode_rgb, DecodeLimits};
use crate::image::preprocess::{preprocess, ImageProcessorConfig};
use crate::models::clip::{ClipTextModel, ClipVisionModel};
use crate::models::prior::{LambdaPrior, PriorConfig, PriorInputs, PRIOR_UNUSED};
use crate::ops::Backend;
use crate::timing::now_ms;
use crate::tokenizer::ClipTokenizer;
use crate::weights::{load_component_weights, ModelFiles};
use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Subject embeddings kept, by content hash of the photo (oldest dropped first).
const SUBJECT_CACHE_ENTRIES: usize = 32;

/// One subject: a keyword of the prompt and the encoded bytes of its photo.
#[derive(Clone, Debug)]
pub struct Subject {
    pub keyword: String,
    pub image: Vec<u8>,
}

/// Where ε comes from.
#[derive(Clone, Debug)]
pub enum Noise {
    /// Generated from a seed (see [`super::noise`]).
    Seed(u64),
    /// Given explicitly (`clip_embed_dim` values).
    Explicit(Vec<f32>),
}

#[derive(Clone, Debug)]
pub struct PriorRequest {
    pub prompt: String,
    pub subjects: Vec<Subject>,
    /// Encoded bytes of the edge-control image.
    pub control: Option<Vec<u8>>,
    pub noise: Noise,
    /// Canny thresholds (λ-ECLIPSE uses 100, 200).
    pub canny_low: f64,
    pub canny_high: f64,
}

impl PriorRequest {
    pub fn new(prompt: impl Into<String>, noise: Noise) -> Self {
        PriorRequest {
            prompt: prompt.into(),
            subjects: Vec::new(),
            control: None,
            noise,
            canny_low: 100.0,
            canny_high: 200.0,
        }
    }
}

/// Things the user should know about a result that are not errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// Some token of a keyword does not occur in the prompt (the reference prints "Couldn't find keyword").
    KeywordNotFound { subject: usize, keyword: String },
    /// The prompt had more than 77 tokens; the end was dropped.
    PromptTruncated { max_tokens: usize },
    /// A later subject replaced positions an earlier subject had filled (shared token ids).
    SubjectOverwritten { earlier: usize, later: usize, keyword: String },
    /// The prompt is empty or only whitespace.
    EmptyPrompt,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::KeywordNotFound { subject, keyword } => {
                write!(
                    f,
                    "subject {}: couldn't find keyword \"{keyword}\" in the prompt; its photo is not used there",
                    subject + 1
                )
            }
            Warning::PromptTruncated { max_tokens } => {
                write!(f, "the prompt is longer than {max_tokens} tokens; its end was dropped")
            }
            Warning::SubjectOverwritten { earlier, later, keyword } => write!(
                f,
                "subject {} (\"{keyword}\") overwrites positions of subject {} that share its tokens",
                later + 1,
                earlier + 1
            ),
            Warning::EmptyPrompt => write!(f, "the prompt is empty"),
        }
    }
}

/// Where one subject's keyword lands in a prompt, by the rule [`LambdaEngine::run`] applies: lets a UI show
/// the substituted words and the "keyword not found" warning before anything is computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeywordMatch {
    /// Every token of the keyword occurs among the prompt's ids: `run` gives no [`Warning::KeywordNotFound`].
    pub found: bool,
    /// The keyword has no tokens at all (`run` refuses it).
    pub empty: bool,
    /// `[start, end)` character ranges (Unicode scalar values) of the prompt's tokens whose rows the
    /// subject's embedding replaces, within the tokens the prompt keeps (77 with BOS and EOS).
    pub spans: Vec<(usize, usize)>,
}

/// Canny's hysteresis thresholds must be numbers: OpenCV floors them to integers, and a NaN would silently
/// become 0 (every gradient an edge).
pub fn check_canny_thresholds(low: f64, high: f64) -> Result<()> {
    if low.is_finite() && high.is_finite() {
        Ok(())
    } else {
        Err(Error::Input(format!("the Canny thresholds must be finite numbers, got low {low} and high {high}")))
    }
}

/// The Canny edges of an edge-control image (OpenCV-exact, see [`crate::image::canny`]). The thresholds must be
/// finite, and the image's header is checked against `limits` with Canny's working memory before anything is
/// decoded, so an oversized image is a clear error instead of exhausting memory.
pub fn control_edges(image: &[u8], low: f64, high: f64, limits: &DecodeLimits) -> Result<image::GrayImage> {
    check_canny_thresholds(low, high)?;
    let gray = crate::image::canny::grayscale_for_canny(image, limits)?;
    canny(&gray, low, high)
}

/// Everything one pipeline call computed, on the host.
#[derive(Clone, Debug)]
pub struct PriorOutput {
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// `[1, D]`: the prior's output, the embedding for the decoder.
    pub image_embeds: Vec<f32>,
    /// `[1, D]`: the zero-image embedding, the decoder's negative.
    pub negative_image_embeds: Vec<f32>,
    /// `[77, D]`: text hidden states after subject substitution.
    pub encoder_hidden_states: Vec<f32>,
    pub text_embeds: Vec<f32>,
    pub control_embeds: Vec<f32>,
    /// The Canny edge map (width, height, 0/255 values) when a control image was given.
    pub canny_edges: Option<(u32, u32, Vec<u8>)>,
    pub noise: Vec<f32>,
    pub warnings: Vec<Warning>,
    /// (stage, milliseconds) in order.
    pub timings: Vec<(String, f64)>,
}

pub struct LambdaEngine<B: Backend> {
    pub backend: B,
    pub tokenizer: ClipTokenizer,
    pub text: ClipTextModel<B>,
    pub vision: ClipVisionModel<B>,
    pub processor: ImageProcessorConfig,
    pub prior: LambdaPrior<B>,
    /// The vision tower on an all-zero normalised image: constant per image encoder, computed at load.
    pub zero_image_embeds: Vec<f32>,
    subject_cache: RefCell<Vec<(u64, Vec<f32>)>>,
    pub decode_limits: DecodeLimits,
}

fn content_key(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.len().hash(&mut h);
    bytes.hash(&mut h);
    h.finish()
}

pub async fn load_prior<B: Backend, F: ModelFiles>(
    be: &B,
    files: &F,
    progress: Progress<'_>,
) -> Result<LambdaPrior<B>> {
    let path = "prior/config.json";
    let cfg: PriorConfig = read_config(files, path).await?;
    cfg.validate(path)?;
    let store =
        load_component_weights(be, files, "prior", "diffusion_pytorch_model", |d, t| progress("prior", d, t)).await?;
    let prior = LambdaPrior::new(be, &store.root(), &cfg)?;
    store.finish(PRIOR_UNUSED)?;
    Ok(prior)
}

impl<B: Backend> LambdaEngine<B> {
    /// Loads every component of a model folder and checks that their sizes fit together.
    pub async fn load<F: ModelFiles>(backend: B, files: &F, progress: Progress<'_>) -> Result<Self> {
        let tokenizer = load_tokenizer(files).await?;
        let processor = load_image_processor(files).await?;
        let text = load_text_encoder(&backend, files, progress).await?;
        let vision = load_image_encoder(&backend, files, progress).await?;
        let prior = load_prior(&backend, files, progress).await?;
        super::check_processor_fits(&processor, vision.config.image_size)?;
        let pc = &prior.config;
        let mismatch = |what: String| Err(Error::config("prior/config.json", what));
        if text.config.hidden_size != pc.embedding_dim || vision.config.projection_dim != pc.embedding_dim {
            return mismatch(format!(
                "embedding_dim {} must equal the text hidden size ({}) and the image embedding size ({})",
                pc.embedding_dim, text.config.hidden_size, vision.config.projection_dim
            ));
        }
        if text.config.projection_dim != pc.text_embed_dim() || tokenizer.max_length != pc.num_embeddings {
            return mismatch(format!(
                "the prior expects {} text positions and text embeddings of {}, the text encoder gives {} and {}",
                pc.num_embeddings,
                pc.text_embed_dim(),
                tokenizer.max_length,
                text.config.projection_dim
            ));
        }
        let zero_image_embeds = super::zero_image_embeds(&backend, &vision).await?;
        Ok(LambdaEngine {
            backend,
            tokenizer,
            text,
            vision,
            processor,
            prior,
            zero_image_embeds,
            subject_cache: RefCell::new(Vec::new()),
            decode_limits: DecodeLimits::default(),
        })
    }

    /// Width of the embeddings (1280 for the real model).
    pub fn embedding_dim(&self) -> usize {
        self.prior.config.clip_dim()
    }

    /// The backend the engine computes on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The prompt tokenized and through the text tower alone.
    pub async fn embed_text(&self, prompt: &str) -> Result<super::TextEmbedding> {
        super::embed_text(&self.backend, &self.tokenizer, &self.text, prompt).await
    }

    /// Image embedding of a photo (decoded, preprocessed, vision tower), cached by content.
    pub async fn subject_embedding(&self, image: &[u8]) -> Result<Vec<f32>> {
        let key = content_key(image);
        if let Some((_, e)) = self.subject_cache.borrow().iter().find(|(k, _)| *k == key) {
            return Ok(e.clone());
        }
        let rgb = decode_rgb(image, &self.decode_limits)?;
        let pixels = preprocess(&rgb, &self.processor)?;
        let e = super::embed_pixels(&self.backend, &self.vision, &pixels).await?;
        let mut cache = self.subject_cache.borrow_mut();
        if cache.len() >= SUBJECT_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((key, e.clone()));
        Ok(e)
    }

    /// Number of subject embeddings currently cached.
    pub fn cached_subjects(&self) -> usize {
        self.subject_cache.borrow().len()
    }

    /// Canny edges of a control image as OpenCV computes them (gray, thresholds, no blur); images over the
    /// engine's decode limits are refused (see [`control_edges`]).
    pub fn canny_edges(&self, image: &[u8], low: f64, high: f64) -> Result<image::GrayImage> {
        control_edges(image, low, high, &self.decode_limits)
    }

    /// For each keyword, whether `run` will find it in `prompt` and which characters of the prompt its
    /// subject replaces (see [`KeywordMatch`]).
    pub fn keyword_matches(&self, prompt: &str, keywords: &[String]) -> Result<Vec<KeywordMatch>> {
        let encoded = self.tokenizer.encode(prompt)?;
        let kept = self.tokenizer.max_length.saturating_sub(2);
        let mut tokens = self.tokenizer.bpe_ids_with_char_offsets(prompt)?;
        tokens.truncate(kept);
        keywords
            .iter()
            .map(|k| {
                let ids = self.tokenizer.bpe_ids(k)?;
                Ok(KeywordMatch {
                    // The same test as `run`: each keyword id somewhere among the prompt's 77 ids.
                    found: !ids.is_empty() && ids.iter().all(|id| encoded.input_ids.contains(id)),
                    empty: ids.is_empty(),
                    spans: tokens.iter().filter(|(id, _, _)| ids.contains(id)).map(|&(_, s, e)| (s, e)).collect(),
                })
            })
            .collect()
    }

    /// Runs the pipeline.
    pub async fn run(&self, req: &PriorRequest) -> Result<PriorOutput> {
        let be = &self.backend;
        let d = self.embedding_dim();
        let mut timings = Vec::new();
        let mut warnings = Vec::new();
        let mut t0 = now_ms();
        let mut lap = |name: String, timings: &mut Vec<(String, f64)>| {
            let t = now_ms();
            timings.push((name, t - t0));
            t0 = t;
        };

        let noise = match &req.noise {
            Noise::Seed(seed) => gaussian_noise(*seed, d),
            Noise::Explicit(v) if v.len() == d => v.clone(),
            Noise::Explicit(v) => {
                return Err(Error::Input(format!("noise has {} values, the prior needs {d}", v.len())))
            }
        };
        if noise.iter().any(|x| !x.is_finite()) {
            return Err(Error::Input("noise contains NaN or infinity".into()));
        }

        // Keywords first: a bad keyword fails before any heavy work.
        let mut keyword_ids = Vec::with_capacity(req.subjects.len());
        for (j, s) in req.subjects.iter().enumerate() {
            let ids = self.tokenizer.bpe_ids(&s.keyword)?;
            if ids.is_empty() {
                return Err(Error::Input(format!("subject {}: keyword \"{}\" has no tokens", j + 1, s.keyword)));
            }
            keyword_ids.push(ids);
        }
        if req.prompt.trim().is_empty() {
            warnings.push(Warning::EmptyPrompt);
        }
        let encoded = self.tokenizer.encode(&req.prompt)?;
        if encoded.truncated {
            warnings.push(Warning::PromptTruncated { max_tokens: self.tokenizer.max_length });
        }
        lap("tokenize".into(), &mut timings);

        let text = self.text.forward(be, &encoded.input_ids, Some(&encoded.attention_mask))?;
        let text_embeds = be.read_f32(&text.text_embeds).await?;
        super::ensure_finite("text encoder", &text_embeds)?;
        lap("text encoder".into(), &mut timings);

        // Substitution: row i of the result is row `source[i]` of [hidden states; subject embeddings].
        let seq = encoded.input_ids.len();
        let mut source: Vec<u32> = (0..seq as u32).collect();
        let mut owner: Vec<Option<usize>> = vec![None; seq];
        let mut subject_rows = Vec::new();
        for (j, (s, ids)) in req.subjects.iter().zip(&keyword_ids).enumerate() {
            let e = self
                .subject_embedding(&s.image)
                .await
                .map_err(|e| Error::Input(format!("subject {} (\"{}\"): {e}", j + 1, s.keyword)))?;
            lap(format!("subject {} ({})", j + 1, s.keyword), &mut timings);
            subject_rows.push(be.from_f32(&e, &[1, d])?);
            let mut found_all = true;
            for id in ids {
                let mut found = false;
                for (pos, &pid) in encoded.input_ids.iter().enumerate() {
                    if pid == *id {
                        found = true;
                        if let Some(earlier) = owner[pos].filter(|&o| o != j) {
                            let w = Warning::SubjectOverwritten { earlier, later: j, keyword: s.keyword.clone() };
                            if !warnings.contains(&w) {
                                warnings.push(w);
                            }
                        }
                        owner[pos] = Some(j);
                        source[pos] = (seq + j) as u32;
                    }
                }
                found_all &= found;
            }
            if !found_all {
                warnings.push(Warning::KeywordNotFound { subject: j, keyword: s.keyword.clone() });
            }
        }
        let mut parts = vec![&text.last_hidden_state];
        parts.extend(subject_rows.iter());
        let hidden = be.gather_rows(&be.concat_rows(&parts)?, &source)?;

        let (control_embeds, canny_edges) = match &req.control {
            None => (self.zero_image_embeds.clone(), None),
            Some(bytes) => {
                let edges = self
                    .canny_edges(bytes, req.canny_low, req.canny_high)
                    .map_err(|e| Error::Input(format!("control image: {e}")))?;
                let pixels = preprocess(&edges_to_rgb(&edges), &self.processor)?;
                let e = super::embed_pixels(be, &self.vision, &pixels).await?;
                lap("edge control".into(), &mut timings);
                let (w, h) = edges.dimensions();
                (e, Some((w, h, edges.into_raw())))
            }
        };

        let control = be.from_f32(&control_embeds, &[1, d])?;
        let text_e = be.from_f32(&text_embeds, &[1, text_embeds.len()])?;
        let eps = be.from_f32(&noise, &[1, d])?;
        let inputs = PriorInputs {
            encoder_hidden_states: &hidden,
            attention_mask: &encoded.attention_mask,
            control_embeds: &control,
            text_embeds: &text_e,
            noise: &eps,
        };
        let out = self.prior.forward(be, &inputs)?;
        let image_embeds = be.read_f32(&out).await?;
        let encoder_hidden_states = be.read_f32(&hidden).await?;
        super::ensure_finite("text encoder (hidden states)", &encoder_hidden_states)?;
        super::ensure_finite("prior", &image_embeds)?;
        lap("prior".into(), &mut timings);
        Ok(PriorOutput {
            input_ids: encoded.input_ids,
            attention_mask: encoded.attention_mask,
            image_embeds,
            negative_image_embeds: self.zero_image_embeds.clone(),
            encoder_hidden_states,
            text_embeds,
            control_embeds,
            canny_edges,
            noise,
            warnings,
            timings,
        })
    }
}
