//! `UNet2DConditionModel`'s `config.json`: the fields with diffusers' defaults, and [`UNetConfig::validate`],
//! which refuses by name every option this implementation does not compute.

use crate::error::{Error, Result};
use crate::models::conv::PerBlock;
use crate::ops::Activation;
use serde::Deserialize;

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
pub(super) enum BlockKind {
    Resnet,
    CrossAttn,
}

impl UNetConfig {
    pub(super) fn levels(&self) -> usize {
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

    pub(super) fn down_kind(&self, i: usize) -> BlockKind {
        if self.down_block_types[i] == "SimpleCrossAttnDownBlock2D" {
            BlockKind::CrossAttn
        } else {
            BlockKind::Resnet
        }
    }

    pub(super) fn up_kind(&self, i: usize) -> BlockKind {
        if self.up_block_types[i] == "SimpleCrossAttnUpBlock2D" {
            BlockKind::CrossAttn
        } else {
            BlockKind::Resnet
        }
    }

    /// Refuses every `UNet2DConditionModel` option this implementation does not compute, naming the field.
    pub fn validate(&self, path: &str) -> Result<()> {
        let bad =
            |field: &str, what: String| Err(Error::config(path, format!("unsupported UNet config: `{field}` {what}")));
        let n = self.levels();
        if n == 0 || self.block_out_channels.contains(&0) {
            return bad("block_out_channels", "must list at least one positive width".into());
        }
        crate::models::check_norm_eps(path, "norm_eps", self.norm_eps)?;
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(
                "down_block_types",
                format!("and `up_block_types` must both have one entry per block_out_channels ({n})"),
            );
        }
        for t in &self.down_block_types {
            if t != "ResnetDownsampleBlock2D" && t != "SimpleCrossAttnDownBlock2D" {
                return bad(
                    "down_block_types",
                    format!("entry {t:?} (supported: ResnetDownsampleBlock2D, SimpleCrossAttnDownBlock2D)"),
                );
            }
        }
        for t in &self.up_block_types {
            if t != "ResnetUpsampleBlock2D" && t != "SimpleCrossAttnUpBlock2D" {
                return bad(
                    "up_block_types",
                    format!("entry {t:?} (supported: ResnetUpsampleBlock2D, SimpleCrossAttnUpBlock2D)"),
                );
            }
        }
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DSimpleCrossAttn") {
            return bad(
                "mid_block_type",
                format!("{:?} (supported: UNetMidBlock2DSimpleCrossAttn)", self.mid_block_type),
            );
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
            return bad(
                "resnet_time_scale_shift",
                format!("{:?} (supported: scale_shift, default)", self.resnet_time_scale_shift),
            );
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
            return bad(
                "cross_attention_dim",
                "must be one number (the image projection makes one context width)".into(),
            );
        }
        for i in 0..n {
            self.layers_per_block.get(i, n, "layers_per_block", path)?;
            let c = self.block_out_channels[i];
            if !c.is_multiple_of(groups) {
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
