//! Row-wise ops in one pass per row: layer norm and the attention's softmax.
//!
//! Why not candle's ops: written with them, a layer norm is nine ops over the whole tensor (mean, subtract,
//! square, mean, add, sqrt, divide, multiply, add), each a pass, an allocation and its page faults, and the
//! softmax five, with a scalar libm `expf` per score; here each row is read once into cache and finished
//! there, in loops the compiler vectorises. The arithmetic is the same (f32, the same divisions); only the
//! order of the row sums differs (16 running sums, added at the end), within the usual k·2⁻²⁴·Σ|x| of any order.

use super::gelu::exp_nonpositive;

/// `values` folded by `step` into sixteen running lanes (one per lane of the widest vector), the lanes then
/// joined by `join` and the remainder's fold last — a loop the compiler vectorises, where a single running
/// value must stay scalar to keep its order.
#[inline(always)]
fn fold_lanes(values: &[f32], init: f32, step: impl Fn(f32, f32) -> f32, join: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 16];
    let chunks = values.chunks_exact(16);
    let rest = chunks.remainder().iter().fold(init, |a, &v| step(a, v));
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = step(*lane, v);
        }
    }
    join(lanes.iter().fold(init, |a, &l| join(a, l)), rest)
}

/// Σ values in f32, by [`fold_lanes`].
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    fold_lanes(values, 0.0, |a, v| a + v, |a, b| a + b)
}

/// `(x − mean) / √(var + eps) · gamma + beta` over each row of `x` (`k` values each) into `out`, with mean
/// and the (biased) variance of the row, as PyTorch's `layer_norm`.
pub fn layer_norm(x: &[f32], k: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let row = |(x, out): (&[f32], &mut [f32])| {
        let mean = sum(x) / k as f32;
        for (o, v) in out.iter_mut().zip(x) {
            *o = v - mean;
        }
        let var = fold_lanes(out, 0.0, |a, c| a + c * c, |a, b| a + b) / k as f32;
        let scale = (var + eps).sqrt();
        for ((o, g), b) in out.iter_mut().zip(gamma).zip(beta) {
            *o = *o / scale * g + b;
        }
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        x.par_chunks_exact(k).zip(out.par_chunks_exact_mut(k)).with_min_len(16).for_each(row);
    }
    #[cfg(target_arch = "wasm32")]
    x.chunks_exact(k).zip(out.chunks_exact_mut(k)).for_each(row);
}

/// Each row of `scores` (`s` values; `rows` of them, cycling through the `bias` rows if given, `[rows_bias, s]`)
/// scaled by `scale`, `bias` added, and turned into its softmax in place: `e^(v − max) / Σ e^(v − max)`.
pub fn scaled_softmax(scores: &mut [f32], s: usize, scale: f32, bias: Option<&[f32]>) {
    let bias_rows = bias.map_or(1, |b| b.len() / s);
    let row = |(i, row): (usize, &mut [f32])| {
        for v in row.iter_mut() {
            *v *= scale;
        }
        if let Some(bias) = bias {
            let b = &bias[(i % bias_rows) * s..][..s];
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
        let max = fold_lanes(row, f32::NEG_INFINITY, f32::max, f32::max);
        for v in row.iter_mut() {
            *v = exp_nonpositive(*v - max);
        }
        let total = sum(row);
        for v in row.iter_mut() {
            *v /= total;
        }
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        scores.par_chunks_exact_mut(s).enumerate().with_min_len(16).for_each(row);
    }
    #[cfg(target_arch = "wasm32")]
    scores.chunks_exact_mut(s).enumerate().for_each(row);
}

#[cfg(test)]
mod tests {
    use super::{layer_norm, scaled_softmax};

    /// Against f64 over rows of mixed sizes (a remainder past the 16 lanes included). Bound: each output is
    /// a handful of f32 roundings of values of size |x − mean|/σ·|γ| + |β|, plus the row sums' k·2⁻²⁴·Σ|·|
    /// carried through the mean and the variance; 4·(k + 8)·2⁻²⁴ relative to that size covers both with room
    /// to spare, while a wrong mean or variance (a missing term, a wrong count) is off by orders more.
    #[test]
    fn layer_norm_in_one_pass_matches_the_exact_norm_of_each_row() {
        for k in [1usize, 7, 16, 33, 1280] {
            let rows = 5;
            let x: Vec<f32> = (0..rows * k).map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 4.0) * 1.5).collect();
            let gamma: Vec<f32> = (0..k).map(|j| 0.5 + (j % 5) as f32 * 0.25).collect();
            let beta: Vec<f32> = (0..k).map(|j| (j % 3) as f32 - 1.0).collect();
            let mut out = vec![0f32; rows * k];
            layer_norm(&x, k, &gamma, &beta, 1e-5, &mut out);
            for (r, (xr, or)) in x.chunks(k).zip(out.chunks(k)).enumerate() {
                let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / k as f64;
                let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / k as f64;
                for j in 0..k {
                    let z = (xr[j] as f64 - mean) / (var + 1e-5).sqrt();
                    let exact = z * gamma[j] as f64 + beta[j] as f64;
                    let size = z.abs() * gamma[j] as f64 + (beta[j] as f64).abs() + 1.0;
                    let bound = 4.0 * (k as f64 + 8.0) * 2f64.powi(-24) * size;
                    let err = (or[j] as f64 - exact).abs();
                    assert!(err <= bound, "k = {k}, row {r}, column {j}: {} vs {exact} (bound {bound:e})", or[j]);
                }
            }
        }
    }

    /// Against f64: scaled scores plus a bias that cycles over the rows, including a −∞ (masked) entry. The
    /// exponential is within a few f32 roundings (its polynomial's remainder is below 2⁻²⁴), the sum adds
    /// s·2⁻²⁴ relative; a probability is off by at most (s + 16)·2⁻²⁴ of itself plus that of the sum.
    #[test]
    fn scaled_softmax_with_a_bias_matches_the_exact_softmax_of_each_row() {
        let (s, rows) = (77, 6);
        let raw: Vec<f32> = (0..rows * s).map(|i| ((i * 104729 % 997) as f32 / 50.0) - 10.0).collect();
        let mut bias: Vec<f32> = (0..2 * s).map(|i| (i % 11) as f32 * 0.3).collect();
        bias[5] = f32::NEG_INFINITY;
        let mut p = raw.clone();
        scaled_softmax(&mut p, s, 0.125, Some(&bias));
        for (i, (r, p)) in raw.chunks(s).zip(p.chunks(s)).enumerate() {
            let b = &bias[(i % 2) * s..][..s];
            let v: Vec<f64> = r.iter().zip(b).map(|(&r, &b)| (r * 0.125) as f64 + b as f64).collect();
            let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = v.iter().map(|v| (v - max).exp()).sum();
            for j in 0..s {
                let exact = (v[j] - max).exp() / total;
                let bound = 2.0 * (s as f64 + 16.0) * 2f64.powi(-24) * exact + f64::MIN_POSITIVE;
                assert!((p[j] as f64 - exact).abs() <= bound, "row {i}, key {j}: {} vs {exact}", p[j]);
            }
        }
    }
}
