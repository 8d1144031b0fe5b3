//! The UNet's conditioning: the timestep's sinusoidal features through `time_embedding` plus the image
//! embedding through `add_embedding` (diffusers' `TimestepEmbedding` and `ImageTimeEmbedding`), handed to every
//! resnet; and the image embedding as context tokens for the attentions (`encoder_hid_proj`, diffusers'
//! `ImageProjection`).

use super::UNetConfig;
use crate::error::Result;
use crate::models::layers::{LayerNorm, Linear};
use crate::ops::{Activation, Backend};
use crate::weights::Weights;

/// Context tokens made from the image embedding (`ImageProjection.num_image_text_embeds`, fixed in diffusers).
pub const IMAGE_CONTEXT_TOKENS: usize = 32;
/// The epsilon of `ImageTimeEmbedding`'s and `ImageProjection`'s layer norms (`nn.LayerNorm`'s default).
const LAYER_NORM_EPS: f64 = 1e-5;

/// diffusers' `get_timestep_embedding` (float32 throughout, as PyTorch computes it): `dim/2` frequencies
/// `exp(−ln(10000)·i / (dim/2 − freq_shift))`, `[sin, cos]` of `t·freq` (`[cos, sin]` with `flip_sin_to_cos`),
/// zero-padded to an odd `dim`.
pub fn timestep_embedding(t: f32, dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Vec<f32> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let denom = (half as f64 - freq_shift) as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = (log_period * i as f32) / denom;
            t * (exponent as f64).exp() as f32
        })
        .collect();
    let sin = args.iter().map(|&a| (a as f64).sin() as f32);
    let cos = args.iter().map(|&a| (a as f64).cos() as f32);
    let mut emb: Vec<f32> = if flip_sin_to_cos { cos.chain(sin).collect() } else { sin.chain(cos).collect() };
    emb.resize(dim, 0.0);
    emb
}

/// The time embedding handed to every resnet: as is (`resnet_skip_time_act`) and after SiLU.
pub(super) struct TimeInputs<B: Backend> {
    pub raw: B::Tensor,
    pub activated: B::Tensor,
}

/// `time_embedding` (`linear_1`, SiLU, `linear_2`) of the timestep plus `add_embedding` (`image_proj`, then
/// `image_norm`) of the image embedding.
pub(super) struct TimeEmbedding<B: Backend> {
    linear_1: Linear<B>,
    linear_2: Linear<B>,
    image_proj: Linear<B>,
    image_norm: LayerNorm<B>,
    channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl<B: Backend> TimeEmbedding<B> {
    /// `vb` is the UNet's root.
    pub(super) fn new(vb: &Weights<B>, cfg: &UNetConfig) -> Result<Self> {
        let (c0, temb, d) = (cfg.block_out_channels[0], cfg.time_embed_dim(), cfg.image_embed_dim());
        let (time, add) = (vb.pp("time_embedding"), vb.pp("add_embedding"));
        Ok(TimeEmbedding {
            linear_1: Linear::new(&time.pp("linear_1"), c0, temb, true)?,
            linear_2: Linear::new(&time.pp("linear_2"), temb, temb, true)?,
            image_proj: Linear::new(&add.pp("image_proj"), d, temb, true)?,
            image_norm: LayerNorm::new(&add.pp("image_norm"), temb, LAYER_NORM_EPS)?,
            channels: c0,
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
        })
    }

    pub(super) fn forward(&self, be: &B, timestep: f32, image_embeds: &B::Tensor) -> Result<TimeInputs<B>> {
        let id = Activation::Identity;
        let c0 = self.channels;
        let t_emb = be.from_f32(&timestep_embedding(timestep, c0, self.flip_sin_to_cos, self.freq_shift), &[1, c0])?;
        let emb = self.linear_1.forward(be, &t_emb, Activation::Silu)?;
        let emb = self.linear_2.forward(be, &emb, id)?;
        let aug = self.image_norm.forward(be, &self.image_proj.forward(be, image_embeds, id)?)?;
        let emb = be.add(&emb, &aug)?;
        Ok(TimeInputs { activated: be.activation(&emb, Activation::Silu)?, raw: emb })
    }
}

/// `encoder_hid_proj`: the image embedding `[1, D]` as [`IMAGE_CONTEXT_TOKENS`] layer-normed context tokens.
pub(super) struct ImageProjection<B: Backend> {
    image_embeds: Linear<B>,
    norm: LayerNorm<B>,
    cross: usize,
}

impl<B: Backend> ImageProjection<B> {
    /// `vb` is the UNet's root.
    pub(super) fn new(vb: &Weights<B>, cfg: &UNetConfig) -> Result<Self> {
        let (d, cross) = (cfg.image_embed_dim(), cfg.cross_dim());
        let hid = vb.pp("encoder_hid_proj");
        Ok(ImageProjection {
            image_embeds: Linear::new(&hid.pp("image_embeds"), d, IMAGE_CONTEXT_TOKENS * cross, true)?,
            norm: LayerNorm::new(&hid.pp("norm"), cross, LAYER_NORM_EPS)?,
            cross,
        })
    }

    /// `image_embeds [1, D]` → `[IMAGE_CONTEXT_TOKENS, cross]`.
    pub(super) fn forward(&self, be: &B, image_embeds: &B::Tensor) -> Result<B::Tensor> {
        let context = self.image_embeds.forward(be, image_embeds, Activation::Identity)?;
        self.norm.forward(be, &be.reshape(&context, &[IMAGE_CONTEXT_TOKENS, self.cross])?)
    }
}
