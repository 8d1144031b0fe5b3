//! The decoder's ops on the GPU (feature maps are channels-last `[h·w, c]` matrices) and the long-sequence
//! attention: convolution as an implicit-im2col tiled GEMM, group norm, pooling, resizing, channel concat,
//! elementwise products and the resnet's scale-shift. The `Backend` impl in `mod.rs` calls these.

use super::kernels::params::*;
use super::{backend_err, dims2, u32_of, Gemm, GpuBackend, GpuTensor, Kernel};
use crate::error::Result;

/// Scores of one block of queries (for one head) stay below this, whatever the sequence length: MoVQ's
/// single-head attention over 9216 positions would otherwise need a 340 MB score matrix.
const ATTENTION_SCORE_BLOCK_BYTES: usize = 64 << 20;

impl GpuBackend {
    /// Channels-last image and its size, checked.
    fn image_dims(&self, x: &GpuTensor, height: usize, width: usize, op: &str) -> Result<usize> {
        let (positions, channels) = dims2(x, op)?;
        if positions != height * width {
            return Err(backend_err(format!("{op}: {:?} is not a {height}×{width} image [h·w, c]", x.shape)));
        }
        Ok(channels)
    }

    pub(super) fn conv2d_kernel(&self, x: &GpuTensor, height: usize, width: usize, weight: &GpuTensor,
        bias: Option<&GpuTensor>, kernel: usize) -> Result<GpuTensor> {
        let cin = self.image_dims(x, height, width, "conv2d")?;
        let cout = *weight.shape.first().unwrap_or(&0);
        let k = cin * kernel * kernel;
        if kernel % 2 == 0 || weight.numel() != cout * k {
            return Err(backend_err(format!(
                "conv2d: weight {:?} is not [out, {cin}·{kernel}·{kernel}] for an odd kernel {kernel}",
                weight.shape
            )));
        }
        if let Some(b) = bias {
            if b.numel() != cout {
                return Err(backend_err(format!("conv2d: bias {:?} does not fit {cout} output channels", b.shape)));
            }
        }
        let x = self.as_f32(x)?;
        let bias = bias.map(|b| self.as_f32(b)).transpose()?;
        let m = height * width;
        let out = self.alloc_f32(&[m, cout], "conv2d")?;
        for (first, cols, w_buf) in weight.row_chunks() {
            self.dispatch_gemm(&Gemm {
                w: w_buf,
                w_scale_off: first,
                conv: Some((height, width, cin, kernel)),
                bias: bias.as_ref().map(|b| (b.buffer(), first)),
                out_stride: cout,
                out_off: first,
                ..Gemm::linear(m, k, cols, x.buffer(), weight, out.buffer())
            })?;
        }
        Ok(out)
    }

    pub(super) fn group_norm_kernel(&self, x: &GpuTensor, groups: usize, gamma: &GpuTensor, beta: &GpuTensor,
        eps: f64) -> Result<GpuTensor> {
        let (positions, channels) = dims2(x, "group_norm")?;
        if groups == 0 || channels % groups != 0 || gamma.numel() != channels || beta.numel() != channels {
            return Err(backend_err(format!(
                "group_norm: {channels} channels, {groups} groups, gamma {:?}, beta {:?} do not fit",
                gamma.shape, beta.shape
            )));
        }
        let (x, gamma, beta) = (self.as_f32(x)?, self.as_f32(gamma)?, self.as_f32(beta)?);
        let out = self.alloc_f32(&x.shape, "group_norm")?;
        if positions == 0 || channels == 0 {
            return Ok(out);
        }
        let params = GroupNormParams {
            positions: u32_of(positions, "positions")?,
            channels: channels as u32,
            group_channels: (channels / groups) as u32,
            eps: eps as f32,
        };
        let buffers = [x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()];
        self.dispatch(Kernel::GroupNorm, &params, &buffers, [u32_of(groups, "groups")?, 1, 1]);
        Ok(out)
    }

    pub(super) fn avg_pool_2x2_kernel(&self, x: &GpuTensor, height: usize, width: usize) -> Result<GpuTensor> {
        let c = self.image_dims(x, height, width, "avg_pool_2x2")?;
        if height % 2 != 0 || width % 2 != 0 {
            return Err(backend_err(format!("avg_pool_2x2: {height}×{width} is not even")));
        }
        let x = self.as_f32(x)?;
        let (oh, ow) = (height / 2, width / 2);
        let out = self.alloc_f32(&[oh * ow, c], "avg_pool_2x2")?;
        let n = oh * ow * c;
        if n > 0 {
            let params = AvgPool2x2Params { count: u32_of(n, "element count")?, channels: c as u32, in_width: width as u32, out_width: ow as u32 };
            self.dispatch(Kernel::AvgPool2x2, &params, &[x.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    pub(super) fn resize_nearest_kernel(&self, x: &GpuTensor, height: usize, width: usize, out_height: usize,
        out_width: usize) -> Result<GpuTensor> {
        let c = self.image_dims(x, height, width, "resize_nearest")?;
        if (height == 0 || width == 0) && out_height * out_width > 0 {
            return Err(backend_err("resize_nearest: empty input image"));
        }
        let x = self.as_f32(x)?;
        let out = self.alloc_f32(&[out_height * out_width, c], "resize_nearest")?;
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
            self.dispatch(Kernel::ResizeNearest, &params, &[x.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    pub(super) fn concat_cols_kernel(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        let first = parts.first().ok_or_else(|| backend_err("concat_cols: no tensors"))?;
        let rows = dims2(first, "concat_cols")?.0;
        let mut total = 0;
        for part in parts {
            let (r, c) = dims2(part, "concat_cols")?;
            if r != rows {
                let shapes: Vec<_> = parts.iter().map(|p| &p.shape).collect();
                return Err(backend_err(format!("concat_cols: shapes {shapes:?} have different row counts")));
            }
            total += c;
        }
        let out = self.alloc_f32(&[rows, total], "concat_cols")?;
        let mut col0 = 0;
        for part in parts {
            let part = self.as_f32(part)?;
            let cols = part.shape[1];
            let n = rows * cols;
            if n > 0 {
                let params = CopyColsParams { count: u32_of(n, "element count")?, cols: cols as u32, total: total as u32, col0: col0 as u32 };
                self.dispatch(Kernel::CopyCols, &params, &[part.buffer(), out.buffer()], self.groups_1d(n));
            }
            col0 += cols;
        }
        Ok(out)
    }

    /// An elementwise op of two same-shaped tensors (`add`, `mul`): `kernel` reads a and b, writes the output.
    pub(super) fn elementwise_pair(&self, kernel: Kernel, a: &GpuTensor, b: &GpuTensor, op: &str) -> Result<GpuTensor> {
        if a.shape != b.shape {
            return Err(backend_err(format!("{op}: shapes {:?} and {:?} differ", a.shape, b.shape)));
        }
        let (a, b) = (self.as_f32(a)?, self.as_f32(b)?);
        let out = self.alloc_f32(&a.shape, op)?;
        let n = a.numel();
        if n > 0 {
            let params = ElementwisePairParams { count: u32_of(n, "element count")?, ..Default::default() };
            self.dispatch(kernel, &params, &[a.buffer(), b.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    pub(super) fn scale_shift_kernel(&self, x: &GpuTensor, scale: &GpuTensor, shift: &GpuTensor) -> Result<GpuTensor> {
        let (rows, cols) = dims2(x, "scale_shift")?;
        if scale.numel() != cols || shift.numel() != cols {
            return Err(backend_err(format!(
                "scale_shift: scale {:?} / shift {:?} do not fit {:?} (one value per column)",
                scale.shape, shift.shape, x.shape
            )));
        }
        let (x, scale, shift) = (self.as_f32(x)?, self.as_f32(scale)?, self.as_f32(shift)?);
        let out = self.alloc_f32(&x.shape, "scale_shift")?;
        let n = rows * cols;
        if n > 0 {
            let params = ScaleShiftParams { count: u32_of(n, "element count")?, cols: cols as u32, ..Default::default() };
            self.dispatch(Kernel::ScaleShift, &params, &[x.buffer(), scale.buffer(), shift.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    /// Attention for any length and head dim, unfused: per head and block of queries, scores by the tiled
    /// GEMM into a bounded buffer, softmax in place, then P·V by the GEMM into the head's output columns.
    /// Inputs as [`Backend::attention`](super::Backend::attention), already checked and f32.
    pub(super) fn attention_blocked(&self, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, heads: usize, scale: f32,
        bias: Option<&GpuTensor>) -> Result<GpuTensor> {
        let (t, width) = dims2(q, "attention")?;
        let s = k.shape[0];
        let d = width / heads;
        let out = self.alloc_f32(&[t, width], "attention")?;
        let budget = ATTENTION_SCORE_BLOCK_BYTES.min(self.inner.limits.max_storage_buffer_binding_size as usize);
        let max_groups = self.inner.limits.max_compute_workgroups_per_dimension as usize;
        let block = (budget / (s * 4)).clamp(1, max_groups).min(t);
        for h in 0..heads {
            for q0 in (0..t).step_by(block) {
                let rows = block.min(t - q0);
                let scores = self.alloc_f32(&[rows, s], "attention scores")?;
                self.dispatch_gemm(&Gemm {
                    x_stride: width,
                    x_off: q0 * width + h * d,
                    w_sn: width,
                    w_off: h * d,
                    ..Gemm::linear(rows, d, s, q.buffer(), k, scores.buffer())
                })?;
                let params = SoftmaxRowsParams {
                    rows: rows as u32,
                    cols: u32_of(s, "keys")?,
                    has_bias: bias.is_some() as u32,
                    bias_off: u32_of(q0 * s, "bias offset")?,
                    scale,
                    ..Default::default()
                };
                let bias_buf = bias.map_or(&self.inner.dummy, |b| b.buffer());
                self.dispatch(Kernel::SoftmaxRows, &params, &[bias_buf, scores.buffer()], [rows as u32, 1, 1]);
                self.dispatch_gemm(&Gemm {
                    w_sn: 1,
                    w_sk: width,
                    w_off: h * d,
                    out_stride: width,
                    out_off: q0 * width + h * d,
                    ..Gemm::linear(rows, s, d, scores.buffer(), v, out.buffer())
                })?;
            }
        }
        Ok(out)
    }
}
