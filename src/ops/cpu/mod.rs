//! CPU backend on candle-core: native (multi-threaded) and wasm (the fallback when there is no WebGPU
//! adapter). Compute is f32; weights in a block type (Q8_0, Q4_0 from a GGUF file) stay 8- or 4-bit. A
//! product with such a weight takes one of two routes (see [`int8_dot_products_pay`]): candle's quantized
//! matmul — each activation row rounded to 8-bit blocks, integer dot products, ggml's scheme — where the
//! CPU has 8-bit dot-product instructions candle uses for that shape; elsewhere the weight is dequantised
//! for the call, one 64-row panel at a time into a cache-sized buffer, and multiplied in f32, which is
//! faster there (measured on AVX2 without VNNI and in wasm: the integer path ran at 0.25–0.4× f32). f32
//! product weights are held in those panels (`panels.rs`), and so are Q8_0 ones on the f32 route, still
//! 8-bit; the panels are multiplied by hand-written kernels (`panel_kernel/`: AVX-512, wasm simd128) or
//! gemm.

mod gelu;
mod panel_kernel;
mod panels;
mod rows;

use super::{Activation, Backend, Int8Rows, WeightDType};
use crate::error::{Error, Result};
use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use panels::{Epilogue, PanelMatrix};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct CpuBackend {
    /// Weight matrices are quantised to int8 and straight back at load ([`Backend::with_int8_weights`]).
    int8_weights: bool,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }
}

/// A tensor of the CPU backend: f32 values, a weight matrix kept in a block type, or an f32 weight matrix
/// laid out in panels for its products ([`Backend::layout_for_products`]).
#[derive(Clone, Debug)]
pub enum CpuTensor {
    Values(Tensor),
    Blocks(Arc<BlockMatrix>),
    Panels(Arc<PanelMatrix>),
}

/// A weight in a block type: candle's quantized matrix `[rows, k]` (rows: the first dimension, k: the rest)
/// and the shape the model sees (a conv kernel `[cout, cin, 3, 3]` until it is reshaped to `[cout, cin·9]`).
#[derive(Debug)]
pub struct BlockMatrix {
    matrix: Arc<QTensor>,
    dtype: WeightDType,
    shape: Vec<usize>,
    /// Products go through candle's integer kernels ([`int8_dot_products_pay`]), else through f32.
    integer: bool,
}

/// Whether candle 0.11's quantized matmul has a fast kernel for an `[n, k]` weight of `dtype` on this CPU:
/// its repacked, tiled kernels on x86-64 with AVX-512 VNNI or AVX-VNNI (Q8_0 only, `k` a multiple of 256 and
/// `n` of 16: `repack_x86::select`) and on ARM with dot-product instructions (`n` a multiple of 4:
/// `repack::PackedKind::select`). Elsewhere its generic kernels run at ~40 GF/s against ~160 for f32 on 2
/// x86 cores (AVX2 path: Q8_0 0.25–0.35×, Q4_0 0.22–0.28× of f32, the bigG text tower 0.58×) and at 12 against
/// 29 GF/s in wasm with simd128, so dequantising the weight for the call is faster there.
fn int8_dot_products_pay(dtype: WeightDType, n: usize, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"))
            || is_x86_feature_detected!("avxvnni");
        vnni && dtype == WeightDType::Q8_0 && k.is_multiple_of(256) && n.is_multiple_of(16)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let _ = k;
        matches!(dtype, WeightDType::Q8_0 | WeightDType::Q4_0)
            && n.is_multiple_of(4)
            && std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (dtype, n, k);
        false
    }
}

impl CpuTensor {
    /// The shape the model sees.
    pub fn dims(&self) -> &[usize] {
        match self {
            CpuTensor::Values(t) => t.dims(),
            CpuTensor::Blocks(b) => &b.shape,
            CpuTensor::Panels(p) => p.shape(),
        }
    }

    /// The values as a candle tensor. A block weight is dequantised into a copy: only `linear`, `conv2d`,
    /// `gather_rows` and `reshape` use blocks directly, every other op (a position embedding added, say)
    /// gets values.
    fn values(&self) -> Result<Cow<'_, Tensor>> {
        match self {
            CpuTensor::Values(t) => Ok(Cow::Borrowed(t)),
            CpuTensor::Blocks(b) => Ok(Cow::Owned(b.matrix.dequantize(&Device::Cpu)?.reshape(b.shape.as_slice())?)),
            CpuTensor::Panels(p) => Ok(Cow::Owned(p.to_tensor()?)),
        }
    }

    /// `x · selfᵀ` for a weight `[n, k]`.
    fn times_transposed(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.times_transposed_then(x, Epilogue::default())? {
            Product::Finished(y) | Product::Bare(y) => y,
        })
    }

    /// `x · selfᵀ`, finished by `epilogue` where the product goes by panels, bare where it does not.
    fn times_transposed_then(&self, x: &Tensor, epilogue: Epilogue<'_>) -> Result<Product> {
        Ok(match self {
            CpuTensor::Values(w) => Product::Bare(x.matmul(&w.t()?)?),
            CpuTensor::Panels(p) => Product::Finished(p.times_transposed(x, epilogue)?),
            // candle's quantized matmul wants contiguous activations.
            CpuTensor::Blocks(b) if b.integer => {
                Product::Bare(QMatMul::from_arc(b.matrix.clone())?.forward(&x.contiguous()?)?)
            }
            // The weight's values for this call only, one panel at a time: the model stays in blocks.
            CpuTensor::Blocks(b) => {
                let (n, k) = (b.shape[0], b.shape[1..].iter().product::<usize>());
                let data = b.matrix.data()?;
                let dequantized =
                    |p: usize, panel: &mut Vec<f32>| panels::dequantized_panel(b.dtype, &data, [n, k], p, panel);
                Product::Finished(panels::panel_product(x, n, k, &dequantized, epilogue)?)
            }
        })
    }
}

/// A product `x · wᵀ` with its epilogue applied (it went by panels) or not (the caller applies it).
enum Product {
    Finished(Tensor),
    Bare(Tensor),
}

fn check_rank(t: &Tensor, rank: usize, op: &str) -> Result<()> {
    if t.rank() != rank {
        return Err(Error::Backend(format!("{op}: expected a rank-{rank} tensor, got shape {:?}", t.dims())));
    }
    Ok(())
}

fn apply_activation(x: Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Identity => x,
        Activation::GeluErf => {
            let mut values = host(&x)?;
            panels::finish_whole(&mut values, (1, x.elem_count()), Epilogue { bias: None, gelu_erf: true })?;
            Tensor::from_vec(values, x.dims(), &Device::Cpu)?
        }
        Activation::QuickGelu => {
            let sigmoid = (x.affine(-1.702, 0.0)?.exp()? + 1.0)?.recip()?;
            (x * sigmoid)?
        }
        // candle's silu is x / (1 + exp(−x)), as PyTorch's CPU kernel computes it.
        Activation::Silu => x.silu()?,
    })
}

/// Largest scores block (heads × queries × keys f32) the attention materialises at once: queries are
/// processed in chunks below this (the MoVQ's single-head attention at 768 px has 9216² scores).
const ATTENTION_SCORES_BYTES: usize = 64 << 20;
/// Most bytes of one band of a convolution's im2col patches.
const IM2COL_BYTES: usize = 64 << 20;

/// The values of a tensor as a host vector (a copy), row-major.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// `f` of an f32 tensor's values, row-major, read where they lie (a copy only if the tensor is a strided view).
fn in_place<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Err(Error::Backend(format!("{op}: the tensor is not on the CPU")));
    };
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}

fn feature_map(x: &Tensor, height: usize, width: usize, op: &str) -> Result<usize> {
    check_rank(x, 2, op)?;
    let (rows, c) = x.dims2()?;
    if rows != height * width {
        return Err(Error::Backend(format!("{op}: {rows} rows is not a {height}×{width} feature map")));
    }
    Ok(c)
}

/// `x · wᵀ` for one weight `w`: candle's matmul for f32 values, candle's quantized matmul for blocks.
type TimesWt<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// The ops on candle tensors: what [`CpuBackend`] computes once its operands are values (see
/// [`CpuTensor::values`]).
struct Dense;

impl Dense {
    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        check_rank(a, 2, "matmul")?;
        check_rank(b, 2, "matmul")?;
        Ok(a.matmul(b)?)
    }

    /// `act(y + bias)` for a product `y = x · wᵀ`, as passes over the whole result.
    fn bias_and_activation(&self, y: Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        let y = match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        apply_activation(y, act)
    }

    fn layer_norm(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
        check_rank(x, 2, "layer_norm")?;
        let (rows, k) = x.dims2()?;
        let (gamma, beta) = (host(gamma)?, host(beta)?);
        if gamma.len() != k || beta.len() != k {
            return Err(Error::Backend(format!(
                "layer_norm: {} weights and {} biases for rows of {k}",
                gamma.len(),
                beta.len()
            )));
        }
        let mut out = vec![0f32; rows * k];
        in_place(x, "layer_norm", |x| rows::layer_norm(x, k, &gamma, &beta, eps as f32, &mut out))?;
        Ok(Tensor::from_vec(out, (rows, k), &Device::Cpu)?)
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        scale: f32,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (t, width) = q.dims2()?;
        let (s, kw) = k.dims2()?;
        if kw != width || v.dims2()? != (s, width) || heads == 0 || width % heads != 0 {
            return Err(Error::Backend(format!(
                "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
                q.dims(),
                k.dims(),
                v.dims()
            )));
        }
        let d = width / heads;
        let split =
            |x: &Tensor, n: usize| -> Result<Tensor> { Ok(x.reshape((n, heads, d))?.transpose(0, 1)?.contiguous()?) };
        let (kh, vh) = (split(k, s)?, split(v, s)?);
        let kt = kh.transpose(1, 2)?.contiguous()?; // [h, d, s]
        if let Some(b) = bias {
            if b.dims() != [t, s] {
                return Err(Error::Backend(format!("attention: bias {:?} is not [{t}, {s}]", b.dims())));
            }
        }
        // Queries in chunks so that one scores block stays below ATTENTION_SCORES_BYTES.
        let chunk = (ATTENTION_SCORES_BYTES / (4 * heads * s.max(1))).clamp(1, t.max(1));
        let mut outs = Vec::with_capacity(t.div_ceil(chunk));
        let mut start = 0;
        while start < t {
            let len = chunk.min(t - start);
            let qh = split(&q.narrow(0, start, len)?, len)?;
            let mut scores = host(&qh.matmul(&kt)?)?; // [h, len, s]
            let bias = bias.map(|b| host(&b.narrow(0, start, len)?)).transpose()?;
            rows::scaled_softmax(&mut scores, s, scale, bias.as_deref());
            let p = Tensor::from_vec(scores, (heads, len, s), &Device::Cpu)?;
            let out = p.matmul(&vh)?; // [h, len, d]
            outs.push(out.transpose(0, 1)?.reshape((len, width))?);
            start += len;
        }
        if outs.len() == 1 {
            return Ok(outs.pop().expect("one chunk"));
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.dims() != b.dims() {
            return Err(Error::Backend(format!("add: shapes {:?} and {:?} differ", a.dims(), b.dims())));
        }
        Ok((a + b)?)
    }

    fn activation(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        apply_activation(x.clone(), act)
    }

    fn gather_rows(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        check_rank(table, 2, "gather_rows")?;
        let rows = table.dim(0)?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(Error::Backend(format!("gather_rows: index {bad} out of range for {rows} rows")));
        }
        let idx = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
        Ok(table.index_select(&idx, 0)?)
    }

    fn concat_rows(&self, parts: &[&Tensor]) -> Result<Tensor> {
        Ok(Tensor::cat(parts, 0)?)
    }

    fn slice_rows(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        Ok(x.narrow(0, start, len)?.contiguous()?)
    }

    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        Ok(x.reshape(shape)?)
    }

    fn image_patches(&self, image: &Tensor, patch: usize) -> Result<Tensor> {
        let (c, h, w) = image.dims3()?;
        if patch == 0 || h % patch != 0 || w % patch != 0 {
            return Err(Error::Backend(format!("image_patches: {h}×{w} is not a multiple of patch {patch}")));
        }
        let (gh, gw) = (h / patch, w / patch);
        // [c, gh, p, gw, p] → [gh, gw, c, p, p]
        let x = image.reshape((c, gh, patch, gw, patch))?.permute((1, 3, 0, 2, 4))?.contiguous()?;
        Ok(x.reshape((gh * gw, c * patch * patch))?)
    }

    fn conv2d(
        &self,
        x: &Tensor,
        height: usize,
        width: usize,
        weight: (&[usize], &TimesWt<'_>),
        bias: Option<&Tensor>,
        kernel: usize,
    ) -> Result<Tensor> {
        let cin = feature_map(x, height, width, "conv2d")?;
        let (weight_dims, times_wt) = weight;
        let &[cout, wk] = weight_dims else {
            return Err(Error::Backend(format!("conv2d: expected a rank-2 weight, got shape {weight_dims:?}")));
        };
        if kernel.is_multiple_of(2) || wk != cin * kernel * kernel {
            return Err(Error::Backend(format!(
                "conv2d: weight {weight_dims:?} does not fit {cin} input channels and an odd kernel {kernel}"
            )));
        }
        if let Some(b) = bias {
            if b.dims() != [cout] {
                return Err(Error::Backend(format!("conv2d: bias {:?} is not [{cout}]", b.dims())));
            }
        }
        let y = if kernel == 1 {
            times_wt(x)?
        } else {
            // im2col: row (y, x) holds the kernel window around it, column `ci·k² + ky·k + kx` like the weight;
            // built for a band of output rows at a time so the patches stay ≤ IM2COL_BYTES (a 3×3 conv over
            // the MoVQ's 512×512×256 map would otherwise need 2.4 GB, half of what wasm can address).
            let src = host(x)?;
            let (k, pad, kk) = (kernel, kernel / 2, kernel * kernel);
            let cols = cin * kk;
            let band = (IM2COL_BYTES / (4 * width * cols).max(1)).clamp(1, height.max(1));
            let mut outs = Vec::with_capacity(height.div_ceil(band));
            for y0 in (0..height).step_by(band) {
                let rows = band.min(height - y0);
                let mut patches = vec![0f32; rows * width * cols];
                for (p, row) in patches.chunks_exact_mut(cols).enumerate() {
                    let (py, px) = (y0 + p / width, p % width);
                    for ky in 0..k {
                        let sy = py + ky;
                        if sy < pad || sy - pad >= height {
                            continue;
                        }
                        for kx in 0..k {
                            let sx = px + kx;
                            if sx < pad || sx - pad >= width {
                                continue;
                            }
                            let s = ((sy - pad) * width + (sx - pad)) * cin;
                            let tap = ky * k + kx;
                            for (ci, &v) in src[s..s + cin].iter().enumerate() {
                                row[ci * kk + tap] = v;
                            }
                        }
                    }
                }
                outs.push(times_wt(&Tensor::from_vec(patches, (rows * width, cols), &Device::Cpu)?)?);
            }
            if outs.len() == 1 {
                outs.pop().expect("one band")
            } else {
                Tensor::cat(&outs, 0)?
            }
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    fn group_norm(&self, x: &Tensor, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
        check_rank(x, 2, "group_norm")?;
        let (rows, c) = x.dims2()?;
        if groups == 0 || c % groups != 0 || gamma.dims() != [c] || beta.dims() != [c] {
            return Err(Error::Backend(format!(
                "group_norm: {c} channels, {groups} groups, gamma {:?}, beta {:?} do not fit",
                gamma.dims(),
                beta.dims()
            )));
        }
        let (v, g, b) = (host(x)?, host(gamma)?, host(beta)?);
        let cg = c / groups;
        let n = (rows * cg) as f64;
        let mut out = vec![0f32; v.len()];
        for grp in 0..groups {
            let chans = grp * cg..(grp + 1) * cg;
            let mut sum = 0f64;
            for r in 0..rows {
                sum += v[r * c + chans.start..r * c + chans.end].iter().map(|&a| a as f64).sum::<f64>();
            }
            let mean = sum / n;
            let mut sq = 0f64;
            for r in 0..rows {
                sq += v[r * c + chans.start..r * c + chans.end].iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>();
            }
            let rstd = 1.0 / (sq / n + eps).sqrt();
            for ch in chans {
                // y = x·(rstd·γ) + (β − mean·rstd·γ), as PyTorch's CPU group norm applies it.
                let scale = rstd * g[ch] as f64;
                let shift = b[ch] as f64 - mean * scale;
                let (scale, shift) = (scale as f32, shift as f32);
                for r in 0..rows {
                    out[r * c + ch] = v[r * c + ch] * scale + shift;
                }
            }
        }
        Ok(Tensor::from_vec(out, (rows, c), &Device::Cpu)?)
    }

    fn avg_pool_2x2(&self, x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let c = feature_map(x, height, width, "avg_pool_2x2")?;
        if !height.is_multiple_of(2) || !width.is_multiple_of(2) {
            return Err(Error::Backend(format!("avg_pool_2x2: {height}×{width} is not even")));
        }
        let v = host(x)?;
        let (oh, ow) = (height / 2, width / 2);
        let mut out = vec![0f32; oh * ow * c];
        for oy in 0..oh {
            for ox in 0..ow {
                let at = |y: usize, x: usize| &v[(y * width + x) * c..(y * width + x + 1) * c];
                let (a, b, d, e) =
                    (at(2 * oy, 2 * ox), at(2 * oy, 2 * ox + 1), at(2 * oy + 1, 2 * ox), at(2 * oy + 1, 2 * ox + 1));
                let o = &mut out[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
                for ch in 0..c {
                    // PyTorch's order: the window row by row, then the division.
                    o[ch] = (((a[ch] + b[ch]) + d[ch]) + e[ch]) / 4.0;
                }
            }
        }
        Ok(Tensor::from_vec(out, (oh * ow, c), &Device::Cpu)?)
    }

    fn resize_nearest(
        &self,
        x: &Tensor,
        height: usize,
        width: usize,
        out_height: usize,
        out_width: usize,
    ) -> Result<Tensor> {
        feature_map(x, height, width, "resize_nearest")?;
        if (height == 0 || width == 0) && out_height * out_width > 0 {
            return Err(Error::Backend("resize_nearest: empty input".into()));
        }
        let mut ids = Vec::with_capacity(out_height * out_width);
        for oy in 0..out_height {
            let sy = oy * height / out_height;
            for ox in 0..out_width {
                ids.push((sy * width + ox * width / out_width) as u32);
            }
        }
        let idx = Tensor::from_vec(ids, out_height * out_width, &Device::Cpu)?;
        Ok(x.index_select(&idx, 0)?)
    }

    fn concat_cols(&self, parts: &[&Tensor]) -> Result<Tensor> {
        for p in parts {
            check_rank(p, 2, "concat_cols")?;
        }
        Ok(Tensor::cat(parts, 1)?)
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.dims() != b.dims() {
            return Err(Error::Backend(format!("mul: shapes {:?} and {:?} differ", a.dims(), b.dims())));
        }
        Ok((a * b)?)
    }

    fn scale_shift(&self, x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
        check_rank(x, 2, "scale_shift")?;
        let c = x.dim(1)?;
        if scale.dims() != [1, c] || shift.dims() != [1, c] {
            return Err(Error::Backend(format!(
                "scale_shift: scale {:?} and shift {:?} must be [1, {c}]",
                scale.dims(),
                shift.dims()
            )));
        }
        Ok(x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?)
    }
}

fn values(t: &CpuTensor) -> Result<Cow<'_, Tensor>> {
    t.values()
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> &'static str {
        "cpu"
    }

    /// Quantise-dequantise: the CPU computes from the same values as the GPU's int8 kernels (so the two
    /// compare closely) but keeps them in f32, saving no memory. (A file in a block type, Q8_0 or Q4_0, is
    /// what saves memory on the CPU: see `lambda-eclipse quantize`.)
    fn with_int8_weights(&self) -> CpuBackend {
        CpuBackend { int8_weights: true }
    }

    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<CpuTensor> {
        dtype.check_bytes(raw.len(), shape)?;
        if dtype.is_quantized() {
            return upload_blocks(raw, dtype, shape);
        }
        let mut values = dtype.to_f32(raw);
        if self.int8_weights && shape.len() >= 2 {
            values = Int8Rows::quantize(&values, shape[0]).dequantize();
        }
        Ok(CpuTensor::Values(Tensor::from_vec(values, shape, &Device::Cpu)?))
    }

    /// An f32 matrix becomes panels (see `panels.rs`: the kernels then read it without repacking it per
    /// call); so does a Q8_0 matrix whose products go through f32, kept 8-bit in panel order. Blocks for
    /// candle's integer kernels, Q4_0 and conv kernels stay as they are.
    fn layout_for_products(&self, w: CpuTensor) -> Result<CpuTensor> {
        match w {
            CpuTensor::Values(t) if t.rank() == 2 => {
                let (n, k) = t.dims2()?;
                // Read in place (an uploaded weight is contiguous): no host copy of the whole matrix.
                let panels = in_place(&t, "layout_for_products", |w| PanelMatrix::new(w, n, k))?;
                Ok(CpuTensor::Panels(Arc::new(panels)))
            }
            CpuTensor::Blocks(b) if !b.integer && b.dtype == WeightDType::Q8_0 && b.shape.len() == 2 => {
                let (n, k) = (b.shape[0], b.shape[1]);
                let panels = PanelMatrix::from_q8_0(&b.matrix.data()?, n, k);
                Ok(CpuTensor::Panels(Arc::new(panels)))
            }
            other => Ok(other),
        }
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor::Values(Tensor::from_slice(data, shape, &Device::Cpu)?))
    }

    fn shape(&self, t: &CpuTensor) -> Vec<usize> {
        t.dims().to_vec()
    }

    async fn read_f32(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.values()?.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    fn byte_size(&self, t: &CpuTensor) -> usize {
        match t {
            CpuTensor::Values(t) => t.elem_count() * t.dtype().size_in_bytes(),
            CpuTensor::Blocks(b) => b.matrix.storage_size_in_bytes(),
            CpuTensor::Panels(p) => p.bytes(),
        }
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        Dense.matmul(&*values(a)?, &*values(b)?).map(CpuTensor::Values)
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, act: Activation) -> Result<CpuTensor> {
        if w.dims().len() != 2 {
            return Err(Error::Backend(format!("linear: expected a rank-2 tensor, got shape {:?}", w.dims())));
        }
        let x = values(x)?;
        check_rank(&x, 2, "linear")?;
        let bias = bias.map(values).transpose()?;
        // The bias and a GELU go into the panels' epilogue (while each panel's columns are in cache), or one
        // pass over the whole result for a product that does not go by panels; the other activations take
        // candle's passes.
        let bias_values = bias.as_deref().map(host).transpose()?;
        let epilogue = Epilogue { bias: bias_values.as_deref(), gelu_erf: act == Activation::GeluErf };
        let y = match w.times_transposed_then(&x, epilogue)? {
            Product::Finished(finished) if epilogue.gelu_erf => finished,
            Product::Finished(with_bias) => apply_activation(with_bias, act)?,
            Product::Bare(product) if epilogue.is_nothing() => apply_activation(product, act)?,
            // The same epilogue in one pass over the whole result.
            Product::Bare(product) if act == Activation::GeluErf || act == Activation::Identity => {
                let (m, n) = product.dims2()?;
                let mut y = host(&product)?;
                panels::finish_whole(&mut y, (m, n), epilogue)?;
                Tensor::from_vec(y, (m, n), &Device::Cpu)?
            }
            Product::Bare(product) => Dense.bias_and_activation(product, bias.as_deref(), act)?,
        };
        Ok(CpuTensor::Values(y))
    }

    fn layer_norm(&self, x: &CpuTensor, gamma: &CpuTensor, beta: &CpuTensor, eps: f64) -> Result<CpuTensor> {
        Dense.layer_norm(&*values(x)?, &*values(gamma)?, &*values(beta)?, eps).map(CpuTensor::Values)
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        heads: usize,
        scale: f32,
        bias: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        let bias = bias.map(values).transpose()?;
        Dense.attention(&*values(q)?, &*values(k)?, &*values(v)?, heads, scale, bias.as_deref()).map(CpuTensor::Values)
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        Dense.add(&*values(a)?, &*values(b)?).map(CpuTensor::Values)
    }

    fn activation(&self, x: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        Dense.activation(&*values(x)?, act).map(CpuTensor::Values)
    }

    /// Rows of a block table are dequantised one by one: a q8_0 token embedding (49,408 rows) is never
    /// expanded whole.
    fn gather_rows(&self, table: &CpuTensor, ids: &[u32]) -> Result<CpuTensor> {
        match table {
            CpuTensor::Values(t) => Dense.gather_rows(t, ids).map(CpuTensor::Values),
            CpuTensor::Blocks(b) => b.gather_rows(ids).map(CpuTensor::Values),
            CpuTensor::Panels(_) => Dense.gather_rows(&*values(table)?, ids).map(CpuTensor::Values),
        }
    }

    fn concat_rows(&self, parts: &[&CpuTensor]) -> Result<CpuTensor> {
        let parts = parts.iter().map(|p| p.values()).collect::<Result<Vec<_>>>()?;
        Dense.concat_rows(&parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>()).map(CpuTensor::Values)
    }

    fn slice_rows(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        Dense.slice_rows(&*values(x)?, start, len).map(CpuTensor::Values)
    }

    /// A block weight keeps its blocks when its rows stay rows (the first dimension unchanged): a conv
    /// kernel `[cout, cin, k, k]` → `[cout, cin·k·k]`.
    fn reshape(&self, x: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        match x {
            CpuTensor::Blocks(b)
                if shape.first() == b.shape.first()
                    && shape.iter().product::<usize>() == b.shape.iter().product::<usize>() =>
            {
                Ok(CpuTensor::Blocks(Arc::new(BlockMatrix {
                    matrix: b.matrix.clone(),
                    dtype: b.dtype,
                    shape: shape.to_vec(),
                    integer: b.integer,
                })))
            }
            _ => Dense.reshape(&*values(x)?, shape).map(CpuTensor::Values),
        }
    }

    fn image_patches(&self, image: &CpuTensor, patch: usize) -> Result<CpuTensor> {
        Dense.image_patches(&*values(image)?, patch).map(CpuTensor::Values)
    }

    fn conv2d(
        &self,
        x: &CpuTensor,
        height: usize,
        width: usize,
        weight: &CpuTensor,
        bias: Option<&CpuTensor>,
        kernel: usize,
    ) -> Result<CpuTensor> {
        let bias = bias.map(values).transpose()?;
        let times_wt = |x: &Tensor| weight.times_transposed(x);
        Dense
            .conv2d(&*values(x)?, height, width, (weight.dims(), &times_wt), bias.as_deref(), kernel)
            .map(CpuTensor::Values)
    }

    fn group_norm(
        &self,
        x: &CpuTensor,
        groups: usize,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        eps: f64,
    ) -> Result<CpuTensor> {
        Dense.group_norm(&*values(x)?, groups, &*values(gamma)?, &*values(beta)?, eps).map(CpuTensor::Values)
    }

    fn avg_pool_2x2(&self, x: &CpuTensor, height: usize, width: usize) -> Result<CpuTensor> {
        Dense.avg_pool_2x2(&*values(x)?, height, width).map(CpuTensor::Values)
    }

    fn resize_nearest(
        &self,
        x: &CpuTensor,
        height: usize,
        width: usize,
        out_height: usize,
        out_width: usize,
    ) -> Result<CpuTensor> {
        Dense.resize_nearest(&*values(x)?, height, width, out_height, out_width).map(CpuTensor::Values)
    }

    fn concat_cols(&self, parts: &[&CpuTensor]) -> Result<CpuTensor> {
        let parts = parts.iter().map(|p| p.values()).collect::<Result<Vec<_>>>()?;
        Dense.concat_cols(&parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>()).map(CpuTensor::Values)
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        Dense.mul(&*values(a)?, &*values(b)?).map(CpuTensor::Values)
    }

    fn scale_shift(&self, x: &CpuTensor, scale: &CpuTensor, shift: &CpuTensor) -> Result<CpuTensor> {
        Dense.scale_shift(&*values(x)?, &*values(scale)?, &*values(shift)?).map(CpuTensor::Values)
    }
}

/// A block-type weight as candle's quantized matrix `[rows, k]`. candle copies the blocks into its own
/// storage through a cast that requires them aligned for its block structs (2 bytes: their f16 scale); bytes
/// that start elsewhere (a tensor's bytes may) are first copied into aligned memory.
fn upload_blocks(raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<CpuTensor> {
    let rows = shape[0];
    let k: usize = shape[1..].iter().product();
    let mut aligned = Vec::new();
    let bytes = if raw.as_ptr().align_offset(8) == 0 {
        raw
    } else {
        aligned.resize(raw.len().div_ceil(8), 0u64);
        let copy = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..raw.len()];
        copy.copy_from_slice(raw);
        &*copy
    };
    let storage = QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, super::blocks::ggml_dtype(dtype)?)?;
    let matrix = Arc::new(QTensor::new(storage, (rows, k))?);
    let integer = int8_dot_products_pay(dtype, rows, k);
    Ok(CpuTensor::Blocks(Arc::new(BlockMatrix { matrix, dtype, shape: shape.to_vec(), integer })))
}

impl BlockMatrix {
    /// Rows `ids` dequantised (an embedding lookup in a block-type table).
    fn gather_rows(&self, ids: &[u32]) -> Result<Tensor> {
        if self.shape.len() != 2 {
            return Err(Error::Backend(format!("gather_rows: expected a rank-2 tensor, got shape {:?}", self.shape)));
        }
        let (rows, k) = (self.shape[0], self.shape[1]);
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(Error::Backend(format!("gather_rows: index {bad} out of range for {rows} rows")));
        }
        let data = self.matrix.data()?;
        let row_bytes = k / self.dtype.block_values() * self.dtype.block_bytes();
        let mut out = Vec::with_capacity(ids.len() * k);
        for &i in ids {
            let i = i as usize;
            self.dtype.dequantize_into(&data[i * row_bytes..(i + 1) * row_bytes], &mut out);
        }
        Ok(Tensor::from_vec(out, (ids.len(), k), &Device::Cpu)?)
    }
}
