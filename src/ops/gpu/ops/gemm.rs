//! The tiled GEMM family: `linear`, `matmul` and `conv2d` (implicit im2col), and the one place that turns a
//! [`Gemm`] description into a kernel variant — weight reader by storage type, input reader by alignment,
//! tiling by output size (a GEMV kernel for at most 8 rows) — and its params (gemm_params.wgsl). The long-sequence attention uses it too.

use crate::error::Result;
use crate::ops::gpu::kernels::params::{activation_code, GemmParams};
use crate::ops::gpu::kernels::{GemmInput, GemmTile, GemmWeight, Kernel, Reduction};
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
        ..Default::default()
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
        None if g.m <= 8 && be.inner.reduction == Reduction::Subgroup => GemmTile::GemvSubgroup,
        None if g.m <= 8 => GemmTile::Gemv,
        // On a GPU 64×64: measured on an H200 (Vulkan), it beat 128×128 at every shape — the bigG GEMMs
        // 6.5–15.3 TF/s against 4.2–6.7, the UNet step at 512 px 1002 against 1159 ms, MoVQ 1109 against
        // 1280 ms, where the convolutions have hundreds to thousands of tiles (a thread's 8×8 outputs and
        // their K-tile sums hold 128 registers, the 4×4 tiling's 32). On a CPU rasteriser (lavapipe,
        // SwiftShader) 128×128 where there are at least 256 such tiles: there the larger block amortises its
        // loads (lavapipe, forced: 5.8–6.5 against 3.8–5.2 GF/s at the bigG shapes).
        None if be.inner.cpu_adapter && g.m.div_ceil(128) * g.n.div_ceil(128) >= 256 => GemmTile::T128,
        None => GemmTile::T64,
    };
    let tile = if be.inner.f16_math { tile.with_f16_math() } else { tile };
    let (rows, cols) = tile.size();
    let bias_buf = g.bias.map_or(&be.inner.dummy, |b| b.0);
    let residual_buf = g.residual.unwrap_or(&be.inner.dummy);
    let tiles = [g.n.div_ceil(cols), g.m.div_ceil(rows)];
    let kernel = Kernel::Gemm(weight, input, tile);
    let slices = split_k_slices(be, (g.m, g.k, g.n), tile);
    if slices.count < 2 {
        let mut buffers = vec![g.x, g.w, bias_buf, g.out, residual_buf];
        buffers.extend(scales);
        be.dispatch(kernel, &params, &buffers, [u32_of(tiles[0], "n")?, u32_of(tiles[1], "m")?, 1]);
        return Ok(());
    }
    // Split-K: each slice's partial sums into scratch (from the pool, back to it when `partials` drops: work
    // recorded later runs after these two dispatches), then the reduce adds them and applies the epilogue.
    let partials = be.alloc_f32(&[slices.count, g.m, g.n], "split-K partial sums")?;
    let split = GemmParams { k_slice: u32_of(slices.len, "k")?, k_slices: slices.count as u32, ..params };
    let mut buffers = vec![g.x, g.w, bias_buf, partials.buffer(), residual_buf];
    buffers.extend(scales);
    let groups = [u32_of(tiles[0], "n")?, u32_of(tiles[1], "m")?, slices.count as u32];
    be.dispatch(kernel, &split, &buffers, groups);
    let reduce = GemmParams { k_slices: slices.count as u32, ..params };
    let buffers = [partials.buffer(), bias_buf, g.out, residual_buf];
    be.dispatch(Kernel::GemmSplitKReduce, &reduce, &buffers, be.groups_1d(g.m * g.n));
    Ok(())
}

/// How a tiled product's K is split: `count` slices of `len` (the last may be shorter); `count` < 2: not split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KSplit {
    pub count: usize,
    pub len: usize,
}

/// Workgroups that keep a large GPU busy: an H200 has 132 SMs, so the 40 tiles of 64² of bigG's text-tower
/// MLP output ([77×5120]·[5120×1280]) leave two thirds of it idle while each tile walks all 5120 of K.
const SPLIT_K_TARGET_GROUPS: usize = 256;
/// Automatic split-K only from this K on: below it a tile's K loop is short and the extra pass (writing and
/// reading S·m·n partial sums, a second dispatch) costs more than the idle SMs.
const SPLIT_K_MIN_K: usize = 1024;
/// K each slice keeps at least when split automatically: 32 K-tiles of 16 per workgroup, so the tile's loads and
/// setup stay amortised and the partial sums (m·n per slice) stay small next to the weights read (n·K).
const SPLIT_K_MIN_SLICE: usize = 512;
/// At most this many slices (the scratch, S·m·n floats, grows with S; 16 already gives 40 tiles 640 groups).
const SPLIT_K_MAX_SLICES: usize = 16;
/// A slice length is a multiple of this: every tiling's K-tile (TK = 16 or 8), so no K-tile straddles two
/// slices (gemm_params.wgsl).
const SPLIT_K_ALIGN: usize = 16;

/// The split-K rule (`GpuOptions::split_k`: `None` automatic, `Some(true)` forced wherever K has two K-tiles,
/// `Some(false)` never). Automatic: only on a GPU adapter (a CPU adapter such as lavapipe or SwiftShader runs
/// workgroups on a few cores, which a few tiles already fill), only for the tiled kernels (the GEMV already
/// splits K inside its workgroup, and has n/8 of them), only when the tiles are fewer than
/// [`SPLIT_K_TARGET_GROUPS`] and K ≥ [`SPLIT_K_MIN_K`]; then S = enough slices to reach the target, as far as
/// each keeps [`SPLIT_K_MIN_SLICE`] of K. Either way at most [`SPLIT_K_MAX_SLICES`], and the scratch
/// (S·m·n f32) within the storage-binding limit.
fn split_k_slices(be: &GpuBackend, mkn: (usize, usize, usize), tile: GemmTile) -> KSplit {
    let binding_limit = be.inner.limits.max_storage_buffer_binding_size as usize;
    split_k_rule(be.inner.split_k, be.inner.cpu_adapter, binding_limit, mkn, tile)
}

/// [`split_k_slices`] given the option, the adapter kind and the binding limit.
fn split_k_rule(
    forced: Option<bool>,
    cpu_adapter: bool,
    binding_limit: usize,
    (m, k, n): (usize, usize, usize),
    tile: GemmTile,
) -> KSplit {
    let none = KSplit { count: 1, len: k };
    if tile.is_gemv() || forced == Some(false) {
        return none;
    }
    let (rows, cols) = tile.size();
    let tiles = m.div_ceil(rows) * n.div_ceil(cols);
    let wanted = SPLIT_K_TARGET_GROUPS.div_ceil(tiles.max(1));
    let count = match forced {
        Some(_) => wanted.max(2).min(k / SPLIT_K_ALIGN),
        None if cpu_adapter || tiles >= SPLIT_K_TARGET_GROUPS || k < SPLIT_K_MIN_K => return none,
        None => wanted.min(k / SPLIT_K_MIN_SLICE),
    };
    let scratch_cap = (binding_limit / (4 * m * n).max(1)).max(1);
    let count = count.min(SPLIT_K_MAX_SLICES).min(scratch_cap);
    if count < 2 {
        return none;
    }
    let len = k.div_ceil(count).next_multiple_of(SPLIT_K_ALIGN);
    KSplit { count: k.div_ceil(len), len }
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 128 << 20;
    fn auto(mkn: (usize, usize, usize)) -> KSplit {
        split_k_rule(None, false, LIMIT, mkn, GemmTile::T64)
    }

    #[test]
    fn split_k_is_chosen_for_few_tiles_and_long_k_on_a_gpu_only() {
        // bigG's text MLP out: 2×20 = 40 tiles → 7 slices (256 groups wanted) of 736 (a multiple of 16).
        assert_eq!(auto((77, 5120, 1280)), KSplit { count: 7, len: 736 });
        // The vision tower's MLP out: 5×26 = 130 tiles → 2 slices of 4096.
        assert_eq!(auto((257, 8192, 1664)), KSplit { count: 2, len: 4096 });
        // 160 tiles want 2 slices and K = 1280 allows 2 of ≥ 512; K < 1024: none.
        assert_eq!(auto((77, 1280, 5120)).count, 2);
        assert_eq!(auto((77, 1000, 1280)).count, 1);
        // Enough tiles already (the UNet's convs), the GEMV, a CPU adapter, or forced off: not split.
        assert_eq!(auto((4096, 2880, 320)).count, 1);
        assert_eq!(split_k_rule(None, false, LIMIT, (8, 5120, 1280), GemmTile::Gemv).count, 1);
        assert_eq!(split_k_rule(None, true, LIMIT, (77, 5120, 1280), GemmTile::T64).count, 1);
        assert_eq!(split_k_rule(Some(false), false, LIMIT, (77, 5120, 1280), GemmTile::T64).count, 1);
    }

    #[test]
    fn forced_split_k_needs_two_k_tiles_and_keeps_its_scratch_within_the_binding_limit() {
        let forced = |mkn, limit| split_k_rule(Some(true), true, limit, mkn, GemmTile::T64);
        // 6 tiles want 43 slices: at most 16, each a multiple of 16 long, the last what is left (1056 − 13·80).
        assert_eq!(forced((77, 1056, 130), LIMIT), KSplit { count: 14, len: 80 });
        assert_eq!(forced((33, 300, 70), LIMIT), KSplit { count: 10, len: 32 });
        assert_eq!(forced((77, 31, 130), LIMIT).count, 1);
        // Scratch S·m·n·4 bytes: 1000×1000 outputs fit 33 slices in 128 MiB, 3 in 12 MB, none in 4 MB.
        assert_eq!(forced((1000, 4096, 1000), LIMIT).count, 2);
        assert_eq!(forced((100, 4096, 100), 120_000).count, 3);
        assert_eq!(forced((100, 4096, 100), 40_000).count, 1);
        for (m, k, n) in [(77, 5120, 1280), (1, 33, 1), (300, 4097, 7)] {
            let s = forced((m, k, n), LIMIT);
            assert!(s.len % SPLIT_K_ALIGN == 0 && (s.count - 1) * s.len < k && s.count * s.len >= k, "{s:?}");
        }
    }
}
