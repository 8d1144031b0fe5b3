//! Normalisations: layer norm over each row (layer_norm.wgsl), group norm over a channels-last feature map
//! (group_norm.wgsl, in PyTorch's rounding form, with the activation that follows it fused in). One workgroup per row or group, two-pass variance.

use crate::error::Result;
use crate::ops::gpu::kernels::params::{activation_code, GroupNormParams, LayerNormParams};
use crate::ops::gpu::kernels::Kernel;
use crate::ops::gpu::tensor::{dims2, GpuTensor};
use crate::ops::gpu::{backend_err, u32_of, GpuBackend};
use crate::ops::Activation;

pub fn layer_norm(be: &GpuBackend, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f64) -> Result<GpuTensor> {
    let (rows, cols) = dims2(x, "layer_norm")?;
    if gamma.numel() != cols || beta.numel() != cols {
        return Err(backend_err(format!(
            "layer_norm: gamma {:?} / beta {:?} do not fit input {:?}",
            gamma.shape, beta.shape, x.shape
        )));
    }
    let (x, gamma, beta) = (be.as_f32(x)?, be.as_f32(gamma)?, be.as_f32(beta)?);
    let out = be.alloc_f32(&x.shape, "layer_norm")?;
    if rows == 0 || cols == 0 {
        return Ok(out);
    }
    let params = LayerNormParams { cols: u32_of(cols, "cols")?, eps: eps as f32, ..Default::default() };
    let groups = [u32_of(rows, "rows")?, 1, 1];
    be.dispatch(
        Kernel::LayerNorm(be.inner.reduction),
        &params,
        &[x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()],
        groups,
    );
    Ok(out)
}

pub fn group_norm(
    be: &GpuBackend,
    x: &GpuTensor,
    groups: usize,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f64,
    act: Activation,
) -> Result<GpuTensor> {
    let (positions, channels) = dims2(x, "group_norm")?;
    if groups == 0 || channels % groups != 0 || gamma.numel() != channels || beta.numel() != channels {
        return Err(backend_err(format!(
            "group_norm: {channels} channels, {groups} groups, gamma {:?}, beta {:?} do not fit",
            gamma.shape, beta.shape
        )));
    }
    let (x, gamma, beta) = (be.as_f32(x)?, be.as_f32(gamma)?, be.as_f32(beta)?);
    let out = be.alloc_f32(&x.shape, "group_norm")?;
    if positions == 0 || channels == 0 {
        return Ok(out);
    }
    let params = GroupNormParams {
        positions: u32_of(positions, "positions")?,
        channels: channels as u32,
        group_channels: (channels / groups) as u32,
        eps: eps as f32,
        act: activation_code(act),
        ..Default::default()
    };
    let buffers = [x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()];
    be.dispatch(Kernel::GroupNorm(be.inner.reduction), &params, &buffers, [u32_of(groups, "groups")?, 1, 1]);
    Ok(out)
}
