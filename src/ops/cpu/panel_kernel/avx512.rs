//! `y [m, 64] = x [m, k] · panel` for one panel of a weight (panels.rs: `[k][64]`, contiguous), on x86-64
//! with AVX-512F: six rows of `x` at a time against the panel's 64 columns, 24 accumulators in registers.
//!
//! Why by hand: see mod.rs (gemm repacks every block of a panel, a pass that computes nothing). Here the
//! panel is read where it lies, block by block (`KC` rows of it, 64 KB, stay in L2 while every group of
//! six rows of `x` passes over them), and the next block is prefetched during the current one. One Zen 4 core, the same panels:
//! [77×1280]·[1280×5120] 100 GF/s, [77×5120]·[5120×1280] 108, [257×1664]·[1664×8192] 105 (gemm in the
//! project's bench: 77–94).
//!
//! Numerics: each output is one f32 sum over k in order, by FMA — an order like any other GEMM's, within
//! the same (k + 1)·2⁻²⁴·Σ|x·w| bound the tests hold every summation order to.

use std::arch::x86_64::*;

/// Panel rows (k) multiplied per pass of the row groups: 256 × 64 f32 = 64 KB, in L2 beside the rows of x.
const KC: usize = 256;
/// Rows of `x` per micro-tile: 6 × 4 accumulators + 4 panel vectors of AVX-512's 32 registers.
const MR: usize = 6;

/// Whether [`panel_times`] can run here (checked once per product; cached by std).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// `y[i][j] = Σ_k x[i][k] · panel[k][j]` for i < m, j < 64: `x` is `[m, k]` (row stride k), `panel` is
/// `[k][64]`, `y` is `m` rows of 64 values with row stride `y_stride` (≥ 64). Overwrites those values.
///
/// # Safety
/// [`available`] must be true; `x` must hold `m·k` values, `panel` `64·k`, and `y` rows `0..m` of 64 values
/// at stride `y_stride`, none of which another thread touches meanwhile.
#[target_feature(enable = "avx512f")]
pub unsafe fn panel_times(x: *const f32, m: usize, k: usize, panel: *const f32, y: *mut f32, y_stride: usize) {
    let groups = m.div_ceil(MR);
    let mut k0 = 0;
    while k0 < k {
        let len = KC.min(k - k0);
        let next = k0 + len;
        for g in 0..groups {
            let i0 = g * MR;
            // The next block's 4·len cache lines, one per k step over the first four groups' passes (a
            // prefetch is a hint: addresses past the panel are never dereferenced).
            let ahead = if next < k && g < 4 { panel.wrapping_add(next * 64 + g * len * 16) } else { std::ptr::null() };
            let (xs, block, ys) = (x.add(i0 * k + k0), panel.add(k0 * 64), y.add(i0 * y_stride));
            let add = k0 > 0;
            match m - i0 {
                1 => tile::<1>(xs, k, block, len, ys, y_stride, add, ahead),
                2 => tile::<2>(xs, k, block, len, ys, y_stride, add, ahead),
                3 => tile::<3>(xs, k, block, len, ys, y_stride, add, ahead),
                4 => tile::<4>(xs, k, block, len, ys, y_stride, add, ahead),
                5 => tile::<5>(xs, k, block, len, ys, y_stride, add, ahead),
                _ => tile::<MR>(xs, k, block, len, ys, y_stride, add, ahead),
            }
        }
        k0 = next;
    }
}

/// Rows `0..R` of `x` (row stride `x_stride`) times `len` rows of the panel, added to `y` (`add`) or
/// stored; one cache line at `ahead` (if not null) prefetched per k step.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    x: *const f32,
    x_stride: usize,
    block: *const f32,
    len: usize,
    y: *mut f32,
    y_stride: usize,
    add: bool,
    ahead: *const f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    if add {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(y.add(r * y_stride + 16 * j));
            }
        }
    }
    for kk in 0..len {
        let w = block.add(kk * 64);
        let w =
            [_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16)), _mm512_loadu_ps(w.add(32)), _mm512_loadu_ps(w.add(48))];
        if !ahead.is_null() {
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(kk * 16) as *const i8);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*x.add(r * x_stride + kk));
            for (v, w) in row.iter_mut().zip(&w) {
                *v = _mm512_fmadd_ps(a, *w, *v);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_storeu_ps(y.add(r * y_stride + 16 * j), *v);
        }
    }
}
