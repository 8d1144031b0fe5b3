//! The CPU's weight matrices in panels: `w [n, k]` stored as `⌈n / 64⌉` panels of 64 rows, each panel
//! column-major (`[k][64]`, contiguous), and `x · wᵀ` computed one panel at a time by candle's `gemm`.
//!
//! Why not candle's matmul on `w` as stored: gemm's kernels read the weight as 64-row column-major panels
//! and, for a matrix in any other layout, copy each panel into that form on every call — for a bigG MLP
//! weight 26 MB read and written per product, a fifth to a third of its time at 77 rows. gemm has no API
//! for an operand packed once; a panel stored in its layout *is* a plain column-major matrix (row stride 1,
//! column stride 64), which gemm reads as it is. One AVX-512 core, [77×5120]·[5120×1280]: 94 GF/s as stored,
//! 151 as `wᵀ`, 187 in panels (the same values: the kernel and the order of its sums do not change).

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// Rows of `w` per panel: the height of gemm's largest f32 micro-kernel (AVX-512: 4 × 16 lanes), so a
/// panel is read by whole micro-kernel tiles on every target (AVX2's 2 × 8 and simd128's tiles divide it).
pub const PANEL_ROWS: usize = 64;

/// `w [n, k]` as panels (see the module's documentation); rows past `n` in the last panel are zeros.
#[derive(Debug)]
pub struct PanelMatrix {
    values: Vec<f32>,
    /// `[n, k]`.
    shape: [usize; 2],
}

impl PanelMatrix {
    /// The panels of `w [n, k]`, row-major.
    pub fn new(w: &[f32], n: usize, k: usize) -> PanelMatrix {
        debug_assert_eq!(w.len(), n * k);
        let mut values = vec![0f32; n.div_ceil(PANEL_ROWS) * PANEL_ROWS * k];
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
        for (r, row) in w.chunks_exact_mut(k).enumerate() {
            let panel = &self.values[(r / PANEL_ROWS) * PANEL_ROWS * k..];
            for (c, value) in row.iter_mut().enumerate() {
                *value = panel[c * PANEL_ROWS + r % PANEL_ROWS];
            }
        }
        Ok(Tensor::from_vec(w, (n, k), &Device::Cpu)?)
    }

    /// `x [m, k] · wᵀ` → `[m, n]`, f32.
    pub fn times_transposed(&self, x: &Tensor) -> Result<Tensor> {
        let [n, k] = self.shape;
        let stored =
            |p: usize, _: &mut Vec<f32>| PanelRef(self.values[p * PANEL_ROWS * k..(p + 1) * PANEL_ROWS * k].as_ptr());
        panel_product(x, n, k, &stored)
    }

    /// Bytes held (padding included).
    pub fn bytes(&self) -> usize {
        4 * self.values.len()
    }
}

/// `x [m, k] · wᵀ` for a weight `[n, k]` whose panel `p` (`PANEL_ROWS · k` values, see the module's
/// documentation) `panel(p, scratch)` gives, either from storage or made in `scratch` (a buffer of the
/// calling thread, kept between calls). Panels run in parallel on rayon's pool natively (each
/// writes its own 64 columns of the result); in wasm one after the other.
pub fn panel_product(
    x: &Tensor,
    n: usize,
    k: usize,
    panel: &(dyn Fn(usize, &mut Vec<f32>) -> PanelRef + Sync),
) -> Result<Tensor> {
    let m = x.dims2()?.0;
    if x.dims2()?.1 != k {
        return Err(Error::Backend(format!("linear: input width {} does not match the weight's {k}", x.dims2()?.1)));
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Err(Error::Backend("linear: the input is not on the CPU".into()));
    };
    let x = &cpu.as_slice::<f32>()?[start..end];
    if k == 0 {
        return Ok(Tensor::zeros((m, n), DType::F32, &Device::Cpu)?);
    }
    // Not zeroed first: every panel writes all of its columns of every row (gemm without reading them), so
    // a zeroing pass would be a wasted write of the whole result (3 % of the text tower's forward).
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = OutPtr(y.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let by_hand = super::panel_kernel::available();
    let one = |p: usize| {
        SCRATCH.with(|scratch| {
            let w = panel(p, &mut scratch.borrow_mut());
            let rows = PANEL_ROWS.min(n - p * PANEL_ROWS);
            #[cfg(target_arch = "x86_64")]
            if by_hand {
                // SAFETY: AVX-512F is there (`available`); x holds m·k values, the panel 64·k; this panel's
                // columns of y are written by this task only.
                unsafe { panel_by_hand(x, (m, k, n), w, out, p, rows) };
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
    drop(storage);
    // SAFETY: the panels above wrote all m·n values (columns p·64 … p·64 + rows of every row, for every p).
    unsafe { y.set_len(m * n) };
    Ok(Tensor::from_vec(y, (m, n), &Device::Cpu)?)
}

/// Panel `p`'s `rows` columns of `y [m, n]` by the AVX-512 kernel: a whole panel writes its 64 columns of each
/// of y's rows in place (row stride n), a partial one (the last) goes through a buffer of m rows of 64 and only
/// its `rows` columns are copied out.
///
/// # Safety
/// As `panel_kernel::panel_times`; `out` holds `m·n` values whose columns `p·64 …` no other task writes.
#[cfg(target_arch = "x86_64")]
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
