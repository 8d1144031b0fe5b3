//! IDCT (libjpeg's "islow": 13-bit fixed point, 2 extra bits between passes).

use super::Component;

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const F_0_298: i64 = 2446;
const F_0_390: i64 = 3196;
const F_0_541: i64 = 4433;
const F_0_765: i64 = 6270;
const F_0_899: i64 = 7373;
const F_1_175: i64 = 9633;
const F_1_501: i64 = 12299;
const F_1_847: i64 = 15137;
const F_1_961: i64 = 16069;
const F_2_053: i64 = 16819;
const F_2_562: i64 = 20995;
const F_3_072: i64 = 25172;

#[inline]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1i64 << (n - 1))) >> n
}

/// libjpeg's post-IDCT range limit: the output index is taken modulo 1024 (x in [-128, 384) clamps to
/// 0..=255, wilder values wrap the way libjpeg's table does).
fn idct_range_table() -> [u8; 1024] {
    let mut t = [0u8; 1024];
    for (i, v) in t.iter_mut().enumerate() {
        *v = if i < 128 {
            (i + 128) as u8
        } else if i < 512 {
            255
        } else if i < 896 {
            0
        } else {
            (i - 896) as u8
        };
    }
    t
}

/// Even/odd butterfly shared by both passes: returns the 8 outputs before descaling.
#[inline(always)]
fn idct_1d([i0, i1, i2, i3, i4, i5, i6, i7]: [i64; 8]) -> [i64; 8] {
    let z1 = (i2 + i6) * F_0_541;
    let tmp2 = z1 + i6 * -F_1_847;
    let tmp3 = z1 + i2 * F_0_765;
    let tmp0 = (i0 + i4) << CONST_BITS;
    let tmp1 = (i0 - i4) << CONST_BITS;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;

    let (t0, t1, t2, t3) = (i7, i5, i3, i1);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * F_1_175;
    let t0 = t0 * F_0_298;
    let t1 = t1 * F_2_053;
    let t2 = t2 * F_3_072;
    let t3 = t3 * F_1_501;
    let z1 = z1 * -F_0_899;
    let z2 = z2 * -F_2_562;
    let z3 = z3 * -F_1_961 + z5;
    let z4 = z4 * -F_0_390 + z5;
    let t0 = t0 + z1 + z3;
    let t1 = t1 + z2 + z4;
    let t2 = t2 + z2 + z3;
    let t3 = t3 + z1 + z4;
    [tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0, tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3]
}

fn idct_block(coef: &[i16], q: &[i64; 64], range: &[u8; 1024], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    for col in 0..8 {
        let c = |r: usize| coef[r * 8 + col] as i64 * q[r * 8 + col];
        if (1..8).all(|r| coef[r * 8 + col] == 0) {
            let dc = (c(0) << PASS1_BITS) as i32;
            for r in 0..8 {
                ws[r * 8 + col] = dc;
            }
            continue;
        }
        let o = idct_1d([c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)]);
        for r in 0..8 {
            ws[r * 8 + col] = descale(o[r], CONST_BITS - PASS1_BITS) as i32;
        }
    }
    for row in 0..8 {
        let w = &ws[row * 8..row * 8 + 8];
        let Some(dst) = out.get_mut(row * stride..row * stride + 8) else { return };
        if w[1..].iter().all(|&x| x == 0) {
            let v = range[(descale(w[0] as i64, PASS1_BITS + 3) & 1023) as usize];
            dst.fill(v);
            continue;
        }
        let o = idct_1d([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]].map(i64::from));
        for x in 0..8 {
            dst[x] = range[(descale(o[x], CONST_BITS + PASS1_BITS + 3) & 1023) as usize];
        }
    }
}

/// IDCT of every block of a component into a sample plane of `bw*8` × `bh*8`.
pub(super) fn idct_component(c: &Component) -> Vec<u8> {
    let stride = c.bw * 8;
    let mut plane = vec![0u8; stride * c.bh * 8];
    let range = idct_range_table();
    let mut q = [0i64; 64];
    if let Some(qt) = &c.quant {
        for i in 0..64 {
            q[i] = qt[i] as i64;
        }
    }
    for by in 0..c.bh {
        for bx in 0..c.bw {
            let base = (by * c.bw + bx) * 64;
            let Some(coef) = c.coefs.get(base..base + 64) else { continue };
            let off = by * 8 * stride + bx * 8;
            if let Some(out) = plane.get_mut(off..) {
                idct_block(coef, &q, &range, out, stride);
            }
        }
    }
    plane
}
