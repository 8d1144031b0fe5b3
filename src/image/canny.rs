//! OpenCV-exact grayscale decoding and Canny edge detection.
//!
//! λ-ECLIPSE's edge control must see the same edge map the Python pipeline gets from
//! `cv2.Canny(cv2.imread(path, cv2.IMREAD_GRAYSCALE), 100, 200)`.  This is hand-written because
//! no crate reproduces OpenCV's Canny bit-exactly (e.g. `imageproc::edges::canny` blurs first and
//! uses a different non-maximum suppression), and the gray image must also match `imread`'s
//! per-codec gray conversion (libpng's own fixed-point RGB→gray for PNG, not `cvtColor`'s).
//!
//! What is reproduced:
//! * PNG (libpng 1.6 as called by OpenCV's decoder): 16-bit samples are reduced by dropping the low
//!   byte, alpha / tRNS is dropped (never composited), palettes are expanded, 1/2/4-bit gray is
//!   scaled to 8 bits, and colour is converted by `png_set_rgb_to_gray(1, 0.299, 0.587)`:
//!   coefficients 9797/19234/3737 (sum 32768); 8-bit: `(r*9797 + g*19234 + b*3737) >> 15`
//!   (truncated); 16-bit: `(… + 16384) >> 15` then the high byte.  If the file declares a
//!   significant gamma (gAMA, or sRGB which means 1/2.2), libpng does the weighting in linear light
//!   through its gamma tables; that path is reproduced too.
//! * BMP: imgcodecs' `icvCvt_BGR2Gray`, `(r*4899 + g*9617 + b*1868 + 8192) >> 14`.
//! * GIF, WebP: OpenCV 5 `cvtColor(BGR2GRAY)`, `(r*9798 + g*19235 + b*3735 + 16384) >> 15`.
//! * JPEG: libjpeg hands OpenCV the decoded Y plane; `super::jpeg::decode_jpeg_luma` computes exactly
//!   that. Variants it does not handle fall back to the `image` crate's decoder (zune-jpeg), whose
//!   RGB is rebuilt into luma with the 15-bit weights: close, not exact.
//!   Lossy WebP likewise differs from libwebp on a few pixels (chroma upsampling).
//! * Canny: 3×3 Sobel (BORDER_REPLICATE), L1 magnitude, OpenCV's fixed-point sector test and its
//!   asymmetric `>` / `>=` non-maximum suppression, `cvFloor`ed thresholds (swapped when
//!   low > high), 8-connected hysteresis, output 0/255.

use super::decode::{open_checked, sniff_format};
use super::limits::DecodeLimits;
use crate::error::{Error, Result};
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, RgbImage};
use std::io::Cursor;

/// Memory a Canny run holds per pixel at its peak: the gray input (1), Sobel dx and dy (2 + 2), the
/// magnitude (4), the map (1), the edge stack (up to one 8-byte index per pixel) and the output (1). Decoding
/// the gray image holds less (a ≤ 6-byte RGB copy and the gray result besides the decoder's buffer). The
/// budget check counts this on top of the decoder's own bytes per pixel — an upper bound, as the decoded
/// image is freed before Canny runs — so a gray image is only decoded when Canny can afford it (see
/// [`grayscale_for_canny`]).
pub const CANNY_BYTES_PER_PIXEL: u64 = 19;

/// Decode file bytes (PNG, JPEG, WebP, BMP, GIF) into exactly the gray image that
/// `cv2.imread(path, cv2.IMREAD_GRAYSCALE)` returns (OpenCV 4.x/5.x with libpng 1.6), within the default
/// [`DecodeLimits`] for a Canny run on it (see [`grayscale_for_canny`]).
pub fn grayscale_like_opencv(bytes: &[u8]) -> Result<GrayImage> {
    grayscale_for_canny(bytes, &DecodeLimits::default())
}

/// [`grayscale_like_opencv`] for an image Canny will run on: the size in the file's header is checked against
/// `limits` with Canny's working memory ([`CANNY_BYTES_PER_PIXEL`]) before anything is decoded.
pub fn grayscale_for_canny(bytes: &[u8], limits: &DecodeLimits) -> Result<GrayImage> {
    let format = sniff_format(bytes)?;
    if format == ImageFormat::Jpeg {
        if let Some(luma) = super::jpeg::decode_jpeg_luma(bytes, limits, CANNY_BYTES_PER_PIXEL)? {
            let orientation =
                image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes)).ok().and_then(|mut d| d.orientation().ok());
            let mut gray = DynamicImage::ImageLuma8(luma);
            if let Some(o) = orientation {
                gray.apply_orientation(o);
            }
            return Ok(gray.into_luma8());
        }
    }
    // The decoder's buffer plus Canny's peak (see CANNY_BYTES_PER_PIXEL).
    let decoder = open_checked(format, bytes, limits, CANNY_BYTES_PER_PIXEL)?;
    let (img, orientation) = decode(decoder, format)?;
    let gray = match format {
        ImageFormat::Png => png_gray(&img, &png_color_info(bytes)),
        ImageFormat::Bmp => cvt_color_gray(&img, gray14),
        // libjpeg hands OpenCV the decoded Y plane; rebuilding it from the image crate's RGB
        // with the 15-bit luma weights is the closest we get (not exact, see module docs).
        _ => cvt_color_gray(&img, gray15),
    };
    drop(img);
    let mut gray = DynamicImage::ImageLuma8(gray);
    // imread applies the EXIF orientation unless IMREAD_IGNORE_ORIENTATION is given.
    if let Some(o) = orientation {
        gray.apply_orientation(o);
    }
    Ok(gray.into_luma8())
}

fn decode(
    mut decoder: Box<dyn ImageDecoder + '_>,
    format: ImageFormat,
) -> Result<(DynamicImage, Option<image::metadata::Orientation>)> {
    let orientation = decoder.orientation().ok();
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Image(format!("cannot decode {format:?} image: {e}")))?;
    Ok((img, orientation))
}

/// imgcodecs' own `icvCvt_BGR2Gray_8u_*` (used by the BMP decoder): 14 fractional bits.
#[inline]
fn gray14(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 4899 + u32::from(g) * 9617 + u32::from(b) * 1868 + 8192) >> 14) as u8
}

/// OpenCV 5 `cvtColor(COLOR_BGR2GRAY)` on 8-bit data (used by the GIF and WebP decoders):
/// 15 fractional bits, R 9798 / G 19235 / B 3735.
#[inline]
fn gray15(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 9798 + u32::from(g) * 19235 + u32::from(b) * 3735 + 16384) >> 15) as u8
}

fn cvt_color_gray(img: &DynamicImage, to_gray: fn(u8, u8, u8) -> u8) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(g) => g.clone(),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            let l = img.to_luma16();
            GrayImage::from_fn(l.width(), l.height(), |x, y| image::Luma([(l.get_pixel(x, y)[0] >> 8) as u8]))
        }
        _ => {
            let rgb = img.to_rgb8();
            GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let p = rgb.get_pixel(x, y);
                image::Luma([to_gray(p[0], p[1], p[2])])
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PNG: libpng's rgb_to_gray as OpenCV requests it.

const PNG_FP_1: i64 = 100_000;
const GAMMA_THRESHOLD: i64 = 5_000; // PNG_GAMMA_THRESHOLD_FIXED
const RC: u32 = 9797; // (29900 * 32768) / 100000, png_set_rgb_to_gray_fixed
const GC: u32 = 19234; // (58700 * 32768) / 100000
const BC: u32 = 32768 - RC - GC;

/// Colour-space chunks libpng looks at before the image data.
#[derive(Default, Debug)]
struct PngColorInfo {
    /// `png_struct::chunk_gamma` (PNGv3 precedence sRGB > gAMA); 0 when unset.
    chunk_gamma: i64,
    /// Largest significant-bit count over R, G, B from sBIT (0 when absent).
    sig_bit: u8,
}

fn png_color_info(bytes: &[u8]) -> PngColorInfo {
    let mut info = PngColorInfo::default();
    let (mut seen_gama, mut seen_srgb, mut seen_cicp, mut seen_sbit) = (false, false, false, false);
    let mut color_type = 0u8;
    let mut pos = 8usize;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data_start = pos + 8;
        let Some(data_end) = data_start.checked_add(len) else { break };
        if data_end > bytes.len() {
            break;
        }
        let data = &bytes[data_start..data_end];
        match kind {
            b"IHDR" if data.len() == 13 => color_type = data[9],
            b"PLTE" | b"IDAT" => break,
            b"gAMA" if !seen_gama && !seen_srgb => {
                seen_gama = true;
                if data.len() == 4 {
                    let g = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                    if g <= i32::MAX as u32 && info.chunk_gamma == 0 {
                        info.chunk_gamma = i64::from(g);
                    }
                }
            }
            b"sRGB" if !seen_srgb => {
                seen_srgb = true;
                if data.len() == 1 && data[0] <= 3 && (!seen_cicp || info.chunk_gamma == 0) {
                    info.chunk_gamma = 45_455; // PNG_GAMMA_sRGB_INVERSE
                }
            }
            b"cICP" => seen_cicp = true,
            b"sBIT" if !seen_sbit => {
                seen_sbit = true;
                if (color_type & 2) != 0 && data.len() >= 3 {
                    info.sig_bit = data[0].max(data[1]).max(data[2]);
                }
            }
            _ => {}
        }
        pos = data_end + 4;
    }
    info
}

fn png_reciprocal(a: i64) -> i64 {
    if a == 0 {
        return 0;
    }
    let r = (1e10 / a as f64 + 0.5).floor();
    if (-2147483648.0..=2147483647.0).contains(&r) {
        r as i64
    } else {
        0
    }
}

fn png_reciprocal2(a: i64, b: i64) -> i64 {
    if a != 0 && b != 0 {
        let r = ((1e15 / a as f64) / b as f64 + 0.5).floor();
        if (-2147483648.0..=2147483647.0).contains(&r) {
            return r as i64;
        }
    }
    PNG_FP_1
}

fn png_gamma_significant(g: i64) -> bool {
    !(PNG_FP_1 - GAMMA_THRESHOLD..=PNG_FP_1 + GAMMA_THRESHOLD).contains(&g)
}

fn png_gamma_8bit_correct(value: u32, gamma: i64) -> u8 {
    if value > 0 && value < 255 {
        let r = (255.0 * (f64::from(value) / 255.0).powf(gamma as f64 * 0.00001) + 0.5).floor();
        return r as u8;
    }
    value as u8
}

fn png_gamma_16bit_correct(value: u32, gamma: i64) -> u16 {
    if value > 0 && value < 65535 {
        let r = (65535.0 * (f64::from(value) / 65535.0).powf(gamma as f64 * 0.00001) + 0.5).floor();
        return r as u16;
    }
    value as u16
}

fn build_8bit_table(gamma: i64) -> Vec<u8> {
    (0..256u32).map(|i| if png_gamma_significant(gamma) { png_gamma_8bit_correct(i, gamma) } else { i as u8 }).collect()
}

/// libpng's segmented 16-bit table, flattened: entry `[(v & 0xff) >> shift][v >> 8]`.
struct Table16 {
    shift: u32,
    data: Vec<u16>,
}

impl Table16 {
    fn get(&self, v: u16) -> u16 {
        let i = (u32::from(v) & 0xff) >> self.shift;
        self.data[(i * 256 + (u32::from(v) >> 8)) as usize]
    }
}

fn build_16bit_table(shift: u32, gamma: i64) -> Table16 {
    let num = 1u32 << (8 - shift);
    let max = (1u32 << (16 - shift)) - 1;
    let max_by_2 = 1u32 << (15 - shift);
    let fmax = 1.0 / f64::from(max);
    let mut data = vec![0u16; (num * 256) as usize];
    for i in 0..num {
        for j in 0..256u32 {
            let ig = (j << (8 - shift)) + i;
            data[(i * 256 + j) as usize] = if png_gamma_significant(gamma) {
                (65535.0 * (f64::from(ig) * fmax).powf(gamma as f64 * 0.00001) + 0.5).floor() as u16
            } else if shift != 0 {
                ((ig * 65535 + max_by_2) / max) as u16
            } else {
                ig as u16
            };
        }
    }
    Table16 { shift, data }
}

fn build_16to8_table(shift: u32, gamma: i64) -> Table16 {
    let num = 1u32 << (8 - shift);
    let max = (1u32 << (16 - shift)) - 1;
    let mut data = vec![0u16; (num * 256) as usize];
    let mut last = 0u32;
    let mask = 0xffu32 >> shift;
    for i in 0..255u32 {
        let out = (i * 257) as u16;
        let bound = u32::from(png_gamma_16bit_correct(u32::from(out) + 128, gamma));
        let bound = (bound * max + 32768) / 65535 + 1;
        while last < bound && last < (num << 8) {
            data[((last & mask) * 256 + (last >> (8 - shift))) as usize] = out;
            last += 1;
        }
    }
    while last < (num << 8) {
        data[((last & mask) * 256 + (last >> (8 - shift))) as usize] = 65535;
        last += 1;
    }
    Table16 { shift, data }
}

/// Gamma state after `png_init_read_transformations` (no png_set_gamma call, as in OpenCV).
struct PngGamma {
    file_gamma: i64,
    screen_gamma: i64,
}

impl PngGamma {
    fn new(chunk_gamma: i64) -> Option<Self> {
        let (file_gamma, screen_gamma) =
            if chunk_gamma > 0 { (chunk_gamma, png_reciprocal(chunk_gamma)) } else { (PNG_FP_1, PNG_FP_1) };
        // Tables are built for RGB_TO_GRAY only when a gamma is significant.
        if png_gamma_significant(file_gamma) || png_gamma_significant(screen_gamma) {
            Some(PngGamma { file_gamma, screen_gamma })
        } else {
            None
        }
    }
    fn file_to_linear(&self) -> i64 {
        png_reciprocal(self.file_gamma)
    }
    fn linear_to_screen(&self) -> i64 {
        if self.screen_gamma > 0 {
            png_reciprocal(self.screen_gamma)
        } else {
            self.file_gamma
        }
    }
    fn correction(&self) -> i64 {
        if self.screen_gamma > 0 {
            png_reciprocal2(self.screen_gamma, self.file_gamma)
        } else {
            PNG_FP_1
        }
    }
}

fn png_gray(img: &DynamicImage, info: &PngColorInfo) -> GrayImage {
    let gamma = PngGamma::new(info.chunk_gamma);
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageLuma8(g) => g.clone(),
        DynamicImage::ImageLumaA8(g) => GrayImage::from_fn(w, h, |x, y| image::Luma([g.get_pixel(x, y)[0]])),
        DynamicImage::ImageLuma16(g) => {
            GrayImage::from_fn(w, h, |x, y| image::Luma([(g.get_pixel(x, y)[0] >> 8) as u8]))
        }
        DynamicImage::ImageLumaA16(g) => {
            GrayImage::from_fn(w, h, |x, y| image::Luma([(g.get_pixel(x, y)[0] >> 8) as u8]))
        }
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => {
            let ch = img.color().channel_count() as usize;
            let raw = img.as_bytes();
            let f: Box<dyn Fn(u8, u8, u8) -> u8> = match &gamma {
                None => Box::new(|r, g, b| {
                    if r == g && r == b {
                        r
                    } else {
                        ((RC * u32::from(r) + GC * u32::from(g) + BC * u32::from(b)) >> 15) as u8
                    }
                }),
                Some(gm) => {
                    let table = build_8bit_table(gm.correction());
                    let to_1 = build_8bit_table(gm.file_to_linear());
                    let from_1 = build_8bit_table(gm.linear_to_screen());
                    Box::new(move |r, g, b| {
                        if r == g && r == b {
                            table[r as usize]
                        } else {
                            let (r, g, b) =
                                (u32::from(to_1[r as usize]), u32::from(to_1[g as usize]), u32::from(to_1[b as usize]));
                            from_1[((RC * r + GC * g + BC * b + 16384) >> 15).min(255) as usize]
                        }
                    })
                }
            };
            let mut out = Vec::with_capacity((w as usize) * (h as usize));
            for p in raw.chunks_exact(ch) {
                out.push(f(p[0], p[1], p[2]));
            }
            GrayImage::from_raw(w, h, out).unwrap_or_else(|| GrayImage::new(w, h))
        }
        _ => {
            // 16-bit colour (Rgb16 / Rgba16); anything else is brought to 16-bit RGB first.
            let rgb = img.to_rgb16();
            let f: Box<dyn Fn(u16, u16, u16) -> u16> = match &gamma {
                None => Box::new(|r, g, b| {
                    ((RC * u32::from(r) + GC * u32::from(g) + BC * u32::from(b) + 16384) >> 15) as u16
                }),
                Some(gm) => {
                    let mut shift: u32 =
                        if info.sig_bit > 0 && info.sig_bit < 16 { 16 - u32::from(info.sig_bit) } else { 0 };
                    // PNG_16_TO_8 is set (png_set_strip_16): keep PNG_MAX_GAMMA_8 = 11 bits.
                    shift = shift.clamp(16 - 11, 8);
                    let table = build_16to8_table(shift, png_reciprocal(gm.correction()));
                    let to_1 = build_16bit_table(shift, gm.file_to_linear());
                    let from_1 = build_16bit_table(shift, gm.linear_to_screen());
                    Box::new(move |r, g, b| {
                        if r == g && r == b {
                            table.get(r)
                        } else {
                            let (r, g, b) = (u32::from(to_1.get(r)), u32::from(to_1.get(g)), u32::from(to_1.get(b)));
                            from_1.get(((RC * r + GC * g + BC * b + 16384) >> 15) as u16)
                        }
                    })
                }
            };
            GrayImage::from_fn(w, h, |x, y| {
                let p = rgb.get_pixel(x, y);
                image::Luma([(f(p[0], p[1], p[2]) >> 8) as u8])
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canny

/// OpenCV's `cvFloor` as compiled for x86-64 (`floor` then a truncating conversion, where an
/// out-of-range or NaN value yields INT_MIN), so that odd thresholds behave exactly like cv2.
fn cv_floor(v: f64) -> i32 {
    let f = v.floor();
    if (-2147483648.0..=2147483647.0).contains(&f) {
        f as i32
    } else {
        i32::MIN
    }
}

/// `cv2.Canny(gray, low, high)` (apertureSize 3, L2gradient false), bit-exact: 0 or 255 per pixel.
pub fn canny(gray: &GrayImage, low: f64, high: f64) -> Result<GrayImage> {
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::Input(format!("canny: input image is empty ({w}x{h})")));
    }
    DecodeLimits::default().check_per_pixel("canny: the input image", w as u32, h as u32, CANNY_BYTES_PER_PIXEL)?;
    let (mut low, mut high) = (low, high);
    if low > high {
        std::mem::swap(&mut low, &mut high);
    }
    let low = cv_floor(low);
    let high = cv_floor(high);
    let src = gray.as_raw();

    // 3x3 Sobel with BORDER_REPLICATE.
    let mut dx = vec![0i16; w * h];
    let mut dy = vec![0i16; w * h];
    for y in 0..h {
        let ym = y.saturating_sub(1);
        let yp = (y + 1).min(h - 1);
        let (rm, r0, rp) = (&src[ym * w..ym * w + w], &src[y * w..y * w + w], &src[yp * w..yp * w + w]);
        for x in 0..w {
            let xm = x.saturating_sub(1);
            let xp = (x + 1).min(w - 1);
            let p = |r: &[u8], i: usize| i32::from(r[i]);
            let gx = (p(rm, xp) - p(rm, xm)) + 2 * (p(r0, xp) - p(r0, xm)) + (p(rp, xp) - p(rp, xm));
            let gy = (p(rp, xm) + 2 * p(rp, x) + p(rp, xp)) - (p(rm, xm) + 2 * p(rm, x) + p(rm, xp));
            dx[y * w + x] = gx as i16;
            dy[y * w + x] = gy as i16;
        }
    }

    // L1 magnitude with a zero frame: mag is (h+2) x (w+2).
    let ms = w + 2;
    let mut mag = vec![0i32; ms * (h + 2)];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            mag[(y + 1) * ms + x + 1] = i32::from(dx[i]).abs() + i32::from(dy[i]).abs();
        }
    }

    // Map: 0 = may be an edge, 1 = cannot be an edge, 2 = edge.  Frame stays 1.
    const CANNY_SHIFT: i32 = 15;
    #[allow(clippy::excessive_precision)] // OpenCV's literal, kept verbatim
    let tg22: i32 = (0.4142135623730950488016887242097 * f64::from(1 << CANNY_SHIFT) + 0.5) as i32;
    let mut map = vec![1u8; ms * (h + 2)];
    let mut stack: Vec<usize> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let c = (y + 1) * ms + x + 1;
            let m = mag[c];
            let mut is_max = false;
            if m > low {
                let xs = i32::from(dx[y * w + x]);
                let ys = i32::from(dy[y * w + x]);
                let ax = xs.abs();
                let ay = ys.abs() << CANNY_SHIFT;
                let tg22x = ax * tg22;
                if ay < tg22x {
                    is_max = m > mag[c - 1] && m >= mag[c + 1];
                } else {
                    let tg67x = tg22x + (ax << (CANNY_SHIFT + 1));
                    if ay > tg67x {
                        is_max = m > mag[c - ms] && m >= mag[c + ms];
                    } else if (xs ^ ys) < 0 {
                        is_max = m > mag[c - ms + 1] && m > mag[c + ms - 1];
                    } else {
                        is_max = m > mag[c - ms - 1] && m > mag[c + ms + 1];
                    }
                }
            }
            if is_max {
                if m > high {
                    map[c] = 2;
                    stack.push(c);
                } else {
                    map[c] = 0;
                }
            }
        }
    }

    // Hysteresis: grow strong edges through 8-connected candidates.
    let offsets = [
        1isize,
        -1,
        ms as isize,
        -(ms as isize),
        ms as isize + 1,
        ms as isize - 1,
        -(ms as isize) + 1,
        -(ms as isize) - 1,
    ];
    while let Some(c) = stack.pop() {
        for &o in &offsets {
            let n = (c as isize + o) as usize;
            if map[n] == 0 {
                map[n] = 2;
                stack.push(n);
            }
        }
    }

    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            out.push(if map[(y + 1) * ms + x + 1] == 2 { 255 } else { 0 });
        }
    }
    GrayImage::from_raw(w as u32, h as u32, out)
        .ok_or_else(|| Error::Input("canny: internal buffer size mismatch".into()))
}

/// Replicate a single-channel edge map into three channels.
pub fn edges_to_rgb(edges: &GrayImage) -> RgbImage {
    RgbImage::from_fn(edges.width(), edges.height(), |x, y| {
        let v = edges.get_pixel(x, y)[0];
        image::Rgb([v, v, v])
    })
}
