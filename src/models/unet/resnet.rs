//! diffusers' `ResnetBlock2D` as the Kandinsky UNet configures it: time conditioning by scale-shift (or by
//! adding), and resampling inside the block (`ResnetDownsampleBlock2D`'s and `ResnetUpsampleBlock2D`'s
//! `down=True` / `up=True` resnets).

use super::embeddings::TimeInputs;
use crate::error::Result;
use crate::models::layers::{Conv2d, GroupNorm, Linear, Shortcut};
use crate::ops::{Activation, Backend};
use crate::weights::Weights;

/// The time-conditioning flavour of the resnets (`resnet_time_scale_shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TimeCond {
    /// `h = GN2(h)·(1 + scale) + shift`.
    ScaleShift,
    /// `h = GN2(h + temb)`.
    Add,
}

/// Where a resnet resamples (inside, after `nonlinearity(norm1(x))`, both the input and the hidden state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resample {
    None,
    Down,
    Up,
}

/// What every resnet and attention of one UNet shares, from its config.
pub(super) struct BlockDims {
    pub groups: usize,
    pub eps: f64,
    /// Width of the time embedding.
    pub temb: usize,
    pub cond: TimeCond,
    pub skip_time_act: bool,
    /// Width of the context tokens.
    pub cross: usize,
}

pub(super) struct Resnet<B: Backend> {
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

impl<B: Backend> Resnet<B> {
    pub(super) fn new(
        be: &B,
        vb: &Weights<B>,
        cin: usize,
        cout: usize,
        d: &BlockDims,
        resample: Resample,
    ) -> Result<Self> {
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
    pub(super) fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        h: usize,
        w: usize,
        temb: &TimeInputs<B>,
    ) -> Result<(B::Tensor, usize, usize)> {
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
        let t = self.time_emb_proj.forward(
            be,
            if self.skip_time_act { &temb.raw } else { &temb.activated },
            Activation::Identity,
        )?;
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
