//! The λ-ECLIPSE prior: diffusers' `PriorTransformer` as λ-ECLIPSE uses it — one forward pass, no timestep,
//! an `embedding_control` token in place of the time embedding, the prd token out, no un-normalisation.

use super::layers::{AttentionProjections, LayerNorm, Linear};
use crate::error::{Error, Result};
use crate::ops::{Activation, Backend};
use crate::weights::Weights;
use serde::Deserialize;

/// The prior's additive mask value (diffusers uses −10000, not −inf; padding and causal terms add).
pub const PRIOR_MASKED: f32 = -10000.0;

fn default_eps() -> f64 {
    1e-5
}
fn default_additional() -> usize {
    4
}
fn default_num_embeddings() -> usize {
    77
}

#[derive(Clone, Debug, Deserialize)]
pub struct PriorConfig {
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub num_layers: usize,
    pub embedding_dim: usize,
    #[serde(default = "default_num_embeddings")]
    pub num_embeddings: usize,
    #[serde(default = "default_additional")]
    pub additional_embeddings: usize,
    /// Width of ε and of the output embedding; `null` means `embedding_dim`.
    #[serde(default)]
    pub clip_embed_dim: Option<usize>,
    /// Width of the text embedding input; `null` means `embedding_dim`.
    #[serde(default)]
    pub embedding_proj_dim: Option<usize>,
    #[serde(default)]
    pub norm_in_type: Option<String>,
    #[serde(default)]
    pub embedding_proj_norm_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_proj_type: Option<String>,
    #[serde(default)]
    pub added_emb_type: Option<String>,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

impl PriorConfig {
    pub fn width(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
    pub fn clip_dim(&self) -> usize {
        self.clip_embed_dim.unwrap_or(self.embedding_dim)
    }
    pub fn text_embed_dim(&self) -> usize {
        self.embedding_proj_dim.unwrap_or(self.embedding_dim)
    }
    /// Tokens in the prior's sequence: text rows + control + text embedding + ε + prd.
    pub fn sequence_length(&self) -> usize {
        self.num_embeddings + self.additional_embeddings
    }

    /// Refuses variants of `PriorTransformer` that λ-ECLIPSE does not use, rather than computing something else.
    pub fn validate(&self, path: &str) -> Result<()> {
        let unsupported = |what: &str| Err(Error::config(path, format!("unsupported prior variant: {what}")));
        if self.norm_in_type.is_some() {
            return unsupported("norm_in_type");
        }
        if self.embedding_proj_norm_type.is_some() {
            return unsupported("embedding_proj_norm_type");
        }
        if self.encoder_hid_proj_type.as_deref().is_some_and(|t| t != "linear") {
            return unsupported("encoder_hid_proj_type other than linear");
        }
        if self.added_emb_type.as_deref().is_some_and(|t| t != "prd") {
            return unsupported("added_emb_type other than prd");
        }
        if self.additional_embeddings != 4 {
            return unsupported("additional_embeddings must be 4 (control, text embedding, noise, prd)");
        }
        if self.width() == 0 || self.num_layers == 0 {
            return Err(Error::config(path, "num_attention_heads, attention_head_dim and num_layers must be positive"));
        }
        super::check_norm_eps(path, "layer_norm_eps", self.layer_norm_eps)
    }
}

/// One pre-LN block: `h += attn(norm1(h))`, `h += ff(norm3(h))` with exact GELU.
struct PriorBlock<B: Backend> {
    norm1: LayerNorm<B>,
    attn: AttentionProjections<B>,
    norm3: LayerNorm<B>,
    ff_in: Linear<B>,
    ff_out: Linear<B>,
}

impl<B: Backend> PriorBlock<B> {
    fn new(vb: &Weights<B>, width: usize, eps: f64) -> Result<Self> {
        let ff = vb.pp("ff").pp("net");
        Ok(PriorBlock {
            norm1: LayerNorm::new(&vb.pp("norm1"), width, eps)?,
            attn: AttentionProjections::diffusers(&vb.pp("attn1"), width)?,
            norm3: LayerNorm::new(&vb.pp("norm3"), width, eps)?,
            ff_in: Linear::new(&ff.pp(0).pp("proj"), width, 4 * width, true)?,
            ff_out: Linear::new(&ff.pp(2), 4 * width, width, true)?,
        })
    }
}

pub struct LambdaPrior<B: Backend> {
    proj_in: Linear<B>,
    embedding_proj: Linear<B>,
    embedding_control: Linear<B>,
    encoder_hidden_states_proj: Linear<B>,
    positional_embedding: B::Tensor,
    prd_embedding: B::Tensor,
    blocks: Vec<PriorBlock<B>>,
    norm_out: LayerNorm<B>,
    proj_to_clip: Linear<B>,
    pub config: PriorConfig,
}

/// Inputs of one prior pass, all on the backend.
pub struct PriorInputs<'a, B: Backend> {
    /// `[num_embeddings, embedding_dim]`: the text tower's hidden states after subject substitution.
    pub encoder_hidden_states: &'a B::Tensor,
    /// The prompt's attention mask (1 = token), length `num_embeddings`.
    pub attention_mask: &'a [u32],
    /// `[1, embedding_dim]`: image embedding of the edge map, or the zero-image embedding.
    pub control_embeds: &'a B::Tensor,
    /// `[1, embedding_proj_dim]`: the unmodified prompt's `text_embeds`.
    pub text_embeds: &'a B::Tensor,
    /// `[1, clip_embed_dim]`: ε.
    pub noise: &'a B::Tensor,
}

/// Names stored in λ-ECLIPSE prior checkpoints that the reference does not use.
pub const PRIOR_UNUSED: &[&str] = &["clip_mean", "clip_std"];

impl<B: Backend> LambdaPrior<B> {
    pub fn new(be: &B, vb: &Weights<B>, cfg: &PriorConfig) -> Result<Self> {
        let (w, d, seq) = (cfg.width(), cfg.embedding_dim, cfg.sequence_length());
        let eps = cfg.layer_norm_eps;
        let blocks = (0..cfg.num_layers)
            .map(|i| PriorBlock::new(&vb.pp("transformer_blocks").pp(i), w, eps))
            .collect::<Result<_>>()?;
        Ok(LambdaPrior {
            proj_in: Linear::new(&vb.pp("proj_in"), cfg.clip_dim(), w, true)?,
            embedding_proj: Linear::new(&vb.pp("embedding_proj"), cfg.text_embed_dim(), w, true)?,
            embedding_control: Linear::new(&vb.pp("embedding_control"), d, w, true)?,
            encoder_hidden_states_proj: Linear::new(&vb.pp("encoder_hidden_states_proj"), d, w, true)?,
            positional_embedding: be.reshape(&vb.get("positional_embedding", &[1, seq, w])?, &[seq, w])?,
            prd_embedding: be.reshape(&vb.get("prd_embedding", &[1, 1, w])?, &[1, w])?,
            blocks,
            norm_out: LayerNorm::new(&vb.pp("norm_out"), w, eps)?,
            proj_to_clip: Linear::new(&vb.pp("proj_to_clip_embeddings"), w, cfg.clip_dim(), true)?,
            config: cfg.clone(),
        })
    }

    /// The additive attention bias `[seq, seq]`: −10000 on text keys whose mask is 0, plus −10000 strictly
    /// above the diagonal (the two add).
    pub fn attention_bias(&self, attention_mask: &[u32]) -> Vec<f32> {
        let seq = self.config.sequence_length();
        let mut bias = vec![0f32; seq * seq];
        for q in 0..seq {
            for k in 0..seq {
                let padded = k < self.config.num_embeddings && attention_mask.get(k).copied().unwrap_or(0) == 0;
                bias[q * seq + k] = if padded { PRIOR_MASKED } else { 0.0 } + if k > q { PRIOR_MASKED } else { 0.0 };
            }
        }
        bias
    }

    /// One forward pass → the predicted image embedding `[1, clip_embed_dim]`.
    pub fn forward(&self, be: &B, inputs: &PriorInputs<B>) -> Result<B::Tensor> {
        let cfg = &self.config;
        if inputs.attention_mask.len() != cfg.num_embeddings {
            return Err(Error::Input(format!(
                "the prior takes {} text positions, got an attention mask of {}",
                cfg.num_embeddings,
                inputs.attention_mask.len()
            )));
        }
        let id = Activation::Identity;
        let text = self.encoder_hidden_states_proj.forward(be, inputs.encoder_hidden_states, id)?;
        let control = self.embedding_control.forward(be, inputs.control_embeds, id)?;
        let text_embed = self.embedding_proj.forward(be, inputs.text_embeds, id)?;
        let noise = self.proj_in.forward(be, inputs.noise, id)?;
        let seq = be.concat_rows(&[&text, &control, &text_embed, &noise, &self.prd_embedding])?;
        let mut h = be.add(&seq, &self.positional_embedding)?;
        let seq_len = cfg.sequence_length();
        let bias = be.from_f32(&self.attention_bias(inputs.attention_mask), &[seq_len, seq_len])?;
        let scale = (cfg.attention_head_dim as f32).powf(-0.5);
        for block in &self.blocks {
            let x = block.norm1.forward(be, &h)?;
            h = block.attn.self_attention_residual(be, &x, cfg.num_attention_heads, scale, Some(&bias), &h)?;
            let x = block.norm3.forward(be, &h)?;
            let x = block.ff_in.forward(be, &x, Activation::GeluErf)?;
            h = block.ff_out.forward_residual(be, &x, &h)?;
        }
        let h = self.norm_out.forward(be, &h)?;
        let prd = be.slice_rows(&h, seq_len - 1, 1)?;
        self.proj_to_clip.forward(be, &prd, id)
    }
}
