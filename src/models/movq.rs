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
        let bad =
            |field: &str, what: String| Err(Error::config(path, format!("unsupported MoVQ config: `{field}` {what}")));
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
            return bad(
                "vq_embed_dim",
                format!("{} must equal latent_channels {}", self.vq_dim(), self.latent_channels),
            );
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
            if (zq.h, zq.w) == (h, w) {
                Ok(t)
            } else {
                be.resize_nearest(&t, zq.h, zq.w, h, w)
            }
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
        self.proj.self_attention_residual(be, &hs, 1, self.scale, None, x)
    }
}

/// `UNetMidBlock2D`: a resnet, the attention (unless `mid_block_add_attention` is off), a resnet.
struct MidBlock<B: Backend> {
    first: Resnet<B>,
    attention: Option<Attention<B>>,
    second: Resnet<B>,
}

impl<B: Backend> MidBlock<B> {
    fn new(be: &B, vb: &Weights<B>, c: usize, zq_c: usize, attention: bool) -> Result<Self> {
        Ok(MidBlock {
            first: Resnet::new(be, &vb.pp("resnets").pp(0), c, c, zq_c)?,
            attention: if attention { Some(Attention::new(be, &vb.pp("attentions").pp(0), c, zq_c)?) } else { None },
            second: Resnet::new(be, &vb.pp("resnets").pp(1), c, c, zq_c)?,
        })
    }

    fn forward(&self, be: &B, x: &B::Tensor, h: usize, w: usize, zq: &Zq<B>) -> Result<B::Tensor> {
        let mut x = self.first.forward(be, x, h, w, zq)?;
        if let Some(a) = &self.attention {
            x = a.forward(be, &x, h, w, zq)?;
        }
        self.second.forward(be, &x, h, w, zq)
    }
}

/// `UpDecoderBlock2D` / `AttnUpDecoderBlock2D`: resnets (each followed by an attention in the latter), then
/// every block but the last doubles the map.
struct UpBlock<B: Backend> {
    resnets: Vec<Resnet<B>>,
    attentions: Vec<Attention<B>>,
    /// `Upsample2D(use_conv=True)`: nearest ×2, then a 3×3 conv.
    upsample_conv: Option<Conv2d<B>>,
}

impl<B: Backend> UpBlock<B> {
    fn new(
        be: &B,
        vb: &Weights<B>,
        (cin, cout): (usize, usize),
        cfg: &MoVqConfig,
        attention: bool,
        last: bool,
    ) -> Result<Self> {
        let zc = cfg.latent_channels;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..cfg.layers_per_block + 1 {
            resnets.push(Resnet::new(be, &vb.pp("resnets").pp(j), if j == 0 { cin } else { cout }, cout, zc)?);
            if attention {
                attentions.push(Attention::new(be, &vb.pp("attentions").pp(j), cout, zc)?);
            }
        }
        let upsample_conv =
            if last { None } else { Some(Conv2d::new(be, &vb.pp("upsamplers").pp(0).pp("conv"), cout, cout, 3)?) };
        Ok(UpBlock { resnets, attentions, upsample_conv })
    }

    /// `x` at `h×w` → the block's output and its size.
    fn forward(
        &self,
        be: &B,
        mut x: B::Tensor,
        (h, w): (usize, usize),
        zq: &Zq<B>,
    ) -> Result<(B::Tensor, (usize, usize))> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(be, &x, h, w, zq)?;
            if let Some(a) = self.attentions.get(j) {
                x = a.forward(be, &x, h, w, zq)?;
            }
        }
        let Some(conv) = &self.upsample_conv else { return Ok((x, (h, w))) };
        let x = be.resize_nearest(&x, h, w, 2 * h, 2 * w)?;
        Ok((conv.forward(be, &x, 2 * h, 2 * w)?, (2 * h, 2 * w)))
    }
}

pub struct MoVq<B: Backend> {
    post_quant_conv: Conv2d<B>,
    conv_in: Conv2d<B>,
    mid: MidBlock<B>,
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
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let up = (0..n)
            .map(|i| {
                let attention = cfg.up_block_types[i] == "AttnUpDecoderBlock2D";
                UpBlock::new(
                    be,
                    &dec.pp("up_blocks").pp(i),
                    (rev[i.saturating_sub(1)], rev[i]),
                    cfg,
                    attention,
                    i + 1 == n,
                )
            })
            .collect::<Result<_>>()?;
        Ok(MoVq {
            post_quant_conv: Conv2d::new(be, &vb.pp("post_quant_conv"), cfg.vq_dim(), zc, 1)?,
            conv_in: Conv2d::new(be, &dec.pp("conv_in"), zc, last, 3)?,
            mid: MidBlock::new(be, &dec.pp("mid_block"), last, zc, cfg.mid_block_add_attention)?,
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
            return Err(Error::Input(format!(
                "the MoVQ decodes latents [{}, {c}], got {:?}",
                h * w,
                be.shape(latents)
            )));
        }
        let zq = Zq { x: latents, h, w };
        let x = self.post_quant_conv.forward(be, latents, h, w)?;
        let x = self.conv_in.forward(be, &x, h, w)?;
        let mut x = self.mid.forward(be, &x, h, w, &zq)?;
        let mut size = (h, w);
        for block in &self.up {
            (x, size) = block.forward(be, x, size, &zq)?;
        }
        let (h, w) = size;
        let x = be.activation(&self.norm_out.forward(be, &x, h, w, &zq)?, Activation::Silu)?;
        self.conv_out.forward(be, &x, h, w)
    }
}
