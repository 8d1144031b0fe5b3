//! The Kandinsky 2.2 decoder's UNet: diffusers' `UNet2DConditionModel` as `kandinsky-community/
//! kandinsky-2-2-decoder` configures it — image-embedding conditioning (`addition_embed_type: image`,
//! `encoder_hid_dim_type: image_proj`), resnet blocks with scale-shift time conditioning that down/up-sample
//! inside a resnet, and added-KV attention (32 context tokens first, then the spatial tokens) without
//! feed-forward. Every size comes from `config.json`, so a distilled student of the same classes loads as is;
//! options this code does not implement are refused by name.
//!
//! One call of [`UNet::forward`] is one sample; classifier-free guidance is two calls.

use super::conv::PerBlock;
use super::layers::{AttentionProjections, Conv2d, GroupNorm, LayerNorm, Linear, Shortcut};
use crate::error::{Error, Result};
use crate::ops::meta::{Cost, MetaBackend, MetaTensor};
use crate::ops::{Activation, Backend};
use crate::weights::{WeightStore, Weights};
use serde::Deserialize;

/// Context tokens made from the image embedding (`ImageProjection.num_image_text_embeds`, fixed in diffusers).
pub const IMAGE_CONTEXT_TOKENS: usize = 32;
/// `Attention`'s own group-norm epsilon (the SimpleCrossAttn blocks do not pass `norm_eps` to it).
const ATTENTION_NORM_EPS: f64 = 1e-5;

fn d_in_channels() -> usize {
    4
}
fn d_out_channels() -> usize {
    4
}
fn d_layers() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn d_head_dim() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn d_cross() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_norm_eps() -> f64 {
    1e-5
}
fn d_silu() -> String {
    "silu".into()
}
fn d_true() -> bool {
    true
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}
fn d_kernel() -> usize {
    3
}
fn d_one() -> f64 {
    1.0
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_only_cross() -> PerBlock<bool> {
    PerBlock::One(false)
}

#[derive(Clone, Debug, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    #[serde(default = "d_out_channels")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_layers")]
    pub layers_per_block: PerBlock<usize>,
    /// Width of one attention head (diffusers' historic name; heads = channels / this).
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerBlock<usize>,
    /// Width of the image embedding.
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "d_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "d_one")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "d_one")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "d_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_kernel")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default = "d_only_cross")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub attention_type: Option<String>,
}

/// What one down/up block is, resolved from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
    Resnet,
    CrossAttn,
}

impl UNetConfig {
    fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Width of the time embedding (`time_embedding_dim` or 4 × the first block's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(4 * self.block_out_channels[0])
    }

    /// Width of the image embedding this UNet takes.
    pub fn image_embed_dim(&self) -> usize {
        self.encoder_hid_dim.unwrap_or(0)
    }

    pub fn cross_dim(&self) -> usize {
        match &self.cross_attention_dim {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.first().copied().unwrap_or(0),
        }
    }

    /// Latent sides must be multiples of this (one halving per down block but the last).
    pub fn size_multiple(&self) -> usize {
        1 << self.levels().saturating_sub(1)
    }

    fn down_kind(&self, i: usize) -> BlockKind {
        if self.down_block_types[i] == "SimpleCrossAttnDownBlock2D" { BlockKind::CrossAttn } else { BlockKind::Resnet }
    }

    fn up_kind(&self, i: usize) -> BlockKind {
        if self.up_block_types[i] == "SimpleCrossAttnUpBlock2D" { BlockKind::CrossAttn } else { BlockKind::Resnet }
    }

    /// What one [`UNet::forward`] on an `h×w` latent computes (FLOPs, largest activation), found by running
    /// that forward on shapes ([`MetaBackend`]): no weight is read or made. Call [`UNetConfig::validate`] first.
    pub fn forward_cost(&self, h: usize, w: usize) -> Result<Cost> {
        let be = MetaBackend::new();
        let store = WeightStore::placeholders(MetaTensor::weight);
        let unet = UNet::new(&be, &store.root(), self)?;
        let (sample, image_embeds) = (be.input(&[h * w, self.in_channels]), be.input(&[1, self.image_embed_dim()]));
        be.measure(|| unet.forward(&be, &sample, h, w, 0.0, &image_embeds))
    }

    /// Refuses every `UNet2DConditionModel` option this implementation does not compute, naming the field.
    pub fn validate(&self, path: &str) -> Result<()> {
        let bad = |field: &str, what: String| Err(Error::config(path, format!("unsupported UNet config: `{field}` {what}")));
        let n = self.levels();
        if n == 0 || self.block_out_channels.contains(&0) {
            return bad("block_out_channels", "must list at least one positive width".into());
        }
        super::check_norm_eps(path, "norm_eps", self.norm_eps)?;
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(
                "down_block_types",
                format!("and `up_block_types` must both have one entry per block_out_channels ({n})"),
            );
        }
        for t in &self.down_block_types {
            if t != "ResnetDownsampleBlock2D" && t != "SimpleCrossAttnDownBlock2D" {
                return bad("down_block_types", format!("entry {t:?} (supported: ResnetDownsampleBlock2D, SimpleCrossAttnDownBlock2D)"));
            }
        }
        for t in &self.up_block_types {
            if t != "ResnetUpsampleBlock2D" && t != "SimpleCrossAttnUpBlock2D" {
                return bad("up_block_types", format!("entry {t:?} (supported: ResnetUpsampleBlock2D, SimpleCrossAttnUpBlock2D)"));
            }
        }
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DSimpleCrossAttn") {
            return bad("mid_block_type", format!("{:?} (supported: UNetMidBlock2DSimpleCrossAttn)", self.mid_block_type));
        }
        if self.encoder_hid_dim_type.as_deref() != Some("image_proj") {
            return bad("encoder_hid_dim_type", format!("{:?} (supported: image_proj)", self.encoder_hid_dim_type));
        }
        if !matches!(self.encoder_hid_dim, Some(d) if d > 0) {
            return bad("encoder_hid_dim", "must be the image embedding width".into());
        }
        if self.addition_embed_type.as_deref() != Some("image") {
            return bad("addition_embed_type", format!("{:?} (supported: image)", self.addition_embed_type));
        }
        if Activation::from_hf_name(&self.act_fn) != Some(Activation::Silu) {
            return bad("act_fn", format!("{:?} (supported: silu)", self.act_fn));
        }
        if self.time_embedding_type != "positional" {
            return bad("time_embedding_type", format!("{:?} (supported: positional)", self.time_embedding_type));
        }
        if self.resnet_time_scale_shift != "scale_shift" && self.resnet_time_scale_shift != "default" {
            return bad("resnet_time_scale_shift", format!("{:?} (supported: scale_shift, default)", self.resnet_time_scale_shift));
        }
        let unsupported_set = [
            ("time_embedding_act_fn", self.time_embedding_act_fn.is_some()),
            ("timestep_post_act", self.timestep_post_act.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("class_embed_type", self.class_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            ("class_embeddings_concat", self.class_embeddings_concat),
            ("cross_attention_norm", self.cross_attention_norm.is_some()),
            ("center_input_sample", self.center_input_sample),
            ("dual_cross_attention", self.dual_cross_attention),
            ("num_attention_heads", self.num_attention_heads.is_some()),
            ("mid_block_only_cross_attention", self.mid_block_only_cross_attention == Some(true)),
            ("attention_type", self.attention_type.as_deref().is_some_and(|t| t != "default")),
        ];
        if let Some((field, _)) = unsupported_set.iter().find(|(_, set)| *set) {
            return bad(field, "is set; this implementation supports only its default".into());
        }
        let only_cross = match &self.only_cross_attention {
            PerBlock::One(b) => *b,
            PerBlock::Each(v) => v.iter().any(|&b| b),
        };
        if only_cross {
            return bad("only_cross_attention", "must be false".into());
        }
        if self.resnet_out_scale_factor != 1.0 || self.mid_block_scale_factor != 1.0 {
            return bad("resnet_out_scale_factor", "and `mid_block_scale_factor` must be 1".into());
        }
        for (field, k) in [("conv_in_kernel", self.conv_in_kernel), ("conv_out_kernel", self.conv_out_kernel)] {
            if k != 1 && k != 3 {
                return bad(field, format!("{k} (supported: 1, 3)"));
            }
        }
        let groups = match self.norm_num_groups {
            Some(g) if g > 0 => g,
            _ => return bad("norm_num_groups", "must be a positive number of groups".into()),
        };
        if matches!(self.cross_attention_dim, PerBlock::Each(_)) {
            return bad("cross_attention_dim", "must be one number (the image projection makes one context width)".into());
        }
        for i in 0..n {
            self.layers_per_block.get(i, n, "layers_per_block", path)?;
            let c = self.block_out_channels[i];
            if c % groups != 0 {
                return bad("norm_num_groups", format!("{groups} does not divide block width {c}"));
            }
            // Attention widths: down block i and the mid block at their own width; up block i at the reversed
            // width but with the unreversed head width, as diffusers builds them.
            let head = self.attention_head_dim.get(i, n, "attention_head_dim", path)?;
            let mut widths = Vec::new();
            if self.down_kind(i) == BlockKind::CrossAttn {
                widths.push(c);
            }
            if self.up_kind(i) == BlockKind::CrossAttn {
                widths.push(self.block_out_channels[n - 1 - i]);
            }
            if i == n - 1 {
                widths.push(c);
            }
            if let Some(w) = widths.iter().find(|&&w| head == 0 || w % head != 0) {
                return bad("attention_head_dim", format!("{head} does not divide the attention width {w}"));
            }
        }
        if self.block_out_channels[0] < 2 {
            return bad("block_out_channels", "the first width must be at least 2 (timestep sinusoid)".into());
        }
        Ok(())
    }
}

/// The time-conditioning flavour of the resnets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeCond {
    /// `h = GN2(h)·(1 + scale) + shift`.
    ScaleShift,
    /// `h = GN2(h + temb)`.
    Add,
}

/// Where a resnet resamples (inside, after `nonlinearity(norm1(x))`, both the input and the hidden state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resample {
    None,
    Down,
    Up,
}

/// diffusers' `ResnetBlock2D`.
struct Resnet<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    time_emb_proj: Linear<B>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    shortcut: Shortcut<B>,
    out_channels: usize,
    cond: TimeCond,
    resample: Resample,
    skip_time_act: bool,
}

struct UNetDims {
    groups: usize,
    eps: f64,
    temb: usize,
    cond: TimeCond,
    skip_time_act: bool,
}

impl<B: Backend> Resnet<B> {
    fn new(be: &B, vb: &Weights<B>, cin: usize, cout: usize, d: &UNetDims, resample: Resample) -> Result<Self> {
        let proj_out = if d.cond == TimeCond::ScaleShift { 2 * cout } else { cout };
        Ok(Resnet {
            norm1: GroupNorm::new(&vb.pp("norm1"), d.groups, cin, d.eps)?,
            conv1: Conv2d::new(be, &vb.pp("conv1"), cin, cout, 3)?,
            time_emb_proj: Linear::new(&vb.pp("time_emb_proj"), d.temb, proj_out, true)?,
            norm2: GroupNorm::new(&vb.pp("norm2"), d.groups, cout, d.eps)?,
            conv2: Conv2d::new(be, &vb.pp("conv2"), cout, cout, 3)?,
            shortcut: Shortcut::new(be, vb, cin, cout)?,
            out_channels: cout,
            cond: d.cond,
            resample,
            skip_time_act: d.skip_time_act,
        })
    }

    /// `x [h·w, cin]` → (`[h'·w', cout]`, h', w').
    fn forward(&self, be: &B, x: &B::Tensor, h: usize, w: usize, temb: &TimeInputs<B>) -> Result<(B::Tensor, usize, usize)> {
        let mut hs = self.norm1.forward_act(be, x, Activation::Silu)?;
        let mut input = x.clone();
        let (h2, w2) = match self.resample {
            Resample::None => (h, w),
            Resample::Down => {
                hs = be.avg_pool_2x2(&hs, h, w)?;
                input = be.avg_pool_2x2(&input, h, w)?;
                (h / 2, w / 2)
            }
            Resample::Up => {
                hs = be.resize_nearest(&hs, h, w, 2 * h, 2 * w)?;
                input = be.resize_nearest(&input, h, w, 2 * h, 2 * w)?;
                (2 * h, 2 * w)
            }
        };
        hs = self.conv1.forward(be, &hs, h2, w2)?;
        let t = self.time_emb_proj.forward(be, if self.skip_time_act { &temb.raw } else { &temb.activated }, Activation::Identity)?;
        hs = match self.cond {
            TimeCond::ScaleShift => {
                let halves = be.reshape(&t, &[2, self.out_channels])?;
                let (scale, shift) = (be.slice_rows(&halves, 0, 1)?, be.slice_rows(&halves, 1, 1)?);
                let normed = self.norm2.forward(be, &hs)?;
                be.activation(&be.scale_shift(&normed, &scale, &shift)?, Activation::Silu)?
            }
            TimeCond::Add => {
                // h + temb broadcast over positions, as scale_shift with a zero scale (exact: x·1 + t).
                let zero = be.from_f32(&vec![0.0; self.out_channels], &[1, self.out_channels])?;
                self.norm2.forward_act(be, &be.scale_shift(&hs, &zero, &t)?, Activation::Silu)?
            }
        };
        hs = self.conv2.forward(be, &hs, h2, w2)?;
        Ok((be.add(&self.shortcut.forward(be, &input, h2, w2)?, &hs)?, h2, w2))
    }
}

/// diffusers' `Attention` with `AttnAddedKVProcessor`: group norm, queries from the map, keys and values
/// from the context tokens (first) and the map, one softmax, output projection, residual. No feed-forward.
struct AddedKvAttention<B: Backend> {
    group_norm: GroupNorm<B>,
    proj: AttentionProjections<B>,
    add_k_proj: Linear<B>,
    add_v_proj: Linear<B>,
    heads: usize,
    scale: f32,
}

impl<B: Backend> AddedKvAttention<B> {
    fn new(vb: &Weights<B>, channels: usize, head_dim: usize, cross_dim: usize, groups: usize) -> Result<Self> {
        Ok(AddedKvAttention {
            group_norm: GroupNorm::new(&vb.pp("group_norm"), groups, channels, ATTENTION_NORM_EPS)?,
            proj: AttentionProjections::diffusers(vb, channels)?,
            add_k_proj: Linear::new(&vb.pp("add_k_proj"), cross_dim, channels, true)?,
            add_v_proj: Linear::new(&vb.pp("add_v_proj"), cross_dim, channels, true)?,
            heads: channels / head_dim,
            scale: (head_dim as f32).powf(-0.5),
        })
    }

    fn forward(&self, be: &B, x: &B::Tensor, context: &B::Tensor) -> Result<B::Tensor> {
        let id = Activation::Identity;
        let hs = self.group_norm.forward(be, x)?;
        let q = self.proj.q.forward(be, &hs, id)?;
        let k = be.concat_rows(&[&self.add_k_proj.forward(be, context, id)?, &self.proj.k.forward(be, &hs, id)?])?;
        let v = be.concat_rows(&[&self.add_v_proj.forward(be, context, id)?, &self.proj.v.forward(be, &hs, id)?])?;
        let a = be.attention(&q, &k, &v, self.heads, self.scale, None)?;
        be.add(&self.proj.out.forward(be, &a, id)?, x)
    }
}

/// One resnet, optionally followed by an attention.
struct Layer<B: Backend> {
    resnet: Resnet<B>,
    attention: Option<AddedKvAttention<B>>,
}

struct DownBlock<B: Backend> {
    layers: Vec<Layer<B>>,
    downsampler: Option<Resnet<B>>,
}

struct UpBlock<B: Backend> {
    layers: Vec<Layer<B>>,
    upsampler: Option<Resnet<B>>,
}

/// The time embedding handed to every resnet: as is (`resnet_skip_time_act`) and after SiLU.
struct TimeInputs<B: Backend> {
    raw: B::Tensor,
    activated: B::Tensor,
}

pub struct UNet<B: Backend> {
    conv_in: Conv2d<B>,
    time_linear_1: Linear<B>,
    time_linear_2: Linear<B>,
    add_image_proj: Linear<B>,
    add_image_norm: LayerNorm<B>,
    context_proj: Linear<B>,
    context_norm: LayerNorm<B>,
    down: Vec<DownBlock<B>>,
    mid_first: Resnet<B>,
    mid_attention: AddedKvAttention<B>,
    mid_second: Resnet<B>,
    up: Vec<UpBlock<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    pub config: UNetConfig,
}

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

impl<B: Backend> UNet<B> {
    /// `vb` is the root of a `UNet2DConditionModel` checkpoint; call [`UNetConfig::validate`] first.
    pub fn new(be: &B, vb: &Weights<B>, cfg: &UNetConfig) -> Result<Self> {
        let path = "unet/config.json";
        let n = cfg.levels();
        let ch = &cfg.block_out_channels;
        let groups = cfg.norm_num_groups.unwrap_or(32);
        let temb = cfg.time_embed_dim();
        let cross = cfg.cross_dim();
        let dims = UNetDims {
            groups,
            eps: cfg.norm_eps,
            temb,
            cond: if cfg.resnet_time_scale_shift == "scale_shift" { TimeCond::ScaleShift } else { TimeCond::Add },
            skip_time_act: cfg.resnet_skip_time_act,
        };
        let layers = |i: usize| cfg.layers_per_block.get(i, n, "layers_per_block", path);
        let head = |i: usize| cfg.attention_head_dim.get(i, n, "attention_head_dim", path);

        let mut down = Vec::with_capacity(n);
        let mut out_c = ch[0];
        for i in 0..n {
            let (in_c, vb) = (out_c, vb.pp("down_blocks").pp(i));
            out_c = ch[i];
            let attn = cfg.down_kind(i) == BlockKind::CrossAttn;
            let mut block_layers = Vec::new();
            for j in 0..layers(i)? {
                let cin = if j == 0 { in_c } else { out_c };
                block_layers.push(Layer {
                    resnet: Resnet::new(be, &vb.pp("resnets").pp(j), cin, out_c, &dims, Resample::None)?,
                    attention: if attn {
                        Some(AddedKvAttention::new(&vb.pp("attentions").pp(j), out_c, head(i)?, cross, groups)?)
                    } else {
                        None
                    },
                });
            }
            let downsampler = if i + 1 < n {
                Some(Resnet::new(be, &vb.pp("downsamplers").pp(0), out_c, out_c, &dims, Resample::Down)?)
            } else {
                None
            };
            down.push(DownBlock { layers: block_layers, downsampler });
        }

        let last = ch[n - 1];
        let mid = vb.pp("mid_block");
        let mid_first = Resnet::new(be, &mid.pp("resnets").pp(0), last, last, &dims, Resample::None)?;
        let mid_attention = AddedKvAttention::new(&mid.pp("attentions").pp(0), last, head(n - 1)?, cross, groups)?;
        let mid_second = Resnet::new(be, &mid.pp("resnets").pp(1), last, last, &dims, Resample::None)?;

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut out_c = rev[0];
        for i in 0..n {
            let vb = vb.pp("up_blocks").pp(i);
            let prev = out_c;
            out_c = rev[i];
            let input_c = rev[(i + 1).min(n - 1)];
            let count = layers(n - 1 - i)? + 1;
            let attn = cfg.up_kind(i) == BlockKind::CrossAttn;
            let mut block_layers = Vec::new();
            for j in 0..count {
                let skip = if j == count - 1 { input_c } else { out_c };
                let cin = if j == 0 { prev } else { out_c };
                block_layers.push(Layer {
                    resnet: Resnet::new(be, &vb.pp("resnets").pp(j), cin + skip, out_c, &dims, Resample::None)?,
                    // diffusers indexes the up blocks' head width unreversed.
                    attention: if attn {
                        Some(AddedKvAttention::new(&vb.pp("attentions").pp(j), out_c, head(i)?, cross, groups)?)
                    } else {
                        None
                    },
                });
            }
            let upsampler = if i + 1 < n {
                Some(Resnet::new(be, &vb.pp("upsamplers").pp(0), out_c, out_c, &dims, Resample::Up)?)
            } else {
                None
            };
            up.push(UpBlock { layers: block_layers, upsampler });
        }

        let d = cfg.image_embed_dim();
        let add = vb.pp("add_embedding");
        let hid = vb.pp("encoder_hid_proj");
        Ok(UNet {
            conv_in: Conv2d::new(be, &vb.pp("conv_in"), cfg.in_channels, ch[0], cfg.conv_in_kernel)?,
            time_linear_1: Linear::new(&vb.pp("time_embedding").pp("linear_1"), ch[0], temb, true)?,
            time_linear_2: Linear::new(&vb.pp("time_embedding").pp("linear_2"), temb, temb, true)?,
            add_image_proj: Linear::new(&add.pp("image_proj"), d, temb, true)?,
            add_image_norm: LayerNorm::new(&add.pp("image_norm"), temb, 1e-5)?,
            context_proj: Linear::new(&hid.pp("image_embeds"), d, IMAGE_CONTEXT_TOKENS * cross, true)?,
            context_norm: LayerNorm::new(&hid.pp("norm"), cross, 1e-5)?,
            down,
            mid_first,
            mid_attention,
            mid_second,
            up,
            norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), groups, ch[0], cfg.norm_eps)?,
            conv_out: Conv2d::new(be, &vb.pp("conv_out"), ch[0], cfg.out_channels, cfg.conv_out_kernel)?,
            config: cfg.clone(),
        })
    }

    /// One sample: `sample [h·w, in_channels]` (channels-last), the timestep, `image_embeds [1, D]` →
    /// `[h·w, out_channels]`.
    pub fn forward(&self, be: &B, sample: &B::Tensor, h: usize, w: usize, timestep: f32, image_embeds: &B::Tensor)
        -> Result<B::Tensor> {
        let cfg = &self.config;
        let m = cfg.size_multiple();
        if h == 0 || w == 0 || h % m != 0 || w % m != 0 {
            return Err(Error::Input(format!("the UNet takes latents whose sides are multiples of {m}, got {h}×{w}")));
        }
        let d = cfg.image_embed_dim();
        if be.shape(image_embeds) != [1, d] {
            return Err(Error::Input(format!("the UNet takes image embeddings [1, {d}], got {:?}", be.shape(image_embeds))));
        }
        if be.shape(sample) != [h * w, cfg.in_channels] {
            return Err(Error::Input(format!(
                "the UNet takes a sample [{}, {}], got {:?}",
                h * w,
                cfg.in_channels,
                be.shape(sample)
            )));
        }
        let id = Activation::Identity;
        let c0 = cfg.block_out_channels[0];
        let t_emb = be.from_f32(&timestep_embedding(timestep, c0, cfg.flip_sin_to_cos, cfg.freq_shift), &[1, c0])?;
        let emb = self.time_linear_1.forward(be, &t_emb, Activation::Silu)?;
        let emb = self.time_linear_2.forward(be, &emb, id)?;
        let aug = self.add_image_norm.forward(be, &self.add_image_proj.forward(be, image_embeds, id)?)?;
        let emb = be.add(&emb, &aug)?;
        let temb = TimeInputs { activated: be.activation(&emb, Activation::Silu)?, raw: emb };
        let cross = cfg.cross_dim();
        let context = self.context_proj.forward(be, image_embeds, id)?;
        let context = self.context_norm.forward(be, &be.reshape(&context, &[IMAGE_CONTEXT_TOKENS, cross])?)?;

        let (mut h, mut w) = (h, w);
        let mut x = self.conv_in.forward(be, sample, h, w)?;
        let mut skips = vec![x.clone()];
        for block in &self.down {
            for layer in &block.layers {
                x = layer.resnet.forward(be, &x, h, w, &temb)?.0;
                if let Some(a) = &layer.attention {
                    x = a.forward(be, &x, &context)?;
                }
                skips.push(x.clone());
            }
            if let Some(ds) = &block.downsampler {
                (x, h, w) = ds.forward(be, &x, h, w, &temb)?;
                skips.push(x.clone());
            }
        }
        x = self.mid_first.forward(be, &x, h, w, &temb)?.0;
        x = self.mid_attention.forward(be, &x, &context)?;
        x = self.mid_second.forward(be, &x, h, w, &temb)?.0;
        for block in &self.up {
            for layer in &block.layers {
                let skip = skips.pop().ok_or_else(|| Error::Input("UNet: the up blocks use more skips than the down blocks make".into()))?;
                x = be.concat_cols(&[&x, &skip])?;
                x = layer.resnet.forward(be, &x, h, w, &temb)?.0;
                if let Some(a) = &layer.attention {
                    x = a.forward(be, &x, &context)?;
                }
            }
            if let Some(us) = &block.upsampler {
                (x, h, w) = us.forward(be, &x, h, w, &temb)?;
            }
        }
        let x = self.norm_out.forward_act(be, &x, Activation::Silu)?;
        self.conv_out.forward(be, &x, h, w)
    }
}
