//! The Kandinsky 2.2 decoder's UNet: diffusers' `UNet2DConditionModel` as `kandinsky-community/
//! kandinsky-2-2-decoder` configures it — image-embedding conditioning (`addition_embed_type: image`,
//! `encoder_hid_dim_type: image_proj`), resnet blocks with scale-shift time conditioning that down/up-sample
//! inside a resnet, and added-KV attention (32 context tokens first, then the spatial tokens) without
//! feed-forward. Every size comes from `config.json`, so a distilled student of the same classes loads as is;
//! options this code does not implement are refused by name.
//!
//! Split as candle-transformers splits its Stable Diffusion UNet: [`config`] (`config.json`), `embeddings`
//! (time and image conditioning), `resnet`, `attention`, `blocks` (down, mid, up), and here the model that wires
//! them. One call of [`UNet::forward`] is one sample; classifier-free guidance is two calls.

mod attention;
mod blocks;
pub mod config;
mod embeddings;
mod resnet;

pub use config::UNetConfig;
pub use embeddings::{timestep_embedding, IMAGE_CONTEXT_TOKENS};

use super::layers::{Conv2d, GroupNorm};
use crate::error::{Error, Result};
use crate::ops::meta::{Cost, MetaBackend, MetaTensor};
use crate::ops::{Activation, Backend};
use crate::weights::{WeightStore, Weights};
use blocks::{DownBlock, MidBlock, UpBlock, UpChannels};
use config::BlockKind;
use embeddings::{ImageProjection, TimeEmbedding};
use resnet::{BlockDims, TimeCond};

pub struct UNet<B: Backend> {
    conv_in: Conv2d<B>,
    time_embedding: TimeEmbedding<B>,
    encoder_hid_proj: ImageProjection<B>,
    down: Vec<DownBlock<B>>,
    mid: MidBlock<B>,
    up: Vec<UpBlock<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    pub config: UNetConfig,
}

impl UNetConfig {
    /// What one [`UNet::forward`] on an `h×w` latent computes (FLOPs, largest activation), found by running
    /// that forward on shapes ([`MetaBackend`]): no weight is read or made. Call [`UNetConfig::validate`] first.
    pub fn forward_cost(&self, h: usize, w: usize) -> Result<Cost> {
        let be = MetaBackend::new();
        let store = WeightStore::placeholders(MetaTensor::weight);
        let unet = UNet::new(&be, &store.root(), self)?;
        let (sample, image_embeds) = (be.input(&[h * w, self.in_channels]), be.input(&[1, self.image_embed_dim()]));
        be.measure(|| unet.forward(&be, &sample, h, w, 0.0, &image_embeds))
    }
}

impl<B: Backend> UNet<B> {
    /// `vb` is the root of a `UNet2DConditionModel` checkpoint; call [`UNetConfig::validate`] first.
    pub fn new(be: &B, vb: &Weights<B>, cfg: &UNetConfig) -> Result<Self> {
        let path = "unet/config.json";
        let n = cfg.levels();
        let ch = &cfg.block_out_channels;
        let d = BlockDims {
            groups: cfg.norm_num_groups.unwrap_or(32),
            eps: cfg.norm_eps,
            temb: cfg.time_embed_dim(),
            cond: if cfg.resnet_time_scale_shift == "scale_shift" { TimeCond::ScaleShift } else { TimeCond::Add },
            skip_time_act: cfg.resnet_skip_time_act,
            cross: cfg.cross_dim(),
        };
        let layers = |i: usize| cfg.layers_per_block.get(i, n, "layers_per_block", path);
        let head = |i: usize| cfg.attention_head_dim.get(i, n, "attention_head_dim", path);
        let attention_head =
            |kind: BlockKind, i: usize| if kind == BlockKind::CrossAttn { head(i).map(Some) } else { Ok(None) };

        let mut down = Vec::with_capacity(n);
        for i in 0..n {
            let cin = ch[i.saturating_sub(1)];
            let head = attention_head(cfg.down_kind(i), i)?;
            down.push(DownBlock::new(be, &vb.pp("down_blocks").pp(i), (cin, ch[i]), layers(i)?, head, i + 1 == n, &d)?);
        }
        let mid = MidBlock::new(be, &vb.pp("mid_block"), ch[n - 1], head(n - 1)?, &d)?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let c = UpChannels { prev: rev[i.saturating_sub(1)], cout: rev[i], skip_in: rev[(i + 1).min(n - 1)] };
            // diffusers indexes the up blocks' head width unreversed.
            let head = attention_head(cfg.up_kind(i), i)?;
            up.push(UpBlock::new(be, &vb.pp("up_blocks").pp(i), c, layers(n - 1 - i)? + 1, head, i + 1 == n, &d)?);
        }
        Ok(UNet {
            conv_in: Conv2d::new(be, &vb.pp("conv_in"), cfg.in_channels, ch[0], cfg.conv_in_kernel)?,
            time_embedding: TimeEmbedding::new(vb, cfg)?,
            encoder_hid_proj: ImageProjection::new(vb, cfg)?,
            down,
            mid,
            up,
            norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), d.groups, ch[0], cfg.norm_eps)?,
            conv_out: Conv2d::new(be, &vb.pp("conv_out"), ch[0], cfg.out_channels, cfg.conv_out_kernel)?,
            config: cfg.clone(),
        })
    }

    /// One sample: `sample [h·w, in_channels]` (channels-last), the timestep, `image_embeds [1, D]` →
    /// `[h·w, out_channels]`.
    pub fn forward(
        &self,
        be: &B,
        sample: &B::Tensor,
        h: usize,
        w: usize,
        timestep: f32,
        image_embeds: &B::Tensor,
    ) -> Result<B::Tensor> {
        let cfg = &self.config;
        let m = cfg.size_multiple();
        if h == 0 || w == 0 || !h.is_multiple_of(m) || !w.is_multiple_of(m) {
            return Err(Error::Input(format!("the UNet takes latents whose sides are multiples of {m}, got {h}×{w}")));
        }
        let d = cfg.image_embed_dim();
        if be.shape(image_embeds) != [1, d] {
            return Err(Error::Input(format!(
                "the UNet takes image embeddings [1, {d}], got {:?}",
                be.shape(image_embeds)
            )));
        }
        if be.shape(sample) != [h * w, cfg.in_channels] {
            return Err(Error::Input(format!(
                "the UNet takes a sample [{}, {}], got {:?}",
                h * w,
                cfg.in_channels,
                be.shape(sample)
            )));
        }
        let temb = self.time_embedding.forward(be, timestep, image_embeds)?;
        let context = self.encoder_hid_proj.forward(be, image_embeds)?;

        let mut size = (h, w);
        let mut x = self.conv_in.forward(be, sample, h, w)?;
        let mut skips = vec![x.clone()];
        for block in &self.down {
            (x, size) = block.forward(be, x, size, &temb, &context, &mut skips)?;
        }
        x = self.mid.forward(be, &x, size.0, size.1, &temb, &context)?;
        for block in &self.up {
            (x, size) = block.forward(be, x, size, &temb, &context, &mut skips)?;
        }
        let x = self.norm_out.forward_act(be, &x, Activation::Silu)?;
        self.conv_out.forward(be, &x, size.0, size.1)
    }
}
