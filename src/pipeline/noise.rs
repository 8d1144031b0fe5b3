//! Seeded ε for the prior, bit-identical on every platform and backend.
//!
//! Generator: SplitMix64 (Steele, Lea & Flood 2014) seeded with the user's seed gives 64-bit words; each
//! pair (u1, u2) of uniforms in (0, 1] — the top 53 bits of a word, plus one, over 2⁵³ — becomes two normals
//! by Box–Muller, r = √(−2 ln u1), z0 = r·cos(2π u2), z1 = r·sin(2π u2), computed in f64 with the `libm`
//! crate (a pure-Rust port of musl, so native and wasm round identically) and rounded to f32.
//! The noise happens on the host, so every backend sees the same ε.

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// `n` standard normal f32 values from `seed`.
pub fn gaussian_noise(seed: u64, n: usize) -> Vec<f32> {
    GaussianStream::new(seed).take(n)
}

/// The same values as [`gaussian_noise`], drawn a part at a time: `take(a)` then `take(b)` gives
/// `gaussian_noise(seed, a + b)` (so a sampler can draw each step's noise when it needs it).
pub struct GaussianStream {
    rng: SplitMix64,
    /// The second value of the last Box–Muller pair, not yet handed out.
    spare: Option<f32>,
}

impl GaussianStream {
    pub fn new(seed: u64) -> Self {
        GaussianStream { rng: SplitMix64(seed), spare: None }
    }

    /// The next `n` values.
    pub fn take(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        if n > 0 {
            out.extend(self.spare.take());
        }
        while out.len() < n {
            let (u1, u2) = (self.rng.uniform(), self.rng.uniform());
            let r = libm::sqrt(-2.0 * libm::log(u1));
            let theta = 2.0 * std::f64::consts::PI * u2;
            out.push((r * libm::cos(theta)) as f32);
            out.push((r * libm::sin(theta)) as f32);
        }
        if out.len() > n {
            self.spare = out.pop();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_drawn_in_parts_is_the_same_as_drawn_at_once() {
        let whole = gaussian_noise(9, 23);
        let mut stream = GaussianStream::new(9);
        let parts: Vec<f32> = [3, 0, 5, 1, 14].iter().flat_map(|&n| stream.take(n)).collect();
        assert_eq!(parts, whole);
    }

    #[test]
    fn same_seed_same_bits_and_different_seeds_differ() {
        let a = gaussian_noise(42, 1280);
        let b = gaussian_noise(42, 1280);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_ne!(a, gaussian_noise(43, 1280));
    }

    #[test]
    fn noise_is_standard_normal() {
        let v = gaussian_noise(7, 100_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn seed_zero_first_values_are_pinned() {
        // Pins the documented generator: a change here changes every seeded result users have saved. The
        // values come from an independent Python implementation of the same recipe (SplitMix64, Box–Muller).
        let v = gaussian_noise(0, 4);
        let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, PINNED_SEED0.to_vec(), "values {v:?}");
    }

    const PINNED_SEED0: [u32; 4] = [0xbee7cfdd, 0x3e54c09f, 0x4029a387, 0xbefb18b3];
}
