//! diffusers' `Attention` with `AttnAddedKVProcessor`, the attention of the `SimpleCrossAttn` blocks.

use crate::error::Result;
use crate::models::layers::{AttentionProjections, GroupNorm, Linear};
use crate::ops::{Activation, Backend};
use crate::weights::Weights;

/// `Attention`'s own group-norm epsilon (the SimpleCrossAttn blocks do not pass `norm_eps` to it).
const ATTENTION_NORM_EPS: f64 = 1e-5;

/// Group norm, queries from the map, keys and values from the context tokens (first) and the map, one softmax,
/// output projection, residual. No feed-forward.
pub(super) struct AddedKvAttention<B: Backend> {
    group_norm: GroupNorm<B>,
    proj: AttentionProjections<B>,
    add_k_proj: Linear<B>,
    add_v_proj: Linear<B>,
    heads: usize,
    scale: f32,
}

impl<B: Backend> AddedKvAttention<B> {
    pub(super) fn new(
        vb: &Weights<B>,
        channels: usize,
        head_dim: usize,
        cross_dim: usize,
        groups: usize,
    ) -> Result<Self> {
        Ok(AddedKvAttention {
            group_norm: GroupNorm::new(&vb.pp("group_norm"), groups, channels, ATTENTION_NORM_EPS)?,
            proj: AttentionProjections::diffusers(vb, channels)?,
            add_k_proj: Linear::new(&vb.pp("add_k_proj"), cross_dim, channels, true)?,
            add_v_proj: Linear::new(&vb.pp("add_v_proj"), cross_dim, channels, true)?,
            heads: channels / head_dim,
            scale: (head_dim as f32).powf(-0.5),
        })
    }

    /// `x [h·w, c]`, `context [tokens, cross]` → `[h·w, c]`.
    pub(super) fn forward(&self, be: &B, x: &B::Tensor, context: &B::Tensor) -> Result<B::Tensor> {
        let id = Activation::Identity;
        let hs = self.group_norm.forward(be, x)?;
        let q = self.proj.q.forward(be, &hs, id)?;
        let k = be.concat_rows(&[&self.add_k_proj.forward(be, context, id)?, &self.proj.k.forward(be, &hs, id)?])?;
        let v = be.concat_rows(&[&self.add_v_proj.forward(be, context, id)?, &self.proj.v.forward(be, &hs, id)?])?;
        let a = be.attention(&q, &k, &v, self.heads, self.scale, None)?;
        // x + out(a): IEEE addition is commutative, so the fused add equals diffusers' out(a) + x exactly.
        self.proj.out.forward_residual(be, &a, x)
    }
}
