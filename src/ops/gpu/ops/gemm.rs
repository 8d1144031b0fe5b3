//! The tiled GEMM family: `linear`, `matmul` and `conv2d` (implicit im2col), and the one place that turns a
//! [`Gemm`] description into a kernel variant — weight reader by storage type, input reader by alignment,
//! tiling by output size (a GEMV kernel for at most 8 rows) — and its params (gemm_params.wgsl). The long-sequence attention uses it too.

use crate::error::Result;
use crate::ops::gpu::kernels::params::{activation_code, GemmParams};
use crate::ops::gpu::kernels::{GemmInput, GemmTile, GemmWeight, Kernel};
use crate::ops::gpu::pool::PooledBuffer;
use crate::ops::gpu::tensor::{dims2, GpuDType, GpuTensor, Int8Scales};
use crate::ops::gpu::{backend_err, u32_of, GpuBackend};
use crate::ops::Activation;

pub fn matmul(be: &GpuBackend, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    let (m, k) = dims2(a, "matmul")?;
    let (k2, n) = dims2(b, "matmul")?;
    if k != k2 {
        return Err(backend_err(format!("matmul: shapes {:?} and {:?} do not chain", a.shape, b.shape)));
    }
    be.check_whole(b, "matmul")?;
    strided(be, a, b, (m, k, n), (1, n), (None, Activation::Identity, None), "matmul")
}

/// `act(x · wᵀ + bias)`, plus `residual` (shaped as the output) added in the epilogue when given.
pub fn linear(
    be: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    act: Activation,
    residual: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let (m, k) = dims2(x, "linear")?;
    let (n, k2) = dims2(w, "linear")?;
    if k != k2 {
        return Err(backend_err(format!("linear: input {:?} does not fit weight {:?}", x.shape, w.shape)));
    }
    if let Some(b) = bias {
        if b.numel() != n {
            return Err(backend_err(format!("linear: bias {:?} does not fit weight {:?}", b.shape, w.shape)));
        }
    }
    if let Some(r) = residual {
        if r.shape != [m, n] {
            return Err(backend_err(format!("linear: residual {:?} is not the output's [{m}, {n}]", r.shape)));
        }
    }
    strided(be, x, w, (m, k, n), (k, 1), (bias, act, residual), "linear")
}

pub fn conv2d(
    be: &GpuBackend,
    x: &GpuTensor,
    height: usize,
    width: usize,
    weight: &GpuTensor,
    bias: Option<&GpuTensor>,
    kernel: usize,
) -> Result<GpuTensor> {
    let cin = super::image::image_dims(x, height, width, "conv2d")?;
    let cout = *weight.shape.first().unwrap_or(&0);
    let k = cin * kernel * kernel;
    if kernel.is_multiple_of(2) || weight.numel() != cout * k {
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
    let x = be.as_f32(x)?;
    let bias = bias.map(|b| be.as_f32(b)).transpose()?;
    let m = height * width;
    let out = be.alloc_f32(&[m, cout], "conv2d")?;
    for (first, cols, w_buf) in weight.row_chunks() {
        dispatch(
            be,
            &Gemm {
                w: w_buf,
                w_scale_off: first,
                conv: Some((height, width, cin, kernel)),
                bias: bias.as_ref().map(|b| (b.buffer(), first)),
                out_stride: cout,
                out_off: first,
                ..Gemm::linear(m, k, cols, x.buffer(), weight, out.buffer())
            },
        )?;
    }
    Ok(out)
}

/// `x [m, k]` times the weight described by strides (see gemm_params.wgsl), plus bias, then activation, then
/// the residual (the epilogue). A weight split by rows (`linear` only: rows are output columns) runs one
/// dispatch per chunk.
fn strided(
    be: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    (m, k, n): (usize, usize, usize),
    (w_sn, w_sk): (usize, usize),
    (bias, act, residual): (Option<&GpuTensor>, Activation, Option<&GpuTensor>),
    op: &str,
) -> Result<GpuTensor> {
    let x = be.as_f32(x)?;
    let bias = bias.map(|b| be.as_f32(b)).transpose()?;
    let residual = residual.map(|r| be.as_f32(r)).transpose()?;
    let out = be.alloc_f32(&[m, n], op)?;
    if m == 0 || n == 0 {
        return Ok(out);
    }
    let chunks = if w.is_split() { w.row_chunks() } else { vec![(0, n, w.buffer())] };
    for (first, cols, w_buf) in chunks {
        dispatch(
            be,
            &Gemm {
                n: cols,
                w: w_buf,
                w_scale_off: first,
                w_sn,
                w_sk,
                bias: bias.as_ref().map(|b| (b.buffer(), first)),
                act,
                residual: residual.as_ref().map(|r| r.buffer()),
                out_stride: n,
                out_off: first,
                ..Gemm::linear(m, k, cols, x.buffer(), w, out.buffer())
            },
        )?;
    }
    Ok(out)
}

/// Records one tiled-GEMM dispatch (gemm_params.wgsl).
pub fn dispatch(be: &GpuBackend, g: &Gemm) -> Result<()> {
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    let weight = match g.w_dtype {
        GpuDType::F32 => GemmWeight::F32,
        GpuDType::F16 if be.inner.shader_f16 => GemmWeight::F16Native,
        GpuDType::F16 => GemmWeight::F16Packed,
        GpuDType::I8 => GemmWeight::Int8,
        GpuDType::Q8_0 => GemmWeight::Q8_0,
        GpuDType::Q4_0 => GemmWeight::Q4_0,
    };
    let (scales, w_row_len) = match (weight, g.w_scales) {
        (GemmWeight::Int8, Some(s)) => (Some(&s.buf), s.row_len),
        (GemmWeight::Int8, None) => return Err(backend_err("int8 GEMM weight without scales")),
        (GemmWeight::Q8_0 | GemmWeight::Q4_0, _) => (None, g.w_row_len),
        _ => (None, 0),
    };
    let (conv_h, conv_w, conv_cin, conv_ks) = g.conv.unwrap_or((0, 0, 0, 0));
    let params = GemmParams {
        m: u32_of(g.m, "m")?,
        n: u32_of(g.n, "n")?,
        k: u32_of(g.k, "k")?,
        w_sn: u32_of(g.w_sn, "stride")?,
        w_sk: u32_of(g.w_sk, "stride")?,
        w_off: u32_of(g.w_off, "offset")?,
        has_bias: g.bias.is_some() as u32,
        act: activation_code(g.act),
        x_stride: u32_of(g.x_stride, "stride")?,
        x_off: u32_of(g.x_off, "offset")?,
        out_stride: u32_of(g.out_stride, "stride")?,
        out_off: u32_of(g.out_off, "offset")?,
        bias_off: u32_of(g.bias.map_or(0, |b| b.1), "offset")?,
        conv_h: u32_of(conv_h, "height")?,
        conv_w: u32_of(conv_w, "width")?,
        conv_cin: u32_of(conv_cin, "channels")?,
        conv_ks: u32_of(conv_ks, "kernel")?,
        w_row_len: u32_of(w_row_len, "row length")?,
        w_scale_off: u32_of(g.w_scale_off, "offset")?,
        has_residual: g.residual.is_some() as u32,
    };
    let aligned = |v: usize| v.is_multiple_of(4);
    let input = if g.conv.is_some() {
        GemmInput::Conv
    } else if be.inner.vec4_loads
        && g.w_sk == 1
        && [g.k, g.x_stride, g.x_off, g.w_sn, g.w_off].into_iter().all(aligned)
        && (scales.is_none() || aligned(w_row_len))
    {
        GemmInput::DenseVec4
    } else {
        GemmInput::Dense
    };
    let tile = match be.inner.gemm_tile {
        // GpuOptions can force the 64² or 128² tiling (tests, the bench).
        Some(tile) => tile,
        None if g.m <= 8 => GemmTile::Gemv,
        // 128×128 tiles only where there are enough of them to fill a large GPU (an H200 has 132 SMs):
        // measured there, [257×8192]·[8192×1664] (39 such tiles) ran at 660 GF/s against 1060 with 64×64.
        None if g.m.div_ceil(128) * g.n.div_ceil(128) >= 256 => GemmTile::T128,
        None => GemmTile::T64,
    };
    let tile = if be.inner.f16_math { tile.with_f16_math() } else { tile };
    let (rows, cols) = tile.size();
    let bias_buf = g.bias.map_or(&be.inner.dummy, |b| b.0);
    let groups = [u32_of(g.n.div_ceil(cols), "n")?, u32_of(g.m.div_ceil(rows), "m")?, 1];
    let residual_buf = g.residual.unwrap_or(&be.inner.dummy);
    let mut buffers = vec![g.x, g.w, bias_buf, g.out, residual_buf];
    buffers.extend(scales);
    be.dispatch(Kernel::Gemm(weight, input, tile), &params, &buffers, groups);
    Ok(())
}

/// One tiled-GEMM dispatch: `out[out_off + i·out_stride + j] = act(Σ_k X(i, k)·W(j, k) + bias[bias_off + j])`
/// with `X(i, k) = x[x_off + i·x_stride + k]` (or the conv gather) and `W(j, k) = w[w_off + j·w_sn + k·w_sk]`.
pub struct Gemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub x: &'a PooledBuffer,
    pub x_stride: usize,
    pub x_off: usize,
    /// Implicit im2col instead of a dense `x`: (height, width, in channels, kernel size).
    pub conv: Option<(usize, usize, usize, usize)>,
    pub w: &'a PooledBuffer,
    pub w_dtype: GpuDType,
    /// An int8 weight's scales, and the row of `w`'s first element among them (a split weight's chunk).
    pub w_scales: Option<&'a Int8Scales>,
    /// A block weight's row length (the blocks run along rows of the stored matrix).
    pub w_row_len: usize,
    pub w_scale_off: usize,
    pub w_sn: usize,
    pub w_sk: usize,
    pub w_off: usize,
    /// The bias buffer and the offset of output column 0 in it.
    pub bias: Option<(&'a PooledBuffer, usize)>,
    pub act: Activation,
    /// Added after the activation, read at the output's own index (same layout as `out`).
    pub residual: Option<&'a PooledBuffer>,
    pub out: &'a PooledBuffer,
    pub out_stride: usize,
    pub out_off: usize,
}

impl<'a> Gemm<'a> {
    /// `x [m, k] · w [n, k]ᵀ → out [m, n]`, all dense and unoffset; call sites change what differs.
    pub fn linear(
        m: usize,
        k: usize,
        n: usize,
        x: &'a PooledBuffer,
        w: &'a GpuTensor,
        out: &'a PooledBuffer,
    ) -> Gemm<'a> {
        Gemm {
            m,
            n,
            k,
            x,
            x_stride: k,
            x_off: 0,
            conv: None,
            w: w.buffer(),
            w_dtype: w.dtype,
            w_scales: w.scales.as_deref(),
            w_row_len: w.row_len(),
            w_scale_off: 0,
            w_sn: k,
            w_sk: 1,
            w_off: 0,
            bias: None,
            act: Activation::Identity,
            residual: None,
            out,
            out_stride: n,
            out_off: 0,
        }
    }
}
