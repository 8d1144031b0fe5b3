//! `y [m, 64] = x [m, k] · panel` for one panel of a weight (panels.rs: `[k][64]`, contiguous), in wasm with
//! simd128 (the browser build's baseline, `.cargo/config.toml`): `R` rows of `x` against a strip of `4·V`
//! of the panel's columns, `R·V` accumulator vectors.
//!
//! Why by hand: as for AVX-512 (avx512.rs), gemm copies every block of the panel into its own buffer before
//! multiplying it; in wasm that pass is a larger share (no prefetch, a slower memory path through the
//! engine's bounds-checked loads). The tile fits the 16 vector registers V8 and SpiderMonkey allocate on
//! x86-64 (`R·V` accumulators, `V` panel vectors, one broadcast, one product).
//!
//! Numerics: simd128 has no fused multiply-add (relaxed-simd's `relaxed_madd` may or may not fuse, by engine,
//! and so is not used), so each term is rounded as a product and then added, in k order: the same operations
//! as gemm's simd128 kernel, within the (k + 1)·2⁻²⁴·Σ|x·w| bound the tests hold every order to.

use core::arch::wasm32::*;

/// Panel rows (k) per pass of the row groups: a strip of `KC` × 16 columns is 16 KB, in L1 while every
/// group of rows passes over it.
const KC: usize = 256;

/// Rows of `x` per tile and vectors of 4 columns per strip (16 columns: one cache line of a panel row):
/// 2 × 4 accumulators + 4 panel vectors + a broadcast and a product = 14 registers. In V8 (Node 22, one
/// Zen 4 core) 2 × 4 and 4 × 2 ran at 32–33 GF/s, 3 × 4 at 25 (it spills), 6 × 2 at 23; gemm at 25–26.
const ROWS: usize = 2;
const VECTORS: usize = 4;

/// Whether [`panel_times`] can run here: always, simd128 is compiled in.
pub fn available() -> bool {
    true
}

/// `y[i][j] = Σ_k x[i][k] · panel[k][j]` for i < m, j < 64 (the layout of avx512.rs's `panel_times`):
/// K in blocks of `KC`; in each, the panel's strips of 16 columns one after the other, every group of
/// `ROWS` rows of x over a strip while it is in L1, the rows past the last whole group one at a time.
///
/// # Safety
/// `x` must hold `m·k` values, `panel` `64·k`, and `y` rows `0..m` of 64 values at stride `y_stride`, none of
/// which another thread touches meanwhile.
pub unsafe fn panel_times(x: *const f32, m: usize, k: usize, panel: *const f32, y: *mut f32, y_stride: usize) {
    panel_times_with::<ROWS, VECTORS>(x, m, k, panel, y, y_stride)
}

/// [`panel_times`] with tiles of `R` rows × `4·V` columns.
///
/// # Safety
/// As [`panel_times`].
#[inline(always)]
pub unsafe fn panel_times_with<const R: usize, const V: usize>(
    x: *const f32,
    m: usize,
    k: usize,
    panel: *const f32,
    y: *mut f32,
    y_stride: usize,
) {
    let whole = m / R * R;
    let mut k0 = 0;
    while k0 < k {
        let len = KC.min(k - k0);
        let add = k0 > 0;
        for c0 in (0..64).step_by(4 * V) {
            let block = panel.add(k0 * 64 + c0);
            for i0 in (0..whole).step_by(R) {
                tile::<R, V>(x.add(i0 * k + k0), k, block, len, y.add(i0 * y_stride + c0), y_stride, add);
            }
            for i0 in whole..m {
                tile::<1, V>(x.add(i0 * k + k0), k, block, len, y.add(i0 * y_stride + c0), y_stride, add);
            }
        }
        k0 += len;
    }
}

/// Rows `0..R` of `x` (row stride `x_stride`) times `len` rows of a strip of `4·V` panel columns, added to
/// `y` (`add`) or stored.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const V: usize>(
    x: *const f32,
    x_stride: usize,
    block: *const f32,
    len: usize,
    y: *mut f32,
    y_stride: usize,
    add: bool,
) {
    let mut acc = [[f32x4_splat(0.0); V]; R];
    if add {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = v128_load(y.add(r * y_stride + 4 * j) as *const v128);
            }
        }
    }
    for kk in 0..len {
        let w_at = block.add(kk * 64);
        let mut w = [f32x4_splat(0.0); V];
        for (j, v) in w.iter_mut().enumerate() {
            *v = v128_load(w_at.add(4 * j) as *const v128);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let a = v128_load32_splat(x.add(r * x_stride + kk) as *const u32);
            for (v, w) in row.iter_mut().zip(&w) {
                *v = f32x4_add(*v, f32x4_mul(a, *w));
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            v128_store(y.add(r * y_stride + 4 * j) as *mut v128, *v);
        }
    }
}
