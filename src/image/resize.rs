//! Pillow-exact bicubic resize of 8-bit RGB images.
//!
//! Hand-written on purpose: the `image` crate's (and other crates') bicubic filters do not match
//! Pillow's 8-bit fixed-point `ImagingResample`, and CLIP preprocessing parity with the reference
//! Python pipeline (`Image.resize(size, Image.BICUBIC)`) needs identical bytes. This is a port of
//! Pillow's `libImaging/Resample.c` (`precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResampleHorizontal_8bpc`, `ImagingResampleVertical_8bpc`, `ImagingResampleInner`) as of
//! Pillow 13.0, with the default box `(0, 0, width, height)` and no `reducing_gap`.
//!
//! Coefficients are computed in `f64` exactly as Pillow does on x86-64 (Rust never fuses a
//! multiply-add; a Pillow built with FMA contraction, e.g. by GCC on aarch64, may differ by one
//! in rare pixels).

use image::RgbImage;

use crate::error::{Error, Result};

/// Pillow: `#define PRECISION_BITS (32 - 8 - 2)`.
const PRECISION_BITS: u32 = 22;
/// Largest accepted target side, in pixels.
pub const MAX_TARGET_SIDE: u32 = 16384;
/// Largest accepted target (and intermediate) image, in pixels (64 Mpixel, 192 MiB of RGB).
pub const MAX_TARGET_PIXELS: u64 = 64 * 1024 * 1024;

/// Keys cubic convolution with a = -0.5 (Pillow's `bicubic_filter`), support 2.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}
const BICUBIC_SUPPORT: f64 = 2.0;

/// Fixed-point filter taps for one axis: output `i` reads `len[i]` input samples from `start[i]`
/// with weights `weights[i * ksize..][..len[i]]`.
struct Taps {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` for the box `(0, in_size)` followed by `normalize_coeffs_8bpc`.
fn precompute_taps(in_size: u32, out_size: u32) -> Taps {
    // Pillow passes the box as C floats; integer sizes up to 2^24 are exact in f32.
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    // Antialias: when downscaling, the filter is stretched by the scale factor.
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let out = out_size as usize;

    let mut taps =
        Taps { ksize, start: Vec::with_capacity(out), len: Vec::with_capacity(out), weights: vec![0; out * ksize] };
    let mut k = vec![0.0f64; ksize];
    for (xx, row) in taps.weights.chunks_exact_mut(ksize).enumerate() {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C `(int)` casts truncate toward zero, as Rust's `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let mut ww = 0.0;
        for (x, w) in k.iter_mut().enumerate().take(n) {
            *w = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            ww += *w;
        }
        for (dst, &w) in row.iter_mut().zip(&k[..n]) {
            let w = if ww != 0.0 { w / ww } else { w };
            // normalize_coeffs_8bpc: round half away from zero, then truncate.
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            *dst = if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
        }
        taps.start.push(xmin as usize);
        taps.len.push(n);
    }
    taps
}

/// Pillow's `clip8`: drop the fraction bits and clamp to 0..=255.
#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

// The accumulators cannot overflow i32 (as in Pillow): the weights of one output sum to 2^22 and
// the positive ones to less than 1.2 * 2^22, so |sum| < 255 * 1.2 * 2^22 + 2^21 < 2^31.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over input rows `first_row..first_row + rows` (RGB, `in_w` pixels per row).
fn resample_horizontal(src: &[u8], in_w: usize, first_row: usize, rows: usize, taps: &Taps) -> Vec<u8> {
    let out_w = taps.start.len();
    let mut out = Vec::with_capacity(out_w * rows * 3);
    for in_row in src.chunks_exact(in_w * 3).skip(first_row).take(rows) {
        for ((&start, &len), k) in taps.start.iter().zip(&taps.len).zip(taps.weights.chunks_exact(taps.ksize)) {
            let mut ss = [HALF; 3];
            for (px, &w) in in_row[start * 3..(start + len) * 3].chunks_exact(3).zip(&k[..len]) {
                ss[0] += i32::from(px[0]) * w;
                ss[1] += i32::from(px[1]) * w;
                ss[2] += i32::from(px[2]) * w;
            }
            out.extend(ss.map(clip8));
        }
    }
    out
}

/// Vertical pass: every output row is a weighted sum of `len` consecutive input rows.
fn resample_vertical(src: &[u8], width: usize, taps: &Taps) -> Vec<u8> {
    let stride = width * 3;
    let mut out = Vec::with_capacity(stride * taps.start.len());
    let mut acc = vec![0i32; stride];
    for ((&start, &len), k) in taps.start.iter().zip(&taps.len).zip(taps.weights.chunks_exact(taps.ksize)) {
        acc.fill(HALF);
        // Integer sums are order-independent, so accumulating row by row gives Pillow's result.
        for (in_row, &w) in src[start * stride..(start + len) * stride].chunks_exact(stride).zip(&k[..len]) {
            for (a, &v) in acc.iter_mut().zip(in_row) {
                *a += i32::from(v) * w;
            }
        }
        out.extend(acc.iter().map(|&v| clip8(v)));
    }
    out
}

fn check_target(what: &str, width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Image(format!(
            "cannot resize to {width}×{height}: {what} width and height must be at least 1"
        )));
    }
    if width > MAX_TARGET_SIDE || height > MAX_TARGET_SIDE || u64::from(width) * u64::from(height) > MAX_TARGET_PIXELS {
        return Err(Error::Image(format!(
            "cannot resize to {width}×{height}: {what} is more than the {MAX_TARGET_SIDE}×{MAX_TARGET_SIDE} / 64 Mpixel limit"
        )));
    }
    Ok(())
}

/// Resizes to `width`×`height` exactly like Pillow's `img.resize((width, height), Image.BICUBIC)`
/// (Pillow 13) on an RGB image: antialiased when downscaling, 8-bit fixed point, two separable passes.
pub fn resize_bicubic(src: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    let (in_w, in_h) = src.dimensions();
    if in_w == 0 || in_h == 0 {
        return Err(Error::Image(format!("cannot resize an empty {in_w}×{in_h} image")));
    }
    check_target("the target", width, height)?;
    // Pillow's resize returns a copy when the size does not change.
    if (in_w, in_h) == (width, height) {
        return Ok(src.clone());
    }
    let need_horizontal = width != in_w;
    let need_vertical = height != in_h;
    let taps_h = precompute_taps(in_w, width);
    let mut taps_v = precompute_taps(in_h, height);
    let raw = src.as_raw();
    let (in_w, in_h) = (in_w as usize, in_h as usize);

    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
    // pixels as the width does (Pillow <= 12 always went horizontal first; the results differ by
    // one level in some pixels, and CLIP's shortest-edge resize only hits this for images more
    // than twice as tall as wide).
    let dy = i64::from(src.height()) - i64::from(height);
    let dx = i64::from(src.width()) - i64::from(width);
    let horizontal_first = !(dy > 0 && dy > dx * 2);

    let pixels = if horizontal_first {
        let mut buf = None;
        if need_horizontal {
            // Only the input rows that the vertical pass reads are resampled horizontally.
            let first = taps_v.start.first().copied().unwrap_or(0);
            let last = match (taps_v.start.last(), taps_v.len.last()) {
                (Some(&s), Some(&l)) => s + l,
                _ => in_h,
            };
            let rows = last.saturating_sub(first);
            check_target("the intermediate image", width, rows as u32)?;
            for s in &mut taps_v.start {
                *s -= first;
            }
            buf = Some(resample_horizontal(raw, in_w, first, rows, &taps_h));
        }
        match (buf, need_vertical) {
            (Some(b), true) => resample_vertical(&b, width as usize, &taps_v),
            (None, true) => resample_vertical(raw, in_w, &taps_v),
            (Some(b), false) => b,
            (None, false) => raw.clone(),
        }
    } else {
        // Here the height shrinks, so the vertical pass always runs.
        check_target("the intermediate image", src.width(), height)?;
        let buf = resample_vertical(raw, in_w, &taps_v);
        if need_horizontal {
            resample_horizontal(&buf, in_w, 0, height as usize, &taps_h)
        } else {
            buf
        }
    };
    RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
        Error::Image(format!("internal error: resize to {width}×{height} produced a buffer of the wrong size"))
    })
}
