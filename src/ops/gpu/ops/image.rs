//! Image-shaped ops: patches of a `[c, h, w]` image as rows (the vision tower's patch embedding), and on
//! channels-last feature maps `[h·w, c]` the 2×2 average pool and the nearest-neighbour resize.

use crate::error::Result;
use crate::ops::gpu::kernels::params::{AvgPool2x2Params, ImagePatchesParams, ResizeNearestParams};
use crate::ops::gpu::kernels::Kernel;
use crate::ops::gpu::tensor::{dims2, GpuTensor};
use crate::ops::gpu::{backend_err, u32_of, GpuBackend};

pub fn image_patches(be: &GpuBackend, image: &GpuTensor, patch: usize) -> Result<GpuTensor> {
    let (c, h, w) = match image.shape[..] {
        [c, h, w] => (c, h, w),
        _ => return Err(backend_err(format!("image_patches: expected [c, h, w], got {:?}", image.shape))),
    };
    if patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(backend_err(format!("image_patches: {h}×{w} is not a multiple of patch {patch}")));
    }
    let image = be.as_f32(image)?;
    let (gh, gw) = (h / patch, w / patch);
    let cols = c * patch * patch;
    let out = be.alloc_f32(&[gh * gw, cols], "image_patches")?;
    let n = gh * gw * cols;
    if n > 0 {
        let params = ImagePatchesParams {
            h: h as u32,
            w: w as u32,
            patch_size: patch as u32,
            grid_w: gw as u32,
            cols: cols as u32,
            count: u32_of(n, "element count")?,
            ..Default::default()
        };
        be.dispatch(Kernel::ImagePatches, &params, &[image.buffer(), out.buffer()], be.groups_1d(n));
    }
    Ok(out)
}

pub fn avg_pool_2x2(be: &GpuBackend, x: &GpuTensor, height: usize, width: usize) -> Result<GpuTensor> {
    let c = image_dims(x, height, width, "avg_pool_2x2")?;
    if !height.is_multiple_of(2) || !width.is_multiple_of(2) {
        return Err(backend_err(format!("avg_pool_2x2: {height}×{width} is not even")));
    }
    let x = be.as_f32(x)?;
    let (oh, ow) = (height / 2, width / 2);
    let out = be.alloc_f32(&[oh * ow, c], "avg_pool_2x2")?;
    let n = oh * ow * c;
    if n > 0 {
        let params = AvgPool2x2Params {
            count: u32_of(n, "element count")?,
            channels: c as u32,
            in_width: width as u32,
            out_width: ow as u32,
        };
        be.dispatch(Kernel::AvgPool2x2, &params, &[x.buffer(), out.buffer()], be.groups_1d(n));
    }
    Ok(out)
}

pub fn resize_nearest(
    be: &GpuBackend,
    x: &GpuTensor,
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
) -> Result<GpuTensor> {
    let c = image_dims(x, height, width, "resize_nearest")?;
    if (height == 0 || width == 0) && out_height * out_width > 0 {
        return Err(backend_err("resize_nearest: empty input image"));
    }
    let x = be.as_f32(x)?;
    let out = be.alloc_f32(&[out_height * out_width, c], "resize_nearest")?;
    let n = out_height * out_width * c;
    if n > 0 {
        let params = ResizeNearestParams {
            count: u32_of(n, "element count")?,
            channels: c as u32,
            in_height: height as u32,
            in_width: width as u32,
            out_height: out_height as u32,
            out_width: out_width as u32,
            ..Default::default()
        };
        be.dispatch(Kernel::ResizeNearest, &params, &[x.buffer(), out.buffer()], be.groups_1d(n));
    }
    Ok(out)
}

/// Channels-last image and its size, checked.
pub(super) fn image_dims(x: &GpuTensor, height: usize, width: usize, op: &str) -> Result<usize> {
    let (positions, channels) = dims2(x, op)?;
    if positions != height * width {
        return Err(backend_err(format!("{op}: {:?} is not a {height}×{width} image [h·w, c]", x.shape)));
    }
    Ok(channels)
}
