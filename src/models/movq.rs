//! The Kandinsky 2.2 image decoder: the decode half of diffusers' `VQModel` (MoVQ) with `norm_type: spatial`,
//! as `KandinskyV22Pipeline` calls it (`force_not_quantize=True`: no codebook lookup, no scaling factor).
//! `post_quant_conv` (1×1) on the latents, then the decoder, in which every normalisation is a `SpatialNorm`
//! conditioned on the raw latents `zq`: `GN(f; 32 groups, eps 1e-6)·conv_y(zq') + conv_b(zq')` with `zq'` the
//! nearest resize of `zq` to `f`'s size. Attentions are single-head over all positions. The encoder and the
//! codebook of the checkpoint are not loaded.

use super::layers::{AttentionProjections, Conv2d, GroupNorm, Shortcut};
use crate::error::{Error, Result};
use crate::ops::meta::{Cost, MetaBackend, MetaTensor};
use crate::ops::{Activation, Backend};
use crate::weights::{WeightStore, Weights};
use serde::Deserialize;

/// `SpatialNorm`'s group norm: fixed in diffusers, not `norm_num_groups`.
const SPATIAL_NORM_GROUPS: usize = 32;
const SPATIAL_NORM_EPS: f64 = 1e-6;

fn d_three() -> usize {
    3
}
fn d_block_out() -> Vec<usize> {
    vec![64]
}
fn d_one() -> usize {
    1
}
fn d_silu() -> String {
    "silu".into()
}
fn d_group() -> String {
    "group".into()
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_true() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
pub struct MoVqConfig {
    #[serde(default = "d_three")]
    pub out_channels: usize,
    #[serde(default = "d_three")]
    pub latent_channels: usize,
    #[serde(default = "d_block_out")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_group")]
    pub norm_type: String,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Channels of the quantised latents (`null`: `latent_channels`).
    #[serde(default)]
    pub vq_embed_dim: Option<usize>,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub lookup_from_codebook: bool,
}

impl MoVqConfig {
    /// Image pixels per latent along a side: 2^(levels − 1).
    pub fn scale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    pub fn vq_dim(&self) -> usize {
        self.vq_embed_dim.unwrap_or(self.latent_channels)
    }

    /// What one [`MoVq::decode`] of `lh×lw` latents computes (FLOPs, largest activation: the nearest ×2
    /// upsample into the last level at full size), found by running that decode on shapes ([`MetaBackend`]):
    /// no weight is read or made. Call [`MoVqConfig::validate`] first.
    pub fn decode_cost(&self, lh: usize, lw: usize) -> Result<Cost> {
        let be = MetaBackend::new();
        let store = WeightStore::placeholders(MetaTensor::weight);
        let movq = MoVq::new(&be, &store.root(), self)?;
        let latents = be.input(&[lh * lw, self.vq_dim()]);
        be.measure(|| movq.decode(&be, &latents, lh, lw))
    }

    /// Refuses every option this decoder does not compute, naming the field.
    pub fn validate(&self, path: &str) -> Result<()> {
        let bad = |field: &str, what: String| Err(Error::config(path, format!("unsupported MoVQ config: `{field}` {what}")));
        let n = self.block_out_channels.len();
        if n == 0 || self.block_out_channels.contains(&0) {
            return bad("block_out_channels", "must list at least one positive width".into());
        }
        if self.up_block_types.len() != n {
            return bad("up_block_types", format!("must have one entry per block_out_channels ({n})"));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D" && *t != "AttnUpDecoderBlock2D") {
            return bad("up_block_types", format!("entry {t:?} (supported: UpDecoderBlock2D, AttnUpDecoderBlock2D)"));
        }
        if self.norm_type != "spatial" {
            return bad("norm_type", format!("{:?} (supported: spatial, the MoVQ of Kandinsky 2.2)", self.norm_type));
        }
        if Activation::from_hf_name(&self.act_fn) != Some(Activation::Silu) {
            return bad("act_fn", format!("{:?} (supported: silu)", self.act_fn));
        }
        if self.lookup_from_codebook {
            return bad("lookup_from_codebook", "must be false".into());
        }
        if self.vq_dim() != self.latent_channels {
            return bad("vq_embed_dim", format!("{} must equal latent_channels {}", self.vq_dim(), self.latent_channels));
        }
        if self.layers_per_block == 0 || self.latent_channels == 0 || self.out_channels == 0 {
            return bad("layers_per_block", "and the channel counts must be positive".into());
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % SPATIAL_NORM_GROUPS != 0) {
            return bad("block_out_channels", format!("width {c} is not a multiple of the spatial norm's 32 groups"));
        }
        Ok(())
    }
}

/// `SpatialNorm(f_channels, zq_channels)`. `conv_y`/`conv_b` are 1×1, so they commute with the nearest resize:
/// they run at latent resolution and their outputs are resized (the same values as resizing `zq` first).
struct SpatialNorm<B: Backend> {
    norm: GroupNorm<B>,
    conv_y: Conv2d<B>,
    conv_b: Conv2d<B>,
}

/// The conditioning latents `zq [lh·lw, c]` and their size.
struct Zq<'a, B: Backend> {
    x: &'a B::Tensor,
    h: usize,
    w: usize,
}

impl<B: Backend> SpatialNorm<B> {
    fn new(be: &B, vb: &Weights<B>, channels: usize, zq_channels: usize) -> Result<Self> {
        Ok(SpatialNorm {
            norm: GroupNorm::new(&vb.pp("norm_layer"), SPATIAL_NORM_GROUPS, channels, SPATIAL_NORM_EPS)?,
            conv_y: Conv2d::new(be, &vb.pp("conv_y"), zq_channels, channels, 1)?,
            conv_b: Conv2d::new(be, &vb.pp("conv_b"), zq_channels, channels, 1)?,
        })
    }

    fn forward(&self, be: &B, f: &B::Tensor, h: usize, w: usize, zq: &Zq<B>) -> Result<B::Tensor> {
        let resize = |t: B::Tensor| -> Result<B::Tensor> {
            if (zq.h, zq.w) == (h, w) { Ok(t) } else { be.resize_nearest(&t, zq.h, zq.w, h, w) }
        };
        let y = resize(self.conv_y.forward(be, zq.x, zq.h, zq.w)?)?;
        let b = resize(self.conv_b.forward(be, zq.x, zq.h, zq.w)?)?;
        be.add(&be.mul(&self.norm.forward(be, f)?, &y)?, &b)
    }
}

/// `ResnetBlockCondNorm2D` with `time_embedding_norm="spatial"`.
struct Resnet<B: Backend> {
    norm1: SpatialNorm<B>,
    conv1: Conv2d<B>,
    norm2: SpatialNorm<B>,
    conv2: Conv2d<B>,
    shortcut: Shortcut<B>,
}

impl<B: Backend> Resnet<B> {
    fn new(be: &B, vb: &Weights<B>, cin: usize, cout: usize, zq_c: usize) -> Result<Self> {
        Ok(Resnet {
            norm1: SpatialNorm::new(be, &vb.pp("norm1"), cin, zq_c)?,
            conv1: Conv2d::new(be, &vb.pp("conv1"), cin, cout, 3)?,
            norm2: SpatialNorm::new(be, &vb.pp("norm2"), cout, zq_c)?,
            conv2: Conv2d::new(be, &vb.pp("conv2"), cout, cout, 3)?,
            shortcut: Shortcut::new(be, vb, cin, cout)?,
        })
    }

    fn forward(&self, be: &B, x: &B::Tensor, h: usize, w: usize, zq: &Zq<B>) -> Result<B::Tensor> {
        let hs = be.activation(&self.norm1.forward(be, x, h, w, zq)?, Activation::Silu)?;
        let hs = self.conv1.forward(be, &hs, h, w)?;
        let hs = be.activation(&self.norm2.forward(be, &hs, h, w, zq)?, Activation::Silu)?;
        let hs = self.conv2.forward(be, &hs, h, w)?;
        be.add(&self.shortcut.forward(be, x, h, w)?, &hs)
    }
}

/// `Attention` with a spatial norm and `residual_connection=True`: one head of the full width.
struct Attention<B: Backend> {
    norm: SpatialNorm<B>,
    proj: AttentionProjections<B>,
    scale: f32,
}

impl<B: Backend> Attention<B> {
    fn new(be: &B, vb: &Weights<B>, channels: usize, zq_c: usize) -> Result<Self> {
        Ok(Attention {
            norm: SpatialNorm::new(be, &vb.pp("spatial_norm"), channels, zq_c)?,
            proj: AttentionProjections::diffusers(vb, channels)?,
            scale: (channels as f32).powf(-0.5),
        })
    }

    fn forward(&self, be: &B, x: &B::Tensor, h: usize, w: usize, zq: &Zq<B>) -> Result<B::Tensor> {
        let hs = self.norm.forward(be, x, h, w, zq)?;
        be.add(&self.proj.self_attention(be, &hs, 1, self.scale, None)?, x)
    }
}

struct UpBlock<B: Backend> {
    resnets: Vec<Resnet<B>>,
    attentions: Vec<Attention<B>>,
    /// `Upsample2D(use_conv=True)`: nearest ×2, then a 3×3 conv.
    upsample_conv: Option<Conv2d<B>>,
}

pub struct MoVq<B: Backend> {
    post_quant_conv: Conv2d<B>,
    conv_in: Conv2d<B>,
    mid_first: Resnet<B>,
    mid_attention: Option<Attention<B>>,
    mid_second: Resnet<B>,
    up: Vec<UpBlock<B>>,
    norm_out: SpatialNorm<B>,
    conv_out: Conv2d<B>,
    pub config: MoVqConfig,
}

/// Whether a checkpoint tensor belongs to the decode path (the rest — encoder, `quant_conv`, codebook — is
/// not loaded).
pub fn is_decoder_tensor(name: &str) -> bool {
    name.starts_with("decoder.") || name.starts_with("post_quant_conv.")
}

impl<B: Backend> MoVq<B> {
    /// `vb` is the root of a `VQModel` checkpoint; call [`MoVqConfig::validate`] first.
    pub fn new(be: &B, vb: &Weights<B>, cfg: &MoVqConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let zc = cfg.latent_channels;
        let dec = vb.pp("decoder");
        let last = ch[n - 1];
        let mid = dec.pp("mid_block");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut out_c = rev[0];
        for i in 0..n {
            let vb = dec.pp("up_blocks").pp(i);
            let prev = out_c;
            out_c = rev[i];
            let attn = cfg.up_block_types[i] == "AttnUpDecoderBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block + 1 {
                resnets.push(Resnet::new(be, &vb.pp("resnets").pp(j), if j == 0 { prev } else { out_c }, out_c, zc)?);
                if attn {
                    attentions.push(Attention::new(be, &vb.pp("attentions").pp(j), out_c, zc)?);
                }
            }
            let upsample_conv = if i + 1 < n {
                Some(Conv2d::new(be, &vb.pp("upsamplers").pp(0).pp("conv"), out_c, out_c, 3)?)
            } else {
                None
            };
            up.push(UpBlock { resnets, attentions, upsample_conv });
        }
        Ok(MoVq {
            post_quant_conv: Conv2d::new(be, &vb.pp("post_quant_conv"), cfg.vq_dim(), zc, 1)?,
            conv_in: Conv2d::new(be, &dec.pp("conv_in"), zc, last, 3)?,
            mid_first: Resnet::new(be, &mid.pp("resnets").pp(0), last, last, zc)?,
            mid_attention: if cfg.mid_block_add_attention {
                Some(Attention::new(be, &mid.pp("attentions").pp(0), last, zc)?)
            } else {
                None
            },
            mid_second: Resnet::new(be, &mid.pp("resnets").pp(1), last, last, zc)?,
            up,
            norm_out: SpatialNorm::new(be, &dec.pp("conv_norm_out"), ch[0], zc)?,
            conv_out: Conv2d::new(be, &dec.pp("conv_out"), ch[0], cfg.out_channels, 3)?,
            config: cfg.clone(),
        })
    }

    /// `latents [h·w, latent_channels]` (channels-last) → the raw decoder output `[H·W, out_channels]` with
    /// `H = h·scale_factor`.
    pub fn decode(&self, be: &B, latents: &B::Tensor, h: usize, w: usize) -> Result<B::Tensor> {
        let c = self.config.vq_dim();
        if h == 0 || w == 0 || be.shape(latents) != [h * w, c] {
            return Err(Error::Input(format!("the MoVQ decodes latents [{}, {c}], got {:?}", h * w, be.shape(latents))));
        }
        let zq = Zq { x: latents, h, w };
        let x = self.post_quant_conv.forward(be, latents, h, w)?;
        let mut x = self.conv_in.forward(be, &x, h, w)?;
        let (mut h, mut w) = (h, w);
        x = self.mid_first.forward(be, &x, h, w, &zq)?;
        if let Some(a) = &self.mid_attention {
            x = a.forward(be, &x, h, w, &zq)?;
        }
        x = self.mid_second.forward(be, &x, h, w, &zq)?;
        for block in &self.up {
            for (j, resnet) in block.resnets.iter().enumerate() {
                x = resnet.forward(be, &x, h, w, &zq)?;
                if let Some(a) = block.attentions.get(j) {
                    x = a.forward(be, &x, h, w, &zq)?;
                }
            }
            if let Some(conv) = &block.upsample_conv {
                x = be.resize_nearest(&x, h, w, 2 * h, 2 * w)?;
                (h, w) = (2 * h, 2 * w);
                x = conv.forward(be, &x, h, w)?;
            }
        }
        let x = be.activation(&self.norm_out.forward(be, &x, h, w, &zq)?, Activation::Silu)?;
        self.conv_out.forward(be, &x, h, w)
    }
}
