//! CLIP text and vision towers with projection (transformers' `CLIPTextModelWithProjection` and
//! `CLIPVisionModelWithProjection`), pre-LN encoder layers, HF weight names.

use super::layers::{AttentionProjections, LayerNorm, Linear};
use crate::error::{Error, Result};
use crate::ops::{Activation, Backend, CLIP_MASKED};
use crate::weights::Weights;
use serde::Deserialize;

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    // transformers' CLIP default.
    "quick_gelu".to_string()
}
fn default_eos() -> u32 {
    49407
}
fn default_channels() -> usize {
    3
}

#[derive(Clone, Debug, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    /// Checks, before any weight is read, the values that would make the tower compute nonsense or NaN.
    pub fn validate(&self, path: &str) -> Result<()> {
        validate_encoder(path, self.layer_norm_eps, self.hidden_size, self.num_attention_heads, &self.hidden_act)
    }
}

impl ClipVisionConfig {
    /// Checks, before any weight is read, the values that would make the tower compute nonsense or NaN.
    pub fn validate(&self, path: &str) -> Result<()> {
        validate_encoder(path, self.layer_norm_eps, self.hidden_size, self.num_attention_heads, &self.hidden_act)?;
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::config(
                path,
                format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size),
            ));
        }
        Ok(())
    }
}

/// The checks both towers' encoders need: a positive norm epsilon, whole heads, a known activation.
fn validate_encoder(path: &str, eps: f64, hidden: usize, heads: usize, act: &str) -> Result<()> {
    super::check_norm_eps(path, "layer_norm_eps", eps)?;
    check_heads(hidden, heads).map_err(|e| Error::config(path, e))?;
    activation(act).map_err(|e| Error::config(path, e))?;
    Ok(())
}

fn activation(name: &str) -> Result<Activation> {
    Activation::from_hf_name(name)
        .ok_or_else(|| Error::Input(format!("unsupported hidden_act `{name}` (expected `gelu` or `quick_gelu`)")))
}

fn check_heads(hidden: usize, heads: usize) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::Input(format!("hidden_size {hidden} is not divisible by num_attention_heads {heads}")));
    }
    Ok(())
}

/// One pre-LN transformer layer: `x += attn(ln1(x))`, `x += fc2(act(fc1(ln2(x))))`.
struct EncoderLayer<B: Backend> {
    attn: AttentionProjections<B>,
    ln1: LayerNorm<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    heads: usize,
    scale: f32,
    act: Activation,
}

impl<B: Backend> EncoderLayer<B> {
    fn new(vb: &Weights<B>, hidden: usize, inter: usize, heads: usize, eps: f64, act: Activation) -> Result<Self> {
        Ok(EncoderLayer {
            attn: AttentionProjections::clip(&vb.pp("self_attn"), hidden)?,
            ln1: LayerNorm::new(&vb.pp("layer_norm1"), hidden, eps)?,
            ln2: LayerNorm::new(&vb.pp("layer_norm2"), hidden, eps)?,
            fc1: Linear::new(&vb.pp("mlp").pp("fc1"), hidden, inter, true)?,
            fc2: Linear::new(&vb.pp("mlp").pp("fc2"), inter, hidden, true)?,
            heads,
            scale: ((hidden / heads) as f32).powf(-0.5),
            act,
        })
    }

    fn forward(&self, be: &B, x: &B::Tensor, bias: Option<&B::Tensor>) -> Result<B::Tensor> {
        let h = self.ln1.forward(be, x)?;
        let x = self.attn.self_attention_residual(be, &h, self.heads, self.scale, bias, x)?;
        let h = self.ln2.forward(be, &x)?;
        let h = self.fc1.forward(be, &h, self.act)?;
        self.fc2.forward_residual(be, &h, &x)
    }
}

struct Encoder<B: Backend> {
    layers: Vec<EncoderLayer<B>>,
}

impl<B: Backend> Encoder<B> {
    fn new(
        vb: &Weights<B>,
        n: usize,
        hidden: usize,
        inter: usize,
        heads: usize,
        eps: f64,
        act: Activation,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers =
            (0..n).map(|i| EncoderLayer::new(&vb.pp(i), hidden, inter, heads, eps, act)).collect::<Result<_>>()?;
        Ok(Encoder { layers })
    }
    fn forward(&self, be: &B, mut x: B::Tensor, bias: Option<&B::Tensor>) -> Result<B::Tensor> {
        for layer in &self.layers {
            x = layer.forward(be, &x, bias)?;
        }
        Ok(x)
    }
}

/// Output of the text tower, still on the backend.
pub struct TextOutput<B: Backend> {
    /// `[seq, hidden]` after `final_layer_norm`.
    pub last_hidden_state: B::Tensor,
    /// `[1, projection_dim]`, `text_projection` of the EOS row, not normalised.
    pub text_embeds: B::Tensor,
}

pub struct ClipTextModel<B: Backend> {
    token_embedding: B::Tensor,
    position_embedding: B::Tensor,
    encoder: Encoder<B>,
    final_ln: LayerNorm<B>,
    projection: Linear<B>,
    pub config: ClipTextConfig,
}

impl<B: Backend> ClipTextModel<B> {
    /// `vb` is the root of a `CLIPTextModelWithProjection` checkpoint.
    pub fn new(vb: &Weights<B>, cfg: &ClipTextConfig) -> Result<Self> {
        check_heads(cfg.hidden_size, cfg.num_attention_heads)?;
        let act = activation(&cfg.hidden_act)?;
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        Ok(ClipTextModel {
            token_embedding: emb.pp("token_embedding").get("weight", &[cfg.vocab_size, cfg.hidden_size])?,
            position_embedding: emb
                .pp("position_embedding")
                .get("weight", &[cfg.max_position_embeddings, cfg.hidden_size])?,
            encoder: Encoder::new(
                &tm.pp("encoder"),
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.num_attention_heads,
                cfg.layer_norm_eps,
                act,
            )?,
            final_ln: LayerNorm::new(&tm.pp("final_layer_norm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            projection: Linear::new(&vb.pp("text_projection"), cfg.hidden_size, cfg.projection_dim, false)?,
            config: cfg.clone(),
        })
    }

    /// The row whose hidden state is pooled: the first `eos_token_id`, or — for old configs whose
    /// `eos_token_id` is 2 — the position of the largest id, as transformers does.
    pub fn eos_position(&self, ids: &[u32]) -> usize {
        let pos = if self.config.eos_token_id == 2 {
            ids.iter().enumerate().max_by_key(|(i, &id)| (id, std::cmp::Reverse(*i))).map(|(i, _)| i)
        } else {
            ids.iter().position(|&id| id == self.config.eos_token_id)
        };
        // transformers takes argmax of `ids == eos`, which is 0 when there is none.
        pos.unwrap_or(0)
    }

    /// Runs the tower on token ids (`seq ≤ max_position_embeddings`). `attention_mask` (1 = token,
    /// 0 = padding) adds the padding mask on top of the causal one, like passing it to transformers.
    pub fn forward(&self, be: &B, ids: &[u32], attention_mask: Option<&[u32]>) -> Result<TextOutput<B>> {
        let seq = ids.len();
        if seq == 0 || seq > self.config.max_position_embeddings {
            return Err(Error::Input(format!(
                "text tower takes 1..={} tokens, got {seq}",
                self.config.max_position_embeddings
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let tokens = be.gather_rows(&self.token_embedding, ids)?;
        let positions = be.slice_rows(&self.position_embedding, 0, seq)?;
        let x = be.add(&tokens, &positions)?;
        let mut bias = vec![0f32; seq * seq];
        for q in 0..seq {
            for k in 0..seq {
                let padded = attention_mask.is_some_and(|m| m.get(k).copied().unwrap_or(0) == 0);
                if k > q || padded {
                    bias[q * seq + k] = CLIP_MASKED;
                }
            }
        }
        let bias = be.from_f32(&bias, &[seq, seq])?;
        let x = self.encoder.forward(be, x, Some(&bias))?;
        let last_hidden_state = self.final_ln.forward(be, &x)?;
        let pooled = be.slice_rows(&last_hidden_state, self.eos_position(ids), 1)?;
        let text_embeds = self.projection.forward(be, &pooled, Activation::Identity)?;
        Ok(TextOutput { last_hidden_state, text_embeds })
    }
}

pub struct ClipVisionModel<B: Backend> {
    class_embedding: B::Tensor,
    patch_weight: B::Tensor,
    position_embedding: B::Tensor,
    pre_ln: LayerNorm<B>,
    encoder: Encoder<B>,
    post_ln: LayerNorm<B>,
    projection: Linear<B>,
    pub config: ClipVisionConfig,
}

impl<B: Backend> ClipVisionModel<B> {
    /// `vb` is the root of a `CLIPVisionModelWithProjection` checkpoint.
    pub fn new(be: &B, vb: &Weights<B>, cfg: &ClipVisionConfig) -> Result<Self> {
        check_heads(cfg.hidden_size, cfg.num_attention_heads)?;
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            return Err(Error::Input(format!(
                "image_size {} is not a multiple of patch_size {}",
                cfg.image_size, cfg.patch_size
            )));
        }
        let act = activation(&cfg.hidden_act)?;
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let positions = (cfg.image_size / p).pow(2) + 1;
        let vm = vb.pp("vision_model");
        let emb = vm.pp("embeddings");
        let class_embedding = be.reshape(&emb.get("class_embedding", &[d])?, &[1, d])?;
        let patch = emb.pp("patch_embedding");
        let patch_weight =
            patch.lay_out_for_products("weight", be.reshape(&patch.get("weight", &[d, c, p, p])?, &[d, c * p * p])?)?;
        Ok(ClipVisionModel {
            class_embedding,
            patch_weight,
            position_embedding: emb.pp("position_embedding").get("weight", &[positions, d])?,
            pre_ln: LayerNorm::new(&vm.pp("pre_layrnorm"), d, cfg.layer_norm_eps)?,
            encoder: Encoder::new(
                &vm.pp("encoder"),
                cfg.num_hidden_layers,
                d,
                cfg.intermediate_size,
                cfg.num_attention_heads,
                cfg.layer_norm_eps,
                act,
            )?,
            post_ln: LayerNorm::new(&vm.pp("post_layernorm"), d, cfg.layer_norm_eps)?,
            projection: Linear::new(&vb.pp("visual_projection"), d, cfg.projection_dim, false)?,
            config: cfg.clone(),
        })
    }

    /// `image_embeds` `[1, projection_dim]` of one preprocessed image, CHW f32 `[c, s, s]` as a flat slice.
    pub fn forward(&self, be: &B, pixel_values: &[f32]) -> Result<B::Tensor> {
        let (c, s) = (self.config.num_channels, self.config.image_size);
        if pixel_values.len() != c * s * s {
            return Err(Error::Input(format!(
                "vision tower takes {c}×{s}×{s} pixel values, got {}",
                pixel_values.len()
            )));
        }
        let image = be.from_f32(pixel_values, &[c, s, s])?;
        let patches = be.linear(
            &be.image_patches(&image, self.config.patch_size)?,
            &self.patch_weight,
            None,
            Activation::Identity,
        )?;
        let x = be.concat_rows(&[&self.class_embedding, &patches])?;
        let x = be.add(&x, &self.position_embedding)?;
        let x = self.pre_ln.forward(be, &x)?;
        let x = self.encoder.forward(be, x, None)?;
        let pooled = self.post_ln.forward(be, &be.slice_rows(&x, 0, 1)?)?;
        self.projection.forward(be, &pooled, Activation::Identity)
    }
}
