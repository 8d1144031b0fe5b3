//! Layers of the convolutional models (the decoder's UNet and MoVQ) over feature maps `[h·w, c]`
//! (channels-last, see [`crate::ops::Backend::conv2d`]), with PyTorch weight names and shapes.

use crate::error::{Error, Result};
use crate::ops::{Activation, Backend};
use crate::weights::Weights;
use serde::Deserialize;

/// `nn.Conv2d(cin, cout, kernel, stride 1, padding kernel/2)`: the stored weight `[cout, cin, k, k]` is kept as
/// `[cout, cin·k·k]`, the layout the op layer takes.
pub struct Conv2d<B: Backend> {
    weight: B::Tensor,
    bias: Option<B::Tensor>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
}

impl<B: Backend> Conv2d<B> {
    pub fn new(be: &B, vb: &Weights<B>, cin: usize, cout: usize, kernel: usize) -> Result<Self> {
        if kernel % 2 == 0 {
            return Err(Error::Input(format!("convolution kernel {kernel} is not odd (only 1 and 3 are supported)")));
        }
        let weight = vb.get("weight", &[cout, cin, kernel, kernel])?;
        Ok(Conv2d {
            weight: be.reshape(&weight, &[cout, cin * kernel * kernel])?,
            bias: Some(vb.get("bias", &[cout])?),
            in_channels: cin,
            out_channels: cout,
            kernel,
        })
    }

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
        if groups == 0 || channels % groups != 0 {
            return Err(Error::Input(format!("group norm: {channels} channels cannot be split into {groups} groups")));
        }
        Ok(GroupNorm { gamma: vb.get("weight", &[channels])?, beta: vb.get("bias", &[channels])?, groups, eps })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        be.group_norm(x, self.groups, &self.gamma, &self.beta, self.eps)
    }

    /// Group norm followed by an activation (the resnets' `nonlinearity(norm(x))`).
    pub fn forward_act(&self, be: &B, x: &B::Tensor, act: Activation) -> Result<B::Tensor> {
        let y = self.forward(be, x)?;
        match act {
            Activation::Identity => Ok(y),
            act => be.activation(&y, act),
        }
    }
}

/// A config value diffusers accepts either once for every block or as one value per block.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value of block `i` of `n`, or an error naming `field` when a list has the wrong length.
    pub fn get(&self, i: usize, n: usize, field: &str, path: &str) -> Result<T> {
        match self {
            PerBlock::One(v) => Ok(v.clone()),
            PerBlock::Each(v) if v.len() == n => Ok(v[i].clone()),
            PerBlock::Each(v) => Err(Error::config(path, format!("`{field}` lists {} values for {n} blocks", v.len()))),
        }
    }
}

/// Channels-first `[c, h, w]` host data (PyTorch's layout, one sample) → channels-last rows `[h·w, c]`.
pub fn nchw_to_rows(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * h * w];
    for ch in 0..c {
        for p in 0..h * w {
            out[p * c + ch] = x[ch * h * w + p];
        }
    }
    out
}

/// Channels-last rows `[h·w, c]` → channels-first `[c, h, w]`, keeping the first `keep` channels.
pub fn rows_to_nchw(x: &[f32], c: usize, h: usize, w: usize, keep: usize) -> Vec<f32> {
    let mut out = vec![0f32; keep * h * w];
    for ch in 0..keep.min(c) {
        for p in 0..h * w {
            out[ch * h * w + p] = x[p * c + ch];
        }
    }
    out
}
