//! The UNet's blocks, as diffusers' `unet_2d_blocks` names them: `ResnetDownsampleBlock2D` and
//! `SimpleCrossAttnDownBlock2D` ([`DownBlock`]), `UNetMidBlock2DSimpleCrossAttn` ([`MidBlock`]),
//! `ResnetUpsampleBlock2D` and `SimpleCrossAttnUpBlock2D` ([`UpBlock`]). A down block's every output is a skip
//! connection that its mirror up block concatenates back, last in first out.

use super::attention::AddedKvAttention;
use super::embeddings::TimeInputs;
use super::resnet::{BlockDims, Resample, Resnet};
use crate::error::{Error, Result};
use crate::ops::Backend;
use crate::weights::Weights;

/// One resnet, followed by an attention in the `SimpleCrossAttn` blocks.
struct Layer<B: Backend> {
    resnet: Resnet<B>,
    attention: Option<AddedKvAttention<B>>,
}

impl<B: Backend> Layer<B> {
    /// Layer `j` of the block at `vb`; `head`: the attention's head width, `None` for a resnet-only block.
    fn new(
        be: &B,
        vb: &Weights<B>,
        j: usize,
        cin: usize,
        cout: usize,
        head: Option<usize>,
        d: &BlockDims,
    ) -> Result<Self> {
        Ok(Layer {
            resnet: Resnet::new(be, &vb.pp("resnets").pp(j), cin, cout, d, Resample::None)?,
            attention: match head {
                Some(head) => Some(AddedKvAttention::new(&vb.pp("attentions").pp(j), cout, head, d.cross, d.groups)?),
                None => None,
            },
        })
    }

    fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        h: usize,
        w: usize,
        temb: &TimeInputs<B>,
        context: &B::Tensor,
    ) -> Result<B::Tensor> {
        let x = self.resnet.forward(be, x, h, w, temb)?.0;
        match &self.attention {
            Some(a) => a.forward(be, &x, context),
            None => Ok(x),
        }
    }
}

/// The resnet that halves (`downsamplers.0`) or doubles (`upsamplers.0`) the map at the end of every block
/// but the last.
fn resampler<B: Backend>(
    be: &B,
    vb: &Weights<B>,
    c: usize,
    d: &BlockDims,
    resample: Resample,
    last: bool,
) -> Result<Option<Resnet<B>>> {
    let name = if resample == Resample::Down { "downsamplers" } else { "upsamplers" };
    if last {
        Ok(None)
    } else {
        Resnet::new(be, &vb.pp(name).pp(0), c, c, d, resample).map(Some)
    }
}

pub(super) struct DownBlock<B: Backend> {
    layers: Vec<Layer<B>>,
    downsampler: Option<Resnet<B>>,
}

impl<B: Backend> DownBlock<B> {
    pub(super) fn new(
        be: &B,
        vb: &Weights<B>,
        (cin, cout): (usize, usize),
        layers: usize,
        head: Option<usize>,
        last: bool,
        d: &BlockDims,
    ) -> Result<Self> {
        Ok(DownBlock {
            layers: (0..layers)
                .map(|j| Layer::new(be, vb, j, if j == 0 { cin } else { cout }, cout, head, d))
                .collect::<Result<_>>()?,
            downsampler: resampler(be, vb, cout, d, Resample::Down, last)?,
        })
    }

    /// `x` at `h×w` → the block's output and its size; every layer's output and the downsampled map are pushed
    /// onto `skips`.
    pub(super) fn forward(
        &self,
        be: &B,
        mut x: B::Tensor,
        (h, w): (usize, usize),
        temb: &TimeInputs<B>,
        context: &B::Tensor,
        skips: &mut Vec<B::Tensor>,
    ) -> Result<(B::Tensor, (usize, usize))> {
        for layer in &self.layers {
            x = layer.forward(be, &x, h, w, temb, context)?;
            skips.push(x.clone());
        }
        let Some(ds) = &self.downsampler else { return Ok((x, (h, w))) };
        let (x, h, w) = ds.forward(be, &x, h, w, temb)?;
        skips.push(x.clone());
        Ok((x, (h, w)))
    }
}

/// A resnet, the attention, a resnet, at the narrowest level.
pub(super) struct MidBlock<B: Backend> {
    first: Resnet<B>,
    attention: AddedKvAttention<B>,
    second: Resnet<B>,
}

impl<B: Backend> MidBlock<B> {
    pub(super) fn new(be: &B, vb: &Weights<B>, c: usize, head: usize, d: &BlockDims) -> Result<Self> {
        Ok(MidBlock {
            first: Resnet::new(be, &vb.pp("resnets").pp(0), c, c, d, Resample::None)?,
            attention: AddedKvAttention::new(&vb.pp("attentions").pp(0), c, head, d.cross, d.groups)?,
            second: Resnet::new(be, &vb.pp("resnets").pp(1), c, c, d, Resample::None)?,
        })
    }

    pub(super) fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        h: usize,
        w: usize,
        temb: &TimeInputs<B>,
        context: &B::Tensor,
    ) -> Result<B::Tensor> {
        let x = self.first.forward(be, x, h, w, temb)?.0;
        let x = self.attention.forward(be, &x, context)?;
        Ok(self.second.forward(be, &x, h, w, temb)?.0)
    }
}

pub(super) struct UpBlock<B: Backend> {
    layers: Vec<Layer<B>>,
    upsampler: Option<Resnet<B>>,
}

/// The channels an up block's layers take and give: layer `j` takes the map (`prev` channels for the first,
/// `cout` after) concatenated with a skip (`skip_in` for the last layer, the down block's input width; `cout`
/// before).
pub(super) struct UpChannels {
    pub prev: usize,
    pub cout: usize,
    pub skip_in: usize,
}

impl<B: Backend> UpBlock<B> {
    pub(super) fn new(
        be: &B,
        vb: &Weights<B>,
        c: UpChannels,
        layers: usize,
        head: Option<usize>,
        last: bool,
        d: &BlockDims,
    ) -> Result<Self> {
        let layer = |j: usize| {
            let skip = if j == layers - 1 { c.skip_in } else { c.cout };
            Layer::new(be, vb, j, if j == 0 { c.prev } else { c.cout } + skip, c.cout, head, d)
        };
        Ok(UpBlock {
            layers: (0..layers).map(layer).collect::<Result<_>>()?,
            upsampler: resampler(be, vb, c.cout, d, Resample::Up, last)?,
        })
    }

    /// `x` at `h×w` → the block's output and its size, taking one skip from `skips` per layer.
    pub(super) fn forward(
        &self,
        be: &B,
        mut x: B::Tensor,
        (h, w): (usize, usize),
        temb: &TimeInputs<B>,
        context: &B::Tensor,
        skips: &mut Vec<B::Tensor>,
    ) -> Result<(B::Tensor, (usize, usize))> {
        for layer in &self.layers {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Input("UNet: the up blocks use more skips than the down blocks make".into()))?;
            x = be.concat_cols(&[&x, &skip])?;
            x = layer.forward(be, &x, h, w, temb, context)?;
        }
        let Some(us) = &self.upsampler else { return Ok((x, (h, w))) };
        let (x, h, w) = us.forward(be, &x, h, w, temb)?;
        Ok((x, (h, w)))
    }
}
