//! The CPU's weight matrices in panels: `w [n, k]` stored as `⌈n / 64⌉` panels of 64 rows, each panel
//! column-major (`[k][64]`, contiguous), and `x · wᵀ` computed one panel at a time, by a hand-written kernel
//! where there is one (panel_kernel/: AVX-512, wasm simd128), else by candle's `gemm`.
//!
//! Why not candle's matmul on `w` as stored: gemm's kernels read the weight as 64-row column-major panels
//! and, for a matrix in any other layout, copy each panel into that form on every call — for a bigG MLP
//! weight 26 MB read and written per product, a fifth to a third of its time at 77 rows. gemm has no API
//! for an operand packed once; a panel stored in its layout *is* a plain column-major matrix (row stride 1,
//! column stride 64), which gemm reads as it is. One AVX-512 core, [77×5120]·[5120×1280]: 94 GF/s as stored,
//! 151 as `wᵀ`, 187 in panels (the same values: the kernel and the order of its sums do not change).

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

/// Rows of `w` per panel: the height of gemm's largest f32 micro-kernel (AVX-512: 4 × 16 lanes), so a
/// panel is read by whole micro-kernel tiles on every target (AVX2's 2 × 8 and simd128's tiles divide it).
pub const PANEL_ROWS: usize = 64;

/// `w [n, k]` as panels (see the module's documentation), f32 or still 8-bit; rows past `n` in the last
/// panel are zeros.
#[derive(Debug)]
pub struct PanelMatrix {
    values: PanelValues,
    /// `[n, k]`.
    shape: [usize; 2],
}

#[derive(Debug)]
enum PanelValues {
    F32(Vec<f32>),
    /// A Q8_0 weight re-laid in panel order, as many bytes as its blocks: `quants` as the f32 panels' values
    /// (`[k][64]` per panel), `scales` (f16 bits) one per block of 32 values of a row, `[k / 32][64]` per
    /// panel. A panel's values are then `quants · scales` in one contiguous, vectorised pass — where
    /// dequantising the blocks as the file stores them (32 values along a row) into a panel (along a
    /// column) is a transposition, one strided store per value: it made the bigG text tower's Q8_0 forward
    /// in wasm 0.6–0.7 s (16–19 %) slower than its f32 one; in panel order the two take the same time.
    /// Q4_0 stays in its blocks (unpacked to a byte a value it would lose its halving).
    Q8 {
        quants: Vec<i8>,
        scales: Vec<u16>,
    },
}

impl PanelMatrix {
    /// The panels of `w [n, k]`, row-major.
    pub fn new(w: &[f32], n: usize, k: usize) -> PanelMatrix {
        debug_assert_eq!(w.len(), n * k);
        PanelMatrix { values: PanelValues::F32(to_panels(w, n, k, 0.0)), shape: [n, k] }
    }

    /// The panels of a Q8_0 weight `[n, k]` (`raw`: its rows of ggml blocks, `k % 32 == 0`), kept 8-bit.
    pub fn from_q8_0(raw: &[u8], n: usize, k: usize) -> PanelMatrix {
        use crate::ops::blocks::BLOCK_VALUES;
        let block_bytes = crate::ops::WeightDType::Q8_0.block_bytes();
        let blocks = k / BLOCK_VALUES;
        debug_assert_eq!(raw.len(), n * blocks * block_bytes);
        let mut quants = Vec::with_capacity(n * k);
        let mut scales = Vec::with_capacity(n * blocks);
        for block in raw.chunks_exact(block_bytes) {
            scales.push(u16::from_le_bytes([block[0], block[1]]));
            quants.extend(block[2..].iter().map(|&q| q as i8));
        }
        let values = PanelValues::Q8 { quants: to_panels(&quants, n, k, 0), scales: to_panels(&scales, n, blocks, 0) };
        PanelMatrix { values, shape: [n, k] }
    }

    /// `[n, k]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// `w` as a row-major tensor `[n, k]` (a copy, for the ops that take values).
    pub fn to_tensor(&self) -> Result<Tensor> {
        let [n, k] = self.shape;
        let mut w = vec![0f32; n * k];
        let mut scratch = Vec::new();
        for (p, rows) in w.chunks_mut(PANEL_ROWS * k).enumerate() {
            let at = self.panel(p, &mut scratch);
            // SAFETY: a panel holds PANEL_ROWS · k values (in storage, or in `scratch`, alive here).
            let panel = unsafe { std::slice::from_raw_parts(at.0, PANEL_ROWS * k) };
            for (r, row) in rows.chunks_exact_mut(k).enumerate() {
                for (c, value) in row.iter_mut().enumerate() {
                    *value = panel[c * PANEL_ROWS + r];
                }
            }
        }
        Ok(Tensor::from_vec(w, (n, k), &Device::Cpu)?)
    }

    /// Panel `p`'s f32 values: where they are stored, or made from 8 bits in `scratch`.
    fn panel(&self, p: usize, scratch: &mut Vec<f32>) -> PanelRef {
        let k = self.shape[1];
        let size = PANEL_ROWS * k;
        match &self.values {
            PanelValues::F32(values) => PanelRef(values[p * size..(p + 1) * size].as_ptr()),
            PanelValues::Q8 { quants, scales } => {
                let blocks = k / crate::ops::blocks::BLOCK_VALUES;
                let (quants, scales) = (&quants[p * size..][..size], &scales[p * PANEL_ROWS * blocks..]);
                scratch.clear();
                scratch.reserve(size);
                // One row of the panel (one k, its 64 columns) at a time: 64 bytes times their 64 scales, made
                // f32 once per 32 rows (exactly: f16 → f32 is exact).
                let mut scale = [0f32; PANEL_ROWS];
                for (c, row) in quants.chunks_exact(PANEL_ROWS).enumerate() {
                    if c % crate::ops::blocks::BLOCK_VALUES == 0 {
                        let bits = &scales[c / crate::ops::blocks::BLOCK_VALUES * PANEL_ROWS..][..PANEL_ROWS];
                        for (d, &bits) in scale.iter_mut().zip(bits) {
                            *d = half::f16::from_bits(bits).to_f32();
                        }
                    }
                    scratch.extend(row.iter().zip(&scale).map(|(&q, &d)| f32::from(q) * d));
                }
                PanelRef(scratch.as_ptr())
            }
        }
    }

    /// `x [m, k] · wᵀ` → `[m, n]`, f32, each panel's columns finished by `epilogue`.
    pub fn times_transposed(&self, x: &Tensor, epilogue: Epilogue<'_>) -> Result<Tensor> {
        let [n, k] = self.shape;
        panel_product(x, n, k, &|p, scratch| self.panel(p, scratch), epilogue)
    }

    /// Bytes held (padding included).
    pub fn bytes(&self) -> usize {
        match &self.values {
            PanelValues::F32(values) => 4 * values.len(),
            PanelValues::Q8 { quants, scales } => quants.len() + 2 * scales.len(),
        }
    }
}

/// `w [n, k]` (row-major) as panels of `PANEL_ROWS` rows, each column-major; the last panel padded with `zero`.
fn to_panels<T: Copy>(w: &[T], n: usize, k: usize, zero: T) -> Vec<T> {
    let mut values = vec![zero; n.div_ceil(PANEL_ROWS) * PANEL_ROWS * k];
    for (p, panel) in values.chunks_exact_mut(PANEL_ROWS * k).enumerate() {
        let rows = p * PANEL_ROWS..((p + 1) * PANEL_ROWS).min(n);
        // A column of the panel across its rows at a time: 64 contiguous stores, the 64 source rows
        // stay in cache.
        for (c, column) in panel.chunks_exact_mut(PANEL_ROWS).enumerate() {
            for (r, value) in rows.clone().zip(column) {
                *value = w[r * k + c];
            }
        }
    }
    values
}

/// What is done to a panel's columns of the result right after their sums, while they are still in cache:
/// `+ bias`, then GELU (erf) — the same f32 operations in the same order as the separate passes over the
/// whole result they replace (each of those a read and a write of `[m, n]` and an allocation; the bigG
/// MLP's GELU alone was 3 % of the text tower's forward on one core).
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `[n]`, added to every row.
    pub bias: Option<&'a [f32]>,
    pub gelu_erf: bool,
}

impl Epilogue<'_> {
    pub fn is_nothing(&self) -> bool {
        self.bias.is_none() && !self.gelu_erf
    }

    /// Columns `c0 … c0 + cols` of `y`'s `m` rows (row stride `n`).
    ///
    /// # Safety
    /// Those values lie inside `y`'s buffer and no other task touches them meanwhile.
    #[inline(always)]
    unsafe fn finish(&self, y: OutPtr, (m, n): (usize, usize), c0: usize, cols: usize) {
        for i in 0..m {
            let row = std::slice::from_raw_parts_mut(y.at(i * n + c0), cols);
            if let Some(bias) = self.bias {
                for (v, b) in row.iter_mut().zip(&bias[c0..c0 + cols]) {
                    *v += b;
                }
            }
            if self.gelu_erf {
                for v in row.iter_mut() {
                    *v = super::gelu::gelu_erf_value(*v);
                }
            }
        }
    }

    /// [`Self::finish`] compiled for the hand-written kernel's instruction set — on x86-64 AVX-512's 16
    /// lanes, where the crate's baseline target has 4 (in wasm simd128 is the baseline already): the same
    /// operations, no contraction into FMAs (Rust does not contract), so the same values.
    ///
    /// # Safety
    /// As [`Self::finish`], and `panel_kernel::available()`.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    unsafe fn finish_by_hand(&self, y: OutPtr, shape: (usize, usize), c0: usize, cols: usize) {
        self.finish(y, shape, c0, cols)
    }
}

/// `epilogue` over a whole result `y [m, n]`, row-major: for a product that did not go by panels (candle's
/// integer kernels, a weight kept as values), so that it gets the same one pass — vectorised as wide as the
/// CPU allows — instead of a bias pass and a GELU pass.
pub fn finish_whole(y: &mut [f32], (m, n): (usize, usize), epilogue: Epilogue<'_>) -> Result<()> {
    if y.len() != m * n || epilogue.bias.is_some_and(|b| b.len() != n) {
        return Err(Error::Backend(format!(
            "linear: a bias of {} values for a result of {} values in rows of {n}",
            epilogue.bias.map_or(0, <[f32]>::len),
            y.len()
        )));
    }
    let out = OutPtr(y.as_mut_ptr());
    // SAFETY: all m rows of n columns lie in `y`, borrowed mutably here; finish_by_hand's instructions are
    // there when `available` says so.
    unsafe {
        if super::panel_kernel::available() {
            epilogue.finish_by_hand(out, (m, n), 0, n);
        } else {
            epilogue.finish(out, (m, n), 0, n);
        }
    }
    Ok(())
}

/// `x [m, k] · wᵀ` for a weight `[n, k]` whose panel `p` (`PANEL_ROWS · k` values, see the module's
/// documentation) `panel(p, scratch)` gives, either from storage or made in `scratch` (a buffer of the
/// calling thread, kept between calls), each panel's columns then finished by `epilogue`. Panels run in
/// parallel on rayon's pool natively (each writes its own 64 columns of the result); in wasm one after the
/// other.
pub fn panel_product(
    x: &Tensor,
    n: usize,
    k: usize,
    panel: &(dyn Fn(usize, &mut Vec<f32>) -> PanelRef + Sync),
    epilogue: Epilogue<'_>,
) -> Result<Tensor> {
    let m = x.dims2()?.0;
    if x.dims2()?.1 != k {
        return Err(Error::Backend(format!("linear: input width {} does not match the weight's {k}", x.dims2()?.1)));
    }
    if let Some(bias) = epilogue.bias.filter(|b| b.len() != n) {
        return Err(Error::Backend(format!("linear: a bias of {} values for {n} outputs", bias.len())));
    }
    let y = super::in_place(x, "linear", |x| product_of_values(x, (m, k, n), panel, epilogue))?;
    Ok(Tensor::from_vec(y, (m, n), &Device::Cpu)?)
}

/// [`panel_product`] of `x`'s values (`[m, k]`, row-major): `y [m, n]`, row-major.
fn product_of_values(
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    panel: &(dyn Fn(usize, &mut Vec<f32>) -> PanelRef + Sync),
    epilogue: Epilogue<'_>,
) -> Vec<f32> {
    if k == 0 {
        let mut y = vec![0f32; m * n];
        // SAFETY: all m rows of n columns are inside `y`, which only this call holds.
        unsafe { epilogue.finish(OutPtr(y.as_mut_ptr()), (m, n), 0, n) };
        return y;
    }
    // Not zeroed first: every panel writes all of its columns of every row (gemm without reading them), so
    // a zeroing pass would be a wasted write of the whole result (3 % of the text tower's forward).
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = OutPtr(y.as_mut_ptr());
    let by_hand = super::panel_kernel::available();
    let one = |p: usize| {
        SCRATCH.with(|scratch| {
            let w = panel(p, &mut scratch.borrow_mut());
            let rows = PANEL_ROWS.min(n - p * PANEL_ROWS);
            if by_hand {
                // SAFETY: the kernel's instructions are there (`available`); x holds m·k values, the panel
                // 64·k; this panel's columns of y are written by this task only.
                unsafe {
                    panel_by_hand(x, (m, k, n), w, out, p, rows);
                    if !epilogue.is_nothing() {
                        epilogue.finish_by_hand(out, (m, n), p * PANEL_ROWS, rows);
                    }
                }
                return;
            }
            // SAFETY: `yᵀ`'s rows p·64 … p·64 + rows (row stride 1, column stride n) lie inside `y` and no
            // other panel writes them; the panel (`PANEL_ROWS · k` values: row stride 1, column stride 64)
            // and `xᵀ` (row stride 1, column stride k) are read inside their buffers, which outlive the call.
            unsafe {
                gemm::gemm(
                    rows,
                    m,
                    k,
                    out.at(p * PANEL_ROWS),
                    n as isize,
                    1,
                    false,
                    w.0,
                    PANEL_ROWS as isize,
                    1,
                    x.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                // The columns just written, still in cache.
                if !epilogue.is_nothing() {
                    epilogue.finish(out, (m, n), p * PANEL_ROWS, rows);
                }
            }
        })
    };
    let panels = n.div_ceil(PANEL_ROWS);
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..panels).into_par_iter().for_each(one);
    }
    #[cfg(target_arch = "wasm32")]
    (0..panels).for_each(one);
    // SAFETY: the panels above wrote all m·n values (columns p·64 … p·64 + rows of every row, for every p).
    unsafe { y.set_len(m * n) };
    y
}

/// Panel `p`'s `rows` columns of `y [m, n]` by the hand-written kernel: a whole panel writes its 64 columns
/// of each of y's rows in place (row stride n), a partial one (the last) goes through a buffer of m rows of
/// 64 and only its `rows` columns are copied out.
///
/// # Safety
/// As `panel_kernel::panel_times`; `out` holds `m·n` values whose columns `p·64 …` no other task writes.
unsafe fn panel_by_hand(x: &[f32], (m, k, n): (usize, usize, usize), w: PanelRef, out: OutPtr, p: usize, rows: usize) {
    use super::panel_kernel::panel_times;
    if rows == PANEL_ROWS {
        panel_times(x.as_ptr(), m, k, w.0, out.at(p * PANEL_ROWS), n);
        return;
    }
    let mut part = vec![0f32; m * PANEL_ROWS];
    panel_times(x.as_ptr(), m, k, w.0, part.as_mut_ptr(), PANEL_ROWS);
    for (i, values) in part.chunks_exact(PANEL_ROWS).enumerate() {
        std::ptr::copy_nonoverlapping(values.as_ptr(), out.at(i * n + p * PANEL_ROWS), rows);
    }
}

/// Panel `p` of a block-type weight `[n, k]` (`raw`: its rows of blocks), dequantised into `panel`: the
/// weight's values exist one panel at a time, in the cache, never whole. Block column by block column (a
/// 32-column strip of the panel is 8 KB, so its stores stay in L1 while every row's block lands in it).
pub fn dequantized_panel(
    dtype: crate::ops::WeightDType,
    raw: &[u8],
    [n, k]: [usize; 2],
    p: usize,
    panel: &mut Vec<f32>,
) -> PanelRef {
    use crate::ops::blocks::{dequantize_block, BLOCK_VALUES};
    let (block_bytes, q4) = (dtype.block_bytes(), dtype == crate::ops::WeightDType::Q4_0);
    let row_bytes = k / BLOCK_VALUES * block_bytes;
    let rows = p * PANEL_ROWS..((p + 1) * PANEL_ROWS).min(n);
    panel.clear();
    panel.resize(PANEL_ROWS * k, 0.0);
    let mut values = [0f32; BLOCK_VALUES];
    for (b, strip) in panel.chunks_exact_mut(BLOCK_VALUES * PANEL_ROWS).enumerate() {
        for (i, r) in rows.clone().enumerate() {
            let at = r * row_bytes + b * block_bytes;
            dequantize_block(q4, &raw[at..at + block_bytes], &mut values);
            for (j, &v) in values.iter().enumerate() {
                strip[j * PANEL_ROWS + i] = v;
            }
        }
    }
    PanelRef(panel.as_ptr())
}

/// The first value of a panel (`PANEL_ROWS · k` values) that [`panel_product`] reads.
#[derive(Clone, Copy)]
pub struct PanelRef(*const f32);

thread_local! {
    /// Each thread's panel buffer for [`dequantized_panel`] (kept: a fresh 1 MB buffer per panel would cost
    /// its page faults every time).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The result's base pointer, shared by the panels' tasks (each writes its own columns).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint elements (see `times_transposed`) and the buffer outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: offsets stay inside the result (< n).
        unsafe { self.0.add(offset) }
    }
}
