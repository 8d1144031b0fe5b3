//! A hand-written JPEG decoder whose output is bit-identical to libjpeg-turbo as Pillow and OpenCV use it.
//!
//! Why hand-written: no Rust JPEG decoder reproduces libjpeg-turbo's default decode path bit-exactly (the
//! `JDCT_ISLOW` integer IDCT, "fancy" triangle-filter chroma upsampling and the fixed-point YCbCr→RGB tables);
//! zune-jpeg (used by the `image` crate) differs by up to ±4 levels on many pixels. CLIP preprocessing parity
//! with Pillow (≤ 1e-6 after normalisation) needs identical 8-bit pixels, so this module re-implements those
//! steps (written from the JPEG specification and the documented libjpeg behaviour, no code copied).
//!
//! Handled exactly: baseline and extended-sequential (SOF0/SOF1) and progressive (SOF2) Huffman JPEGs, 8-bit,
//! 1, 3 or 4 components, any sampling factors 1..=4 whose ratios are integral (4:4:4, 4:2:2, 4:2:0, 4:4:0,
//! 4:1:1, ...), restart intervals, JFIF/Adobe markers and component-id colour-space guessing, missing Huffman
//! tables (Motion-JPEG: the standard tables, as libjpeg-turbo), CMYK/YCCK converted to RGB the way Pillow does
//! (inverted "CMYK;I" raw mode, then Pillow's CMYK→RGB).
//!
//! `Ok(None)` ("not handled here, fall back to another decoder") is returned for: arithmetic coding, lossless,
//! hierarchical and 12/16-bit JPEGs, 2-component files, fractional sampling ratios or more than 10 blocks per
//! MCU, a height defined by a DNL marker, and progressive files whose low-frequency AC coefficients are left
//! unrefined (libjpeg then applies inter-block smoothing, which is not reproduced). Malformed or truncated data
//! gives `Err(Error::Image)`; nothing here panics and nothing is allocated before the memory the frame needs
//! (worked out from its SOF header) is checked against the caller's [`DecodeLimits`]. One leniency: a sequential file missing only its final EOI marker decodes
//! (Pillow calls it truncated unless `ImageFile.LOAD_TRUNCATED_IMAGES`, and then gives the same pixels).
//!
//! Verified byte-identical to Pillow 13 (libjpeg-turbo 3.2.0) `convert("RGB")` and to OpenCV 5.0
//! (libjpeg-turbo 3.1.2) `IMREAD_GRAYSCALE` on ~1,800 generated JPEGs; tests/jpeg_parity.rs keeps a set.

mod color;
mod entropy;
mod huffman;
mod idct;
mod markers;

use super::limits::DecodeLimits;
use crate::error::{Error, Result};
use huffman::Huffman;
use markers::decode_frame;

/// Decodes a JPEG exactly as Pillow (libjpeg-turbo, islow, fancy upsampling) to 8-bit RGB (gray replicated).
/// Ok(None) = a JPEG variant this decoder does not handle (the caller falls back). The memory the decode will
/// hold at its peak is worked out from the SOF header and checked against `limits` before any allocation.
pub fn decode_jpeg_like_pillow(bytes: &[u8], limits: &DecodeLimits) -> Result<Option<image::RgbImage>> {
    let Some(frame) = decode_frame(bytes, &Budget { limits, luma_only: false, then_bytes_per_pixel: 0 })? else {
        return Ok(None);
    };
    let (w, h) = (frame.width, frame.height);
    let rgb = frame.to_rgb();
    image::RgbImage::from_raw(w as u32, h as u32, rgb).map(Some).ok_or_else(|| err("internal buffer size mismatch"))
}

/// The Y (luma) plane as libjpeg decodes it with out_color_space = JCS_GRAYSCALE (what OpenCV's IMREAD_GRAYSCALE gives for JPEG).
///
/// For YCbCr and grayscale files this is the Y component alone (upsampled only if Y itself is subsampled);
/// for RGB-coded files (Adobe transform 0 or 'R','G','B' ids) libjpeg's fixed-point RGB→Y. CMYK/YCCK files
/// give `Ok(None)` (libjpeg cannot produce grayscale from them; OpenCV converts CMYK itself).
/// `then_bytes_per_pixel`: what the caller will hold per pixel once it has the plane (Canny's working memory),
/// so that the whole job is checked against `limits` from the SOF header, before any allocation.
pub fn decode_jpeg_luma(
    bytes: &[u8],
    limits: &DecodeLimits,
    then_bytes_per_pixel: u64,
) -> Result<Option<image::GrayImage>> {
    let Some(frame) = decode_frame(bytes, &Budget { limits, luma_only: true, then_bytes_per_pixel })? else {
        return Ok(None);
    };
    let (w, h) = (frame.width, frame.height);
    let Some(luma) = frame.to_luma() else { return Ok(None) };
    image::GrayImage::from_raw(w as u32, h as u32, luma).map(Some).ok_or_else(|| err("internal buffer size mismatch"))
}

/// What a decode may hold: the limits, the output wanted, and the caller's memory per pixel afterwards.
struct Budget<'a> {
    limits: &'a DecodeLimits,
    luma_only: bool,
    then_bytes_per_pixel: u64,
}

fn err(msg: impl std::fmt::Display) -> Error {
    Error::Image(format!("JPEG: {msg}"))
}

/// Zig-zag index → natural (row-major) index. The 16 extra entries absorb run lengths that overshoot
/// position 63 in corrupt data (libjpeg does the same), so no index can go out of bounds.
const NATURAL: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
];

// ---------------------------------------------------------------------------------------------------------
// Frame / scan state
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ColorSpace {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Quantisation table (natural order), latched at the component's first scan as libjpeg does.
    quant: Option<[u16; 64]>,
    /// Blocks per row / column in the MCU-padded coefficient array.
    bw: usize,
    bh: usize,
    /// Sample dimensions of the component (libjpeg's downsampled_width/height).
    dw: usize,
    dh: usize,
    /// Coefficients, natural order, 64 per block, `bw * bh` blocks.
    coefs: Vec<i16>,
    /// Progressive: the successive-approximation bit position known for each coefficient (-1 = none yet).
    coef_bits: [i32; 64],
    dc_pred: i32,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    max_h: usize,
    max_v: usize,
    mcux: usize,
    mcuy: usize,
    comps: Vec<Component>,
    color: ColorSpace,
    /// Only the components needed for the requested output get an IDCT (luma mode skips chroma).
    planes: Vec<Option<Vec<u8>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ScanKind {
    Sequential,
    DcFirst,
    DcRefine,
    AcFirst,
    AcRefine,
}

struct Tables {
    quant: [Option<[u16; 64]>; 4],
    dc: [Option<std::result::Result<Huffman, &'static str>>; 4],
    ac: [Option<std::result::Result<Huffman, &'static str>>; 4],
    restart_interval: usize,
    saw_jfif: bool,
    adobe_transform: Option<u8>,
}
