//! The layers every model shares, with PyTorch / Hugging Face weight names and shapes, written as candle-nn
//! writes them: `new(vb, …)` reads the layer's weights under `vb` (checking their shapes), `forward` calls the
//! op layer. Feature maps are `[h·w, c]` (channels-last, see [`crate::ops::Backend::conv2d`]).

use crate::error::{Error, Result};
use crate::ops::{Activation, Backend};
use crate::weights::Weights;

/// `nn.Linear(in, out, bias)`: `weight [out, in]`, `bias [out]`; an activation can be fused after it.
pub struct Linear<B: Backend> {
    weight: B::Tensor,
    bias: Option<B::Tensor>,
}

impl<B: Backend> Linear<B> {
    pub fn new(vb: &Weights<B>, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Ok(Linear {
            weight: vb.lay_out_for_products("weight", vb.get("weight", &[out_dim, in_dim])?)?,
            bias: if bias { Some(vb.get("bias", &[out_dim])?) } else { None },
        })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor, act: Activation) -> Result<B::Tensor> {
        be.linear(x, &self.weight, self.bias.as_ref(), act)
    }

    /// `residual + self(x)`: the layer with the skip connection around it (fused on the GPU).
    pub fn forward_residual(&self, be: &B, x: &B::Tensor, residual: &B::Tensor) -> Result<B::Tensor> {
        be.linear_residual(x, &self.weight, self.bias.as_ref(), residual)
    }
}

/// `nn.LayerNorm(dim, eps)` over the last dimension, with affine `weight` and `bias`.
pub struct LayerNorm<B: Backend> {
    gamma: B::Tensor,
    beta: B::Tensor,
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(vb: &Weights<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm { gamma: vb.get("weight", &[dim])?, beta: vb.get("bias", &[dim])?, eps })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        be.layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}

/// `nn.Conv2d(cin, cout, kernel, stride 1, padding kernel/2)` with bias: the stored weight `[cout, cin, k, k]` is
/// kept as `[cout, cin·k·k]`, the layout the op layer takes.
pub struct Conv2d<B: Backend> {
    weight: B::Tensor,
    bias: Option<B::Tensor>,
    kernel: usize,
}

impl<B: Backend> Conv2d<B> {
    pub fn new(be: &B, vb: &Weights<B>, cin: usize, cout: usize, kernel: usize) -> Result<Self> {
        if kernel.is_multiple_of(2) {
            return Err(Error::Input(format!("convolution kernel {kernel} is not odd (only 1 and 3 are supported)")));
        }
        let weight = vb.get("weight", &[cout, cin, kernel, kernel])?;
        Ok(Conv2d {
            weight: vb.lay_out_for_products("weight", be.reshape(&weight, &[cout, cin * kernel * kernel])?)?,
            bias: Some(vb.get("bias", &[cout])?),
            kernel,
        })
    }

    /// `x [h·w, cin]` → `[h·w, cout]`.
    pub fn forward(&self, be: &B, x: &B::Tensor, h: usize, w: usize) -> Result<B::Tensor> {
        be.conv2d(x, h, w, &self.weight, self.bias.as_ref(), self.kernel)
    }
}

/// `nn.GroupNorm(groups, c, eps)` with affine weight and bias.
pub struct GroupNorm<B: Backend> {
    gamma: B::Tensor,
    beta: B::Tensor,
    groups: usize,
    eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    pub fn new(vb: &Weights<B>, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::Input(format!("group norm: {channels} channels cannot be split into {groups} groups")));
        }
        Ok(GroupNorm { gamma: vb.get("weight", &[channels])?, beta: vb.get("bias", &[channels])?, groups, eps })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        be.group_norm(x, self.groups, &self.gamma, &self.beta, self.eps)
    }

    /// Group norm followed by an activation (the resnets' `nonlinearity(norm(x))`).
    pub fn forward_act(&self, be: &B, x: &B::Tensor, act: Activation) -> Result<B::Tensor> {
        be.group_norm_act(x, self.groups, &self.gamma, &self.beta, self.eps, act)
    }
}

/// A resnet's skip path (diffusers' `ResnetBlock2D` and its variants): the 1×1 `conv_shortcut` where the
/// channel count changes, else the input itself.
pub struct Shortcut<B: Backend>(Option<Conv2d<B>>);

impl<B: Backend> Shortcut<B> {
    /// `vb` is the resnet's root.
    pub fn new(be: &B, vb: &Weights<B>, cin: usize, cout: usize) -> Result<Self> {
        Ok(Shortcut(if cin != cout { Some(Conv2d::new(be, &vb.pp("conv_shortcut"), cin, cout, 1)?) } else { None }))
    }

    pub fn forward(&self, be: &B, x: &B::Tensor, h: usize, w: usize) -> Result<B::Tensor> {
        match &self.0 {
            Some(conv) => conv.forward(be, x, h, w),
            None => Ok(x.clone()),
        }
    }
}

/// An attention's four projections, `width → width` with bias: queries, keys, values and the output.
pub struct AttentionProjections<B: Backend> {
    pub q: Linear<B>,
    pub k: Linear<B>,
    pub v: Linear<B>,
    pub out: Linear<B>,
}

impl<B: Backend> AttentionProjections<B> {
    /// diffusers' `Attention`: `to_q`, `to_k`, `to_v`, `to_out.0`.
    pub fn diffusers(vb: &Weights<B>, width: usize) -> Result<Self> {
        Self::named(width, &vb.pp("to_q"), &vb.pp("to_k"), &vb.pp("to_v"), &vb.pp("to_out").pp(0))
    }

    /// transformers' `CLIPAttention`: `q_proj`, `k_proj`, `v_proj`, `out_proj`.
    pub fn clip(vb: &Weights<B>, width: usize) -> Result<Self> {
        Self::named(width, &vb.pp("q_proj"), &vb.pp("k_proj"), &vb.pp("v_proj"), &vb.pp("out_proj"))
    }

    fn named(width: usize, q: &Weights<B>, k: &Weights<B>, v: &Weights<B>, out: &Weights<B>) -> Result<Self> {
        Ok(AttentionProjections {
            q: Linear::new(q, width, width, true)?,
            k: Linear::new(k, width, width, true)?,
            v: Linear::new(v, width, width, true)?,
            out: Linear::new(out, width, width, true)?,
        })
    }

    /// `out(attention(q(x), k(x), v(x)))` over `heads` heads with an optional additive bias; the residual is
    /// the caller's.
    pub fn self_attention(
        &self,
        be: &B,
        x: &B::Tensor,
        heads: usize,
        scale: f32,
        bias: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        self.out.forward(be, &self.heads(be, x, heads, scale, bias)?, Activation::Identity)
    }

    /// The heads' output before the output projection.
    fn heads(&self, be: &B, x: &B::Tensor, heads: usize, scale: f32, bias: Option<&B::Tensor>) -> Result<B::Tensor> {
        let id = Activation::Identity;
        let (q, k, v) = (self.q.forward(be, x, id)?, self.k.forward(be, x, id)?, self.v.forward(be, x, id)?);
        be.attention(&q, &k, &v, heads, scale, bias)
    }

    /// `residual + self_attention(x)`: a transformer block's attention with its skip connection, the add
    /// fused into the output projection.
    pub fn self_attention_residual(
        &self,
        be: &B,
        x: &B::Tensor,
        heads: usize,
        scale: f32,
        bias: Option<&B::Tensor>,
        residual: &B::Tensor,
    ) -> Result<B::Tensor> {
        self.out.forward_residual(be, &self.heads(be, x, heads, scale, bias)?, residual)
    }
}
