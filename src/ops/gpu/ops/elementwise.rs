//! Elementwise kernels: `add` and `mul` (elementwise_pair.wgsl with its `combine`), activations, the resnet's
//! scale-shift, and the conversions of stored weights to f32 activations that every op without a packed path
//! goes through (unpack_f16.wgsl, dequantize_i8.wgsl).

use crate::error::Result;
use crate::ops::gpu::kernels::params::{
    activation_code, ActivationParams, DequantizeBlocksParams, DequantizeI8Params, ElementwisePairParams,
    ScaleShiftParams, UnpackF16Params,
};
use crate::ops::gpu::kernels::Kernel;
use crate::ops::gpu::tensor::{dims2, GpuDType, GpuTensor};
use crate::ops::gpu::{backend_err, u32_of, GpuBackend};
use crate::ops::Activation;

/// An elementwise op of two same-shaped tensors (`add`, `mul`): `kernel` reads a and b, writes the output.
pub fn pair(be: &GpuBackend, kernel: Kernel, a: &GpuTensor, b: &GpuTensor, op: &str) -> Result<GpuTensor> {
    if a.shape != b.shape {
        return Err(backend_err(format!("{op}: shapes {:?} and {:?} differ", a.shape, b.shape)));
    }
    let (a, b) = (be.as_f32(a)?, be.as_f32(b)?);
    let out = be.alloc_f32(&a.shape, op)?;
    let n = a.numel();
    if n > 0 {
        let params = ElementwisePairParams { count: u32_of(n, "element count")?, ..Default::default() };
        be.dispatch(kernel, &params, &[a.buffer(), b.buffer(), out.buffer()], be.groups_1d(n));
    }
    Ok(out)
}

pub fn activation(be: &GpuBackend, x: &GpuTensor, act: Activation) -> Result<GpuTensor> {
    if act == Activation::Identity {
        return Ok(x.clone());
    }
    let code = activation_code(act);
    let x = be.as_f32(x)?;
    let out = be.alloc_f32(&x.shape, "activation")?;
    let n = x.numel();
    if n > 0 {
        let params = ActivationParams { count: n as u32, act: code, ..Default::default() };
        be.dispatch(Kernel::Activation, &params, &[x.buffer(), out.buffer()], be.groups_1d(n));
    }
    Ok(out)
}

pub fn scale_shift(be: &GpuBackend, x: &GpuTensor, scale: &GpuTensor, shift: &GpuTensor) -> Result<GpuTensor> {
    let (rows, cols) = dims2(x, "scale_shift")?;
    if scale.numel() != cols || shift.numel() != cols {
        return Err(backend_err(format!(
            "scale_shift: scale {:?} / shift {:?} do not fit {:?} (one value per column)",
            scale.shape, shift.shape, x.shape
        )));
    }
    let (x, scale, shift) = (be.as_f32(x)?, be.as_f32(scale)?, be.as_f32(shift)?);
    let out = be.alloc_f32(&x.shape, "scale_shift")?;
    let n = rows * cols;
    if n > 0 {
        let params = ScaleShiftParams { count: u32_of(n, "element count")?, cols: cols as u32, ..Default::default() };
        be.dispatch(
            Kernel::ScaleShift,
            &params,
            &[x.buffer(), scale.buffer(), shift.buffer(), out.buffer()],
            be.groups_1d(n),
        );
    }
    Ok(out)
}

impl GpuBackend {
    /// Unpacks `count` f16 elements starting at `src_off` of `src` into `dst` at `dst_off`.
    pub(in crate::ops::gpu) fn unpack_into(
        &self,
        src: &GpuTensor,
        src_off: usize,
        dst: &GpuTensor,
        dst_off: usize,
        count: usize,
    ) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let params = UnpackF16Params {
            count: u32_of(count, "count")?,
            src_off: u32_of(src_off, "offset")?,
            dst_off: u32_of(dst_off, "offset")?,
            ..Default::default()
        };
        self.dispatch(Kernel::UnpackF16, &params, &[src.buffer(), dst.buffer()], self.groups_1d(count));
        Ok(())
    }

    /// The tensor as f32: itself, or an f16 or int8 weight unpacked into a new activation.
    pub(in crate::ops::gpu) fn as_f32(&self, t: &GpuTensor) -> Result<GpuTensor> {
        self.check_whole(t, "this op")?;
        match (t.dtype, &t.scales) {
            (GpuDType::F32, _) => Ok(t.clone()),
            (GpuDType::F16, _) => {
                let out = self.alloc_f32(&t.shape, "unpacked f16 tensor")?;
                self.unpack_into(t, 0, &out, 0, t.numel())?;
                Ok(out)
            }
            (GpuDType::I8, Some(scales)) => {
                let out = self.alloc_f32(&t.shape, "dequantised int8 tensor")?;
                let n = t.numel();
                if n > 0 {
                    let params = DequantizeI8Params {
                        count: u32_of(n, "count")?,
                        row_len: u32_of(scales.row_len, "row length")?,
                        ..Default::default()
                    };
                    self.dispatch(
                        Kernel::DequantizeI8,
                        &params,
                        &[t.buffer(), &scales.buf, out.buffer()],
                        self.groups_1d(n),
                    );
                }
                Ok(out)
            }
            (GpuDType::I8, None) => Err(backend_err("int8 tensor without scales")),
            (GpuDType::Q8_0 | GpuDType::Q4_0, _) => {
                let out = self.alloc_f32(&t.shape, "dequantised block tensor")?;
                let rows: Vec<u32> = (0..u32_of(t.shape.first().copied().unwrap_or(1), "rows")?).collect();
                self.dequantize_rows(t, &rows, &out)?;
                Ok(out)
            }
        }
    }

    /// `out [ids.len(), row_len] = rows ids of the block tensor t` as f32 (dequantize_blocks.wgsl).
    pub(in crate::ops::gpu) fn dequantize_rows(
        &self,
        t: &GpuTensor,
        ids: &[u32],
        out: &GpuTensor,
    ) -> Result<GpuTensor> {
        let n = ids.len() * t.row_len();
        if n > 0 {
            let ids_buf = self.upload(bytemuck::cast_slice(ids), "dequantised rows")?;
            let params = DequantizeBlocksParams {
                rows: u32_of(ids.len(), "rows")?,
                cols: u32_of(t.row_len(), "cols")?,
                q4: (t.dtype == GpuDType::Q4_0) as u32,
                ..Default::default()
            };
            self.dispatch(Kernel::DequantizeBlocks, &params, &[t.buffer(), &ids_buf, out.buffer()], self.groups_1d(n));
        }
        Ok(out.clone())
    }
}
