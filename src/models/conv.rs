//! What the convolutional models (the decoder's UNet and MoVQ) share besides their layers
//! ([`super::layers`]): per-block config values, and the conversion between PyTorch's channels-first samples
//! and the op layer's channels-last feature maps `[h·w, c]`.

use crate::error::{Error, Result};
use serde::Deserialize;

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
