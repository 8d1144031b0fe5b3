//! GELU with erf, `0.5·x·(1 + erf(x/√2))`, in a form the compiler vectorises (applied over a result by
//! panels.rs's `Epilogue`).
//!
//! Why not candle's `gelu_erf`: it calls a scalar erf per element (libm's), 5 % of the bigG text tower's
//! forward on one core. Here erf is Abramowitz & Stegun's formula 7.1.26 — the approximation PyTorch's
//! vectorised CPU erf evaluates — `erf(z) = 1 − t·(a₁ + t·(a₂ + t·(a₃ + t·(a₄ + t·a₅))))·e^(−z²)`, `t = 1/(1 + p·z)`
//! for z ≥ 0, odd in z, within 1.5·10⁻⁷ of erf everywhere (A&S's stated bound); e^(−z²) by range reduction
//! to [−ln2/2, ln2/2] and a degree-7 Taylor polynomial (its remainder ≤ 0.35⁸/8! ≈ 5·10⁻⁹, below f32's
//! rounding). So |GELU error| ≤ 0.5·|x|·(1.5·10⁻⁷ + the f32 roundings of 1 + erf) plus two roundings of the
//! result (the test derives the count).

const P: f32 = 0.327_591_1;
const A1: f32 = 0.254_829_6;
const A2: f32 = -0.284_496_72;
const A3: f32 = 1.421_413_8;
const A4: f32 = -1.453_152_1;
const A5: f32 = 1.061_405_4;

/// `e^y` for y ≤ 0 (−z² here, a score minus its row's maximum in the softmax): 2ⁿ·e^r with n = y·log₂e
/// rounded and r = y − n·ln2 (ln2 in two parts, so r is exact to f32), e^r by its Taylor polynomial; below
/// −87 (e^y < 2⁻¹²⁵, past f32's normal range) the result is 0 (−∞, a masked score, included), computed
/// from y clamped there so that 2ⁿ stays a normal number.
#[inline(always)]
pub(super) fn exp_nonpositive(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let underflows = y < -87.0;
    let y = y.max(-87.0);
    // n = y·log₂e rounded to the nearest integer by adding and taking away 1.5·2²³ (f32 keeps no fraction
    // at that size): plain adds, where `round`/`floor` would be a libm call on baseline x86-64 (no SSE4.1)
    // and stop the loop vectorising.
    const ROUND: f32 = 12_582_912.0;
    let n = (y * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let e = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflows {
        0.0
    } else {
        e
    }
}

/// GELU (erf) of one value; see the module's documentation.
#[inline(always)]
pub fn gelu_erf_value(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + P * a);
    let erf_abs = 1.0 - t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5)))) * exp_nonpositive(-(a * a));
    0.5 * x * (1.0 + erf_abs.copysign(z))
}

#[cfg(test)]
mod tests {
    use super::gelu_erf_value;

    /// Against GELU in f64 (candle's f64 erf) over −12 … 12 in steps of 1/1024, and a few extremes. The bound:
    /// 1 + erf is off by A&S 7.1.26's 1.5·10⁻⁷ plus the f32 roundings of its evaluation — every intermediate
    /// of `1 − t·(A1 + t·(…))·e` is at most ~1.5 in size and each later factor (t, e) at most 1, so its ~10
    /// operations add ≤ 10·2⁻²⁴, t's 3 and e^(−z²)'s ≤ 4 relative roundings ≤ 7·2⁻²⁴, the subtraction and
    /// 1 + erf (up to 2 in size) ≤ 3·2⁻²⁴: 20·2⁻²⁴ in all, to first order — times 0.5·|x|, plus the two
    /// roundings of 0.5·x·(…) relative to the result.
    #[test]
    fn gelu_with_the_vectorised_erf_stays_within_the_approximations_bound_of_the_exact_value() {
        let mut worst = 0f64;
        let xs = (-12 * 1024..=12 * 1024).map(|i| i as f32 / 1024.0).chain([1e-30, -1e-30, 1e-3, -80.0, 80.0, -1e4]);
        for x in xs {
            let got = gelu_erf_value(x) as f64;
            let xd = x as f64;
            let exact = 0.5 * xd * (1.0 + candle_core::cpu::erf::erf_f64(xd * std::f64::consts::FRAC_1_SQRT_2));
            let ulp = 2f64.powi(-24);
            let bound = 0.5 * xd.abs() * (1.5e-7 + 20.0 * ulp) + 2.0 * ulp * exact.abs();
            let err = (got - exact).abs();
            assert!(err <= bound, "x = {x}: {got} vs exact {exact} (error {err:e}, bound {bound:e})");
            worst = worst.max(err / bound.max(f64::MIN_POSITIVE));
        }
        eprintln!("gelu: worst error / bound = {worst:.3}");
    }
}
