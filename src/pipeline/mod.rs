//! Loading the components of a model folder (HF layout: `tokenizer/`, `text_encoder/`, `image_encoder/`,
//! `image_processor/`, `prior/`) and computing embeddings. One API for the CLI, the wasm bindings and tests.

use crate::error::{Error, Result};
use crate::image::decode::{decode_rgb, DecodeLimits};
use crate::image::preprocess::{preprocess, ImageProcessorConfig};
use crate::models::clip::{ClipTextConfig, ClipTextModel, ClipVisionConfig, ClipVisionModel};
use crate::models::parse_config;
use crate::ops::Backend;
use crate::tokenizer::{ClipTokenizer, Encoded};
use crate::weights::{load_component_weights, ModelFiles};

/// Tensors stored in CLIP checkpoints that the towers do not compute with.
const CLIP_UNUSED: &[&str] = &["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"];

/// Progress of weight loading: component name, bytes done, bytes total.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

pub async fn load_tokenizer<F: ModelFiles>(files: &F) -> Result<ClipTokenizer> {
    ClipTokenizer::load(files, "tokenizer").await
}

async fn read_config<F: ModelFiles, T: serde::de::DeserializeOwned>(files: &F, path: &str) -> Result<T> {
    let text = files.read_text(path).await?;
    parse_config(path, &text)
}

pub async fn load_text_encoder<B: Backend, F: ModelFiles>(
    be: &B,
    files: &F,
    progress: Progress<'_>,
) -> Result<ClipTextModel<B>> {
    let cfg: ClipTextConfig = read_config(files, "text_encoder/config.json").await?;
    cfg.validate("text_encoder/config.json")?;
    let store =
        load_component_weights(be, files, "text_encoder", "model", |d, t| progress("text_encoder", d, t)).await?;
    let model = ClipTextModel::new(&store.root(), &cfg)?;
    store.finish(CLIP_UNUSED)?;
    Ok(model)
}

pub async fn load_image_encoder<B: Backend, F: ModelFiles>(
    be: &B,
    files: &F,
    progress: Progress<'_>,
) -> Result<ClipVisionModel<B>> {
    let cfg: ClipVisionConfig = read_config(files, "image_encoder/config.json").await?;
    cfg.validate("image_encoder/config.json")?;
    let store =
        load_component_weights(be, files, "image_encoder", "model", |d, t| progress("image_encoder", d, t)).await?;
    let model = ClipVisionModel::new(be, &store.root(), &cfg)?;
    store.finish(CLIP_UNUSED)?;
    Ok(model)
}

pub async fn load_image_processor<F: ModelFiles>(files: &F) -> Result<ImageProcessorConfig> {
    let path = "image_processor/preprocessor_config.json";
    let cfg: ImageProcessorConfig = read_config(files, path).await?;
    cfg.validate(path)?;
    Ok(cfg)
}

/// Result of the text tower on a prompt, read back to the host.
#[derive(Clone, Debug)]
pub struct TextEmbedding {
    pub encoded: Encoded,
    /// `[seq, hidden]`, row-major.
    pub last_hidden_state: Vec<f32>,
    pub hidden_size: usize,
    /// `[projection_dim]`.
    pub text_embeds: Vec<f32>,
}

/// Tokenizes and runs the text tower with the prompt's attention mask, as the reference does (the pads'
/// own rows of `last_hidden_state` depend on it; the goldens were made with it).
pub async fn embed_text<B: Backend>(
    be: &B,
    tok: &ClipTokenizer,
    model: &ClipTextModel<B>,
    prompt: &str,
) -> Result<TextEmbedding> {
    let encoded = tok.encode(prompt)?;
    let out = model.forward(be, &encoded.input_ids, Some(&encoded.attention_mask))?;
    let last_hidden_state = be.read_f32(&out.last_hidden_state).await?;
    let text_embeds = be.read_f32(&out.text_embeds).await?;
    ensure_finite("text encoder", last_hidden_state.iter().chain(&text_embeds))?;
    Ok(TextEmbedding { last_hidden_state, text_embeds, hidden_size: model.config.hidden_size, encoded })
}

/// Decodes (with Pillow's RGB conversion) and preprocesses an encoded image file.
pub fn pixel_values_from_bytes(bytes: &[u8], cfg: &ImageProcessorConfig) -> Result<Vec<f32>> {
    let rgb = decode_rgb(bytes, &DecodeLimits::default())?;
    preprocess(&rgb, cfg)
}

/// `image_embeds` of one preprocessed image.
pub async fn embed_pixels<B: Backend>(be: &B, model: &ClipVisionModel<B>, pixel_values: &[f32]) -> Result<Vec<f32>> {
    let out = model.forward(be, pixel_values)?;
    let embeds = be.read_f32(&out).await?;
    ensure_finite("image encoder", &embeds)?;
    Ok(embeds)
}

/// The embedding of an all-zero, already normalised image: the negative embedding handed to the decoder.
pub async fn zero_image_embeds<B: Backend>(be: &B, model: &ClipVisionModel<B>) -> Result<Vec<f32>> {
    let s = model.config.image_size;
    embed_pixels(be, model, &vec![0f32; model.config.num_channels * s * s]).await
}

/// [`Error::NonFinite`] naming `stage` when any of `values` is NaN or ±∞: a result is refused rather than
/// handed on (a NaN embedding, a black image) with success. Used after every stage that reads back.
pub fn ensure_finite<'a>(stage: &str, values: impl IntoIterator<Item = &'a f32>) -> Result<()> {
    let (mut total, mut count) = (0usize, 0usize);
    for v in values {
        total += 1;
        count += usize::from(!v.is_finite());
    }
    if count == 0 {
        Ok(())
    } else {
        Err(Error::NonFinite { stage: stage.to_string(), count, total })
    }
}

/// Checks that a processor config produces what the vision tower takes.
pub fn check_processor_fits(cfg: &ImageProcessorConfig, model_size: usize) -> Result<()> {
    let (h, w) = cfg.output_hw();
    if h as usize != model_size || w as usize != model_size {
        return Err(Error::config(
            "image_processor/preprocessor_config.json",
            format!("produces {w}×{h} images but the image encoder takes {model_size}×{model_size}"),
        ));
    }
    Ok(())
}

pub mod decoder;
pub mod interpolate;
pub mod lambda;
pub mod noise;
pub mod schedulers;
pub use decoder::{DecodeRequest, Decoded, DecodedImage, DecoderConfigs, DecoderEngine, DecoderNoise, LatentPreview};
pub use lambda::{KeywordMatch, LambdaEngine, PriorOutput, PriorRequest, Subject, Warning};
pub use schedulers::{Scheduler, SchedulerConfig, SchedulerKind};
