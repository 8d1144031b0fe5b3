//! WebGPU backend: the op layer as WGSL compute kernels through wgpu (WebGPU in the browser, Vulkan, Metal or
//! DX12 natively).
//!
//! Execution model: every op records a compute pass (or a buffer copy) into one pending `CommandEncoder`; the
//! whole forward is submitted at [`Backend::read_f32`], the only async op, which then maps a staging buffer.
//! Nothing else waits on the device.
//!
//! Storage: tensors are flat storage buffers. Activations are f32; weights stay as the file stores them where
//! a kernel can read that directly:
//! - f32 → f32;
//! - f16 matrices (rank ≥ 2) → uploaded as-is, two halves per u32 (element 2i in the low half; an odd count is
//!   padded), read with `unpack2x16float` by `linear`/`matmul`/`gather_rows` and unpacked to f32 on the
//!   device by every other op;
//! - f16 vectors (biases, norm parameters, class embeddings: a negligible share of the bytes) and all bf16
//!   tensors → converted to f32 on the host. bf16 → f32 is exact; keeping bf16 packed (`u32 << 16` unpacking)
//!   is a later step;
//! - through [`Backend::with_int8_weights`], matrices of any float type → int8 quantised per row (output
//!   channel) on the host, four per u32, plus an f32 scale per row in a buffer of its own; the GEMM
//!   dequantises as it loads (`gemm_w_i8.wgsl`), `gather_rows` likewise, every other op dequantises to f32
//!   first (`dequantize_i8.wgsl`).
//!
//! Limits are WebGPU's defaults (clamped to the adapter's where lower), so native runs behave like the
//! browser. One storage binding is at most 128 MiB there, so a larger weight (the f32 token embedding of the
//! bigG text tower is 253 MB) is split by rows into several buffers ([`RowChunk`]); `linear`, `conv2d` and
//! `gather_rows`, the ops that read such weights, run once per chunk. Other ops refuse split tensors clearly.
//!
//! `shader-f16`: where the adapter has it, f16 weights are read as native `f16` by the linear kernel
//! (`gemm_w_f16*.wgsl`); otherwise through `unpack2x16float` (browsers without the feature).

mod device;
mod image_ops;
pub mod kernels;
mod pool;
mod recorder;
mod tensor;
mod upload;

pub use device::{GpuBackend, GpuOptions};
pub use pool::PoolStats;
pub use tensor::{GpuDType, GpuTensor, RowChunk};

use super::{Activation, Backend, WeightDType};
use crate::error::{Error, Result};
use kernels::params::*;
use kernels::{GemmInput, GemmTile, GemmWeight, Kernel};
use pool::PooledBuffer;
use tensor::{dims2, Int8Scales};

/// Workgroup sizes and shared-memory bounds baked into the kernels.
const ATTENTION_MAX_HEAD_DIM: usize = 256;
const ATTENTION_MAX_KEYS: usize = 1024;

fn backend_err(msg: impl Into<String>) -> Error {
    Error::Backend(msg.into())
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// Converts a size or index to the u32 the kernels use.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| backend_err(format!("{what} = {v} does not fit the kernels' 32-bit indices")))
}

impl GpuBackend {
    /// Unpacks `count` f16 elements starting at `src_off` of `src` into `dst` at `dst_off`.
    fn unpack_into(&self, src: &GpuTensor, src_off: usize, dst: &GpuTensor, dst_off: usize, count: usize) -> Result<()> {
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
    fn as_f32(&self, t: &GpuTensor) -> Result<GpuTensor> {
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
                    self.dispatch(Kernel::DequantizeI8, &params, &[t.buffer(), &scales.buf, out.buffer()], self.groups_1d(n));
                }
                Ok(out)
            }
            (GpuDType::I8, None) => Err(backend_err("int8 tensor without scales")),
        }
    }

    /// `x [m, k]` times the weight described by strides (see gemm_params.wgsl), plus bias, then activation.
    /// A weight split by rows (`linear` only: rows are output columns) runs one dispatch per chunk.
    fn gemm(&self, x: &GpuTensor, w: &GpuTensor, (m, k, n): (usize, usize, usize), (w_sn, w_sk): (usize, usize),
        bias: Option<&GpuTensor>, act: Activation, op: &str) -> Result<GpuTensor> {
        let x = self.as_f32(x)?;
        let bias = bias.map(|b| self.as_f32(b)).transpose()?;
        let out = self.alloc_f32(&[m, n], op)?;
        if m == 0 || n == 0 {
            return Ok(out);
        }
        let chunks = if w.is_split() { w.row_chunks() } else { vec![(0, n, w.buffer())] };
        for (first, cols, w_buf) in chunks {
            self.dispatch_gemm(&Gemm {
                n: cols,
                w: w_buf,
                w_scale_off: first,
                w_sn,
                w_sk,
                bias: bias.as_ref().map(|b| (b.buffer(), first)),
                act,
                out_stride: n,
                out_off: first,
                ..Gemm::linear(m, k, cols, x.buffer(), w, out.buffer())
            })?;
        }
        Ok(out)
    }

    /// Records one tiled-GEMM dispatch (gemm_params.wgsl).
    fn dispatch_gemm(&self, g: &Gemm) -> Result<()> {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let weight = match g.w_dtype {
            GpuDType::F32 => GemmWeight::F32,
            GpuDType::F16 if self.inner.shader_f16 => GemmWeight::F16Native,
            GpuDType::F16 => GemmWeight::F16Packed,
            GpuDType::I8 => GemmWeight::Int8,
        };
        let (scales, w_row_len) = match (weight, g.w_scales) {
            (GemmWeight::Int8, Some(s)) => (Some(&s.buf), s.row_len),
            (GemmWeight::Int8, None) => return Err(backend_err("int8 GEMM weight without scales")),
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
            act: activation_code(g.act)?,
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
            _pad0: 0,
        };
        let aligned = |v: usize| v % 4 == 0;
        let input = if g.conv.is_some() {
            GemmInput::Conv
        } else if self.inner.vec4_loads
            && g.w_sk == 1
            && [g.k, g.x_stride, g.x_off, g.w_sn, g.w_off].into_iter().all(aligned)
            && (scales.is_none() || aligned(w_row_len))
        {
            GemmInput::DenseVec4
        } else {
            GemmInput::Dense
        };
        let (tile, size) = match self.inner.gemm_tile {
            Some(tile) => (tile, if tile == GemmTile::T128 { 128 } else { 64 }),
            // 128×128 tiles only where there are enough of them to fill a large GPU (an H200 has 132 SMs):
            // measured there, [257×8192]·[8192×1664] (39 such tiles) ran at 660 GF/s against 1060 with 64×64.
            None if ceil_div(g.m, 128) * ceil_div(g.n, 128) >= 256 => (GemmTile::T128, 128),
            None => (GemmTile::T64, 64),
        };
        let bias_buf = g.bias.map_or(&self.inner.dummy, |b| b.0);
        let groups = [u32_of(ceil_div(g.n, size), "n")?, u32_of(ceil_div(g.m, size), "m")?, 1];
        let mut buffers = vec![g.x, g.w, bias_buf, g.out];
        buffers.extend(scales);
        self.dispatch(Kernel::Gemm(weight, input, tile), &params, &buffers, groups);
        Ok(())
    }
}

/// One tiled-GEMM dispatch: `out[out_off + i·out_stride + j] = act(Σ_k X(i, k)·W(j, k) + bias[bias_off + j])`
/// with `X(i, k) = x[x_off + i·x_stride + k]` (or the conv gather) and `W(j, k) = w[w_off + j·w_sn + k·w_sk]`.
struct Gemm<'a> {
    m: usize,
    n: usize,
    k: usize,
    x: &'a PooledBuffer,
    x_stride: usize,
    x_off: usize,
    /// Implicit im2col instead of a dense `x`: (height, width, in channels, kernel size).
    conv: Option<(usize, usize, usize, usize)>,
    w: &'a PooledBuffer,
    w_dtype: GpuDType,
    /// An int8 weight's scales, and the row of `w`'s first element among them (a split weight's chunk).
    w_scales: Option<&'a Int8Scales>,
    w_scale_off: usize,
    w_sn: usize,
    w_sk: usize,
    w_off: usize,
    /// The bias buffer and the offset of output column 0 in it.
    bias: Option<(&'a PooledBuffer, usize)>,
    act: Activation,
    out: &'a PooledBuffer,
    out_stride: usize,
    out_off: usize,
}

impl<'a> Gemm<'a> {
    /// `x [m, k] · w [n, k]ᵀ → out [m, n]`, all dense and unoffset; call sites change what differs.
    fn linear(m: usize, k: usize, n: usize, x: &'a PooledBuffer, w: &'a GpuTensor, out: &'a PooledBuffer) -> Gemm<'a> {
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
            w_scale_off: 0,
            w_sn: k,
            w_sk: 1,
            w_off: 0,
            bias: None,
            act: Activation::Identity,
            out,
            out_stride: n,
            out_off: 0,
        }
    }
}

/// The kernels' code for an activation (activation_fns.wgsl).
fn activation_code(act: Activation) -> Result<u32> {
    Ok(match act {
        Activation::Identity => 0,
        Activation::GeluErf => 1,
        Activation::QuickGelu => 2,
        Activation::Silu => 3,
    })
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;

    fn name(&self) -> &'static str {
        "webgpu"
    }

    /// Weight matrices stored in f32 (the real decoder UNet: 5 GB) are kept as f16 on the device (2.5 GB).
    fn with_f16_weights(&self) -> GpuBackend {
        GpuBackend { inner: self.inner.clone(), matrices: device::MatrixStorage::F16 }
    }

    /// Weight matrices as int8 per output channel (the real decoder UNet: 1.26 GB instead of f16's 2.51 GB).
    fn with_int8_weights(&self) -> GpuBackend {
        GpuBackend { inner: self.inner.clone(), matrices: device::MatrixStorage::Int8 }
    }

    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<GpuTensor> {
        self.upload_weight_as_stored(raw, dtype, shape)
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_f32(data, shape)
    }

    fn shape(&self, t: &GpuTensor) -> Vec<usize> {
        t.shape.clone()
    }

    async fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.read_back_f32(t).await
    }

    /// The size of the buffer actually allocated (pool buckets and f16 padding included).
    fn byte_size(&self, t: &GpuTensor) -> usize {
        self.allocated_bytes(t)
    }

    async fn sync(&self) -> Result<()> {
        // A one-value readback submits everything recorded and reports what the device rejected meanwhile.
        let probe = self.from_f32(&[0.0], &[1])?;
        self.read_f32(&probe).await.map(|_| ())
    }

    fn max_activation_bytes(&self) -> Option<u64> {
        let l = &self.inner.limits;
        Some(u64::from(l.max_storage_buffer_binding_size).min(l.max_buffer_size))
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let (m, k) = dims2(a, "matmul")?;
        let (k2, n) = dims2(b, "matmul")?;
        if k != k2 {
            return Err(backend_err(format!("matmul: shapes {:?} and {:?} do not chain", a.shape, b.shape)));
        }
        self.check_whole(b, "matmul")?;
        self.gemm(a, b, (m, k, n), (1, n), None, Activation::Identity, "matmul")
    }

    fn linear(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>, act: Activation) -> Result<GpuTensor> {
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
        self.gemm(x, w, (m, k, n), (k, 1), bias, act, "linear")
    }

    fn layer_norm(&self, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f64) -> Result<GpuTensor> {
        let (rows, cols) = dims2(x, "layer_norm")?;
        if gamma.numel() != cols || beta.numel() != cols {
            return Err(backend_err(format!(
                "layer_norm: gamma {:?} / beta {:?} do not fit input {:?}",
                gamma.shape, beta.shape, x.shape
            )));
        }
        let (x, gamma, beta) = (self.as_f32(x)?, self.as_f32(gamma)?, self.as_f32(beta)?);
        let out = self.alloc_f32(&x.shape, "layer_norm")?;
        if rows == 0 || cols == 0 {
            return Ok(out);
        }
        let params = LayerNormParams { cols: u32_of(cols, "cols")?, eps: eps as f32, ..Default::default() };
        let groups = [u32_of(rows, "rows")?, 1, 1];
        self.dispatch(Kernel::LayerNorm, &params, &[x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()], groups);
        Ok(out)
    }

    fn attention(&self, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, heads: usize, scale: f32,
        bias: Option<&GpuTensor>) -> Result<GpuTensor> {
        let (t, width) = dims2(q, "attention")?;
        let (s, kw) = dims2(k, "attention")?;
        if kw != width || v.shape != [s, width] || heads == 0 || width % heads != 0 {
            return Err(backend_err(format!(
                "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
                q.shape, k.shape, v.shape
            )));
        }
        if let Some(b) = bias {
            if b.numel() != t * s {
                return Err(backend_err(format!("attention: bias {:?} is not [{t}, {s}]", b.shape)));
            }
        }
        let d = width / heads;
        let (q, k, v) = (self.as_f32(q)?, self.as_f32(k)?, self.as_f32(v)?);
        let bias = bias.map(|b| self.as_f32(b)).transpose()?;
        if t > 0 && s > 0 && (d > ATTENTION_MAX_HEAD_DIM || s > ATTENTION_MAX_KEYS) {
            // Beyond the fused kernel's workgroup memory (the decoders' long sequences, MoVQ's 512-wide head).
            return self.attention_blocked(&q, &k, &v, heads, scale, bias.as_ref());
        }
        let out = self.alloc_f32(&[t, width], "attention")?;
        if t == 0 || width == 0 {
            return Ok(out);
        }
        if s == 0 {
            return Err(backend_err("attention: no keys"));
        }
        let params = AttentionParams {
            s: u32_of(s, "keys")?,
            d: u32_of(d, "head dim")?,
            width: u32_of(width, "width")?,
            has_bias: bias.is_some() as u32,
            scale,
            ..Default::default()
        };
        let bias_buf = bias.as_ref().map_or(&self.inner.dummy, |b| b.buffer());
        let groups = [u32_of(t, "queries")?, u32_of(heads, "heads")?, 1];
        self.dispatch(Kernel::Attention, &params, &[q.buffer(), k.buffer(), v.buffer(), bias_buf, out.buffer()], groups);
        Ok(out)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.elementwise_pair(Kernel::Add, a, b, "add")
    }

    fn activation(&self, x: &GpuTensor, act: Activation) -> Result<GpuTensor> {
        if act == Activation::Identity {
            return Ok(x.clone());
        }
        let code = activation_code(act)?;
        let x = self.as_f32(x)?;
        let out = self.alloc_f32(&x.shape, "activation")?;
        let n = x.numel();
        if n > 0 {
            let params = ActivationParams { count: n as u32, act: code, ..Default::default() };
            self.dispatch(Kernel::Activation, &params, &[x.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    fn gather_rows(&self, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
        let (rows, cols) = dims2(table, "gather_rows")?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(backend_err(format!("gather_rows: index {bad} out of range for {rows} rows")));
        }
        let out = self.alloc_f32(&[ids.len(), cols], "gather_rows")?;
        let n = ids.len() * cols;
        if n == 0 {
            return Ok(out);
        }
        let ids_buf = self.upload(bytemuck::cast_slice(ids), "gather_rows ids")?;
        let (table_type, scales) = match (table.dtype, &table.scales) {
            (GpuDType::F32, _) => (0, &self.inner.dummy),
            (GpuDType::F16, _) => (1, &self.inner.dummy),
            (GpuDType::I8, Some(s)) if s.row_len == cols => (2, &s.buf),
            (GpuDType::I8, _) => return Err(backend_err(format!("gather_rows: int8 table {:?} without per-row scales", table.shape))),
        };
        // One dispatch per row chunk of a split table; each writes the output rows whose id it holds.
        for (first, count, table_buf) in table.row_chunks() {
            if !ids.iter().any(|&i| (first..first + count).contains(&(i as usize))) {
                continue;
            }
            let params = GatherRowsParams {
                rows: u32_of(ids.len(), "rows")?,
                cols: u32_of(cols, "cols")?,
                table_type,
                first: u32_of(first, "first row")?,
                count: u32_of(count, "row count")?,
                ..Default::default()
            };
            self.dispatch(Kernel::GatherRows, &params, &[table_buf, &ids_buf, out.buffer(), scales], self.groups_1d(n));
        }
        Ok(out)
    }

    fn concat_rows(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        let first = parts.first().ok_or_else(|| backend_err("concat_rows: no tensors"))?;
        if first.shape.is_empty() || parts.iter().any(|p| p.shape.len() != first.shape.len() || p.shape[1..] != first.shape[1..]) {
            let shapes: Vec<_> = parts.iter().map(|p| &p.shape).collect();
            return Err(backend_err(format!("concat_rows: shapes {shapes:?} do not stack")));
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let out = self.alloc_f32(&shape, "concat_rows")?;
        let mut offset = 0;
        for part in parts {
            self.check_whole(part, "concat_rows")?;
            let part = if part.dtype == GpuDType::I8 { &self.as_f32(part)? } else { *part };
            let n = part.numel();
            match part.dtype {
                GpuDType::F32 if n > 0 => self.record(|enc| {
                    enc.copy_buffer_to_buffer(&part.buffer().buffer, 0, &out.buffer().buffer, (offset * 4) as u64, (n * 4) as u64)
                }),
                GpuDType::F32 => {}
                GpuDType::F16 => self.unpack_into(part, 0, &out, offset, n)?,
                GpuDType::I8 => return Err(backend_err("concat_rows: an int8 part was not dequantised")),
            }
            offset += n;
        }
        Ok(out)
    }

    fn slice_rows(&self, x: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
        let rows = *x.shape.first().ok_or_else(|| backend_err("slice_rows: scalar tensor"))?;
        if start.checked_add(len).is_none_or(|end| end > rows) {
            return Err(backend_err(format!("slice_rows: rows {start}..{} out of range for {:?}", start + len, x.shape)));
        }
        self.check_whole(x, "slice_rows")?;
        let x = if x.dtype == GpuDType::I8 { &self.as_f32(x)? } else { x };
        let row: usize = x.shape[1..].iter().product();
        let mut shape = x.shape.clone();
        shape[0] = len;
        let out = self.alloc_f32(&shape, "slice_rows")?;
        let n = len * row;
        match x.dtype {
            GpuDType::F32 if n > 0 => self.record(|enc| {
                enc.copy_buffer_to_buffer(&x.buffer().buffer, (start * row * 4) as u64, &out.buffer().buffer, 0, (n * 4) as u64)
            }),
            GpuDType::F32 => {}
            GpuDType::F16 => self.unpack_into(x, start * row, &out, 0, n)?,
            GpuDType::I8 => return Err(backend_err("slice_rows: an int8 tensor was not dequantised")),
        }
        Ok(out)
    }

    fn reshape(&self, x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        if shape.iter().product::<usize>() != x.numel() {
            return Err(backend_err(format!("reshape: cannot view {:?} as {shape:?}", x.shape)));
        }
        // A split weight keeps its row chunks, so only reshapes that keep the first dimension are allowed
        // (e.g. a conv weight [out, in, kh, kw] viewed as [out, in·kh·kw]).
        if x.is_split() && shape.first() != x.shape.first() {
            return Err(backend_err(format!(
                "reshape: {:?} is split by rows across {} buffers; cannot view it as {shape:?}",
                x.shape,
                x.buffer_count()
            )));
        }
        Ok(GpuTensor { shape: shape.to_vec(), ..x.clone() })
    }

    fn image_patches(&self, image: &GpuTensor, patch: usize) -> Result<GpuTensor> {
        let (c, h, w) = match image.shape[..] {
            [c, h, w] => (c, h, w),
            _ => return Err(backend_err(format!("image_patches: expected [c, h, w], got {:?}", image.shape))),
        };
        if patch == 0 || h % patch != 0 || w % patch != 0 {
            return Err(backend_err(format!("image_patches: {h}×{w} is not a multiple of patch {patch}")));
        }
        let image = self.as_f32(image)?;
        let (gh, gw) = (h / patch, w / patch);
        let cols = c * patch * patch;
        let out = self.alloc_f32(&[gh * gw, cols], "image_patches")?;
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
            self.dispatch(Kernel::ImagePatches, &params, &[image.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    fn conv2d(&self, x: &GpuTensor, height: usize, width: usize, weight: &GpuTensor, bias: Option<&GpuTensor>,
        kernel: usize) -> Result<GpuTensor> {
        self.conv2d_kernel(x, height, width, weight, bias, kernel)
    }

    fn group_norm(&self, x: &GpuTensor, groups: usize, gamma: &GpuTensor, beta: &GpuTensor, eps: f64)
        -> Result<GpuTensor> {
        self.group_norm_kernel(x, groups, gamma, beta, eps)
    }

    fn avg_pool_2x2(&self, x: &GpuTensor, height: usize, width: usize) -> Result<GpuTensor> {
        self.avg_pool_2x2_kernel(x, height, width)
    }

    fn resize_nearest(&self, x: &GpuTensor, height: usize, width: usize, out_height: usize, out_width: usize)
        -> Result<GpuTensor> {
        self.resize_nearest_kernel(x, height, width, out_height, out_width)
    }

    fn concat_cols(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        self.concat_cols_kernel(parts)
    }

    fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.elementwise_pair(Kernel::Mul, a, b, "mul")
    }

    fn scale_shift(&self, x: &GpuTensor, scale: &GpuTensor, shift: &GpuTensor) -> Result<GpuTensor> {
        self.scale_shift_kernel(x, scale, shift)
    }
}
