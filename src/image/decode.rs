//! Image decoding that reproduces Pillow's `Image.open(f).convert("RGB")`.
//!
//! CLIP-style preprocessing is sensitive to every pixel value, so the conversion to 8-bit RGB follows
//! Pillow's rules rather than the `image` crate's (which, for example, scales 16-bit samples by 257
//! where Pillow truncates or clips):
//!
//! * RGBA / LA: alpha is dropped, the colour is NOT composited on any background.
//! * L (and 1-, 2-, 4-bit grey): the grey value is replicated into R, G and B.
//! * P (palette PNG / GIF / BMP): each index is looked up in the palette; transparency is ignored.
//! * 16-bit RGB / RGBA / LA PNG: Pillow unpacks with the `;16B` raw modes, which keep the HIGH byte
//!   of each big-endian sample (`v >> 8`, truncation, not rounding).
//! * 16-bit greyscale PNG: Pillow opens it as mode `I;16` and `I;16 -> RGB` CLIPS the value to
//!   0..=255 (a sample of 256..=65535 becomes 255, 0..=255 stay as they are). This also holds for
//!   16-bit grey with a tRNS chunk, which the `image` crate hands over as grey+alpha.
//! * CMYK JPEG (Adobe, inverted): Pillow computes `255 - min(255, ...)` via `cmyk2rgb`, which is
//!   `round(C' * K' / 255)` on the stored (inverted) samples; zune-jpeg (the `image` crate's decoder)
//!   does the same product with the same rounding, so only the IDCT differences below remain.
//!   Non-Adobe CMYK JPEGs (rare) are treated as inverted by zune-jpeg but not by Pillow.
//! * GIF: the first frame. Where that frame does not cover the whole logical screen, Pillow fills
//!   the rest with palette entry 0 (or the transparent index's colour) while the `image` crate fills
//!   it with black; the `image` crate does not expose the palette, so that case is not reproduced.
//!
//! JPEG: Pillow decodes with libjpeg-turbo (islow IDCT, fancy upsampling); the `image` crate uses
//! zune-jpeg, whose IDCT / upsampling / YCbCr rounding differ in a few pixels by a small amount, so
//! JPEGs go through our libjpeg-turbo-exact decoder (`super::jpeg`) and only the variants it does not
//! handle (arithmetic coding, 12-bit, lossless, ...) fall back to zune-jpeg.

use std::io::Cursor;

use image::codecs::{bmp::BmpDecoder, gif::GifDecoder, jpeg::JpegDecoder, png::PngDecoder, webp::WebPDecoder};
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, RgbImage};

use crate::error::{Error, Result};

pub use super::limits::DecodeLimits;

fn err(message: impl Into<String>) -> Error {
    Error::Image(message.into())
}

/// What the PNG header says, read by hand so that the size check happens before any decoder runs
/// and so that 16-bit grey can be told apart from 16-bit grey+alpha after the `image` crate has
/// expanded a tRNS chunk into an alpha channel.
#[derive(Debug, Clone, Copy)]
struct PngHeader {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

fn read_png_header(bytes: &[u8]) -> Result<PngHeader> {
    // signature (8) + chunk length (4) + "IHDR" (4) + width (4) + height (4) + depth (1) + colour type (1)
    let ihdr = bytes.get(8..26).ok_or_else(|| {
        err(format!("corrupt PNG: file is only {} bytes, too short for the IHDR header", bytes.len()))
    })?;
    if &ihdr[4..8] != b"IHDR" {
        return Err(err("corrupt PNG: the first chunk is not IHDR"));
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(PngHeader { width: be32(&ihdr[8..12]), height: be32(&ihdr[12..16]), bit_depth: ihdr[16], color_type: ihdr[17] })
}

/// The format whose signature starts a file too short to be recognised, such as the first 4 bytes of a PNG.
fn truncated_signature(bytes: &[u8]) -> Option<&'static str> {
    const SIGNATURES: [(&[u8], &str); 5] =
        [(b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"RIFF", "WebP"), (b"BM", "BMP")];
    let n = bytes.len().min(8);
    SIGNATURES.iter().find(|(sig, _)| n < 12 && sig.starts_with(&bytes[..n.min(sig.len())])).map(|(_, name)| *name)
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        _ => "image",
    }
}

fn describe(format: ImageFormat, e: ImageError) -> Error {
    let name = format_name(format);
    match e {
        ImageError::Limits(l) => err(format!("{name} image is over the decode limits: {l}")),
        ImageError::Unsupported(u) => err(format!("unsupported {name} variant: {u}")),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            err(format!("corrupt {name}: the file is truncated ({io})"))
        }
        other => err(format!("corrupt {name}: {other}")),
    }
}

/// The decoded bytes per pixel of a PNG from its IHDR (after the `image` crate's expansion of palettes and
/// sub-byte depths; tRNS alpha not counted, the decoder's own header check below counts it).
fn png_bytes_per_pixel(h: &PngHeader) -> u64 {
    let channels: u64 = match h.color_type {
        0 => 1,
        2 | 3 => 3,
        4 => 2,
        _ => 4,
    };
    channels * if h.bit_depth == 16 { 2 } else { 1 }
}

/// The format of `bytes` from its content (never a file name), or the error that names what the file is.
pub(crate) fn sniff_format(bytes: &[u8]) -> Result<ImageFormat> {
    if bytes.is_empty() {
        return Err(err("empty file (0 bytes)"));
    }
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif | ImageFormat::Bmp)) => {
            Ok(f)
        }
        Ok(other) => Err(err(format!("unsupported format {other:?}: only PNG, JPEG, WebP, GIF and BMP are accepted"))),
        Err(_) => {
            if let Some(name) = truncated_signature(bytes) {
                return Err(err(format!(
                    "corrupt {name}: the file is truncated ({} bytes, shorter than the {name} header)",
                    bytes.len()
                )));
            }
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Err(err(format!(
                "unsupported format: the file starts with bytes [{}], which is not PNG, JPEG, WebP, GIF or BMP",
                head.join(" ")
            )))
        }
    }
}

/// A decoder of the `image` crate for `bytes` of `format`, after the checks every decode path shares: the
/// metadata and structure (`super::precheck`), a PNG's IHDR, and the header's size with `then_bytes_per_pixel` more bytes a
/// pixel for what the caller does next (the decoder's own buffer is counted here). Only the header has been
/// read when this returns; the decoder enforces the same limits while it decodes.
pub(crate) fn open_checked<'a>(
    format: ImageFormat,
    bytes: &'a [u8],
    limits: &DecodeLimits,
    then_bytes_per_pixel: u64,
) -> Result<Box<dyn ImageDecoder + 'a>> {
    let name = format_name(format);
    let what = format!("{name} image");
    super::precheck::check_before_decoding(format, bytes, limits)?;
    // PNG: refuse an over-limit header before the png crate reads any further (a header with no image data
    // must still be reported as too large, not as truncated).
    if format == ImageFormat::Png {
        let h = read_png_header(bytes)?;
        limits.check_per_pixel(&what, h.width, h.height, png_bytes_per_pixel(&h) + then_bytes_per_pixel)?;
    }
    let describe = |e| describe(format, e);
    let reader = Cursor::new(bytes);
    // Constructing a decoder reads the header only.
    let mut decoder: Box<dyn ImageDecoder> = match format {
        ImageFormat::Png => Box::new(PngDecoder::with_limits(reader, limits.image_crate_limits()).map_err(describe)?),
        ImageFormat::Jpeg => Box::new(JpegDecoder::new(reader).map_err(describe)?),
        ImageFormat::WebP => Box::new(WebPDecoder::new(reader).map_err(describe)?),
        ImageFormat::Gif => Box::new(GifDecoder::new(reader).map_err(describe)?),
        _ => Box::new(BmpDecoder::new(reader).map_err(describe)?),
    };
    let (width, height) = decoder.dimensions();
    // zune-jpeg (the JPEGs our decoder hands on: progressive ones with unrefined coefficients, ...) keeps a
    // progressive file's coefficients besides its output: 2 bytes a sample for up to 3 full-size components.
    let decoder_extra = if format == ImageFormat::Jpeg { 6 } else { 0 };
    let bytes_per_pixel = u64::from(decoder.color_type().bytes_per_pixel()) + decoder_extra;
    limits.check_per_pixel(&what, width, height, bytes_per_pixel + then_bytes_per_pixel)?;
    // The output buffer is reserved, so the decoder's own allocations count against what remains.
    let mut crate_limits = limits.image_crate_limits();
    crate_limits.reserve(decoder.total_bytes()).map_err(describe)?;
    decoder.set_limits(crate_limits).map_err(describe)?;
    Ok(decoder)
}

/// Decodes PNG, JPEG, WebP, GIF (first frame) or BMP bytes to 8-bit RGB exactly as Pillow's
/// `Image.open(f).convert("RGB")` does (JPEG aside: see the module docs).
///
/// The format is guessed from the content, never from a file name. The memory the decode needs is worked
/// out from the header and checked against `limits` before any pixel buffer is allocated.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    let format = sniff_format(bytes)?;
    if format == ImageFormat::Jpeg {
        // Our decoder checks its own peak memory, RGB output included, from the SOF header.
        if let Some(rgb) = super::jpeg::decode_jpeg_like_pillow(bytes, limits)? {
            return Ok(rgb);
        }
    }
    // The decoder's buffer plus the RGB copy we return.
    let decoder = open_checked(format, bytes, limits, 3)?;
    let gray16 = format == ImageFormat::Png
        && matches!(read_png_header(bytes), Ok(PngHeader { bit_depth: 16, color_type: 0, .. }));
    let image = DynamicImage::from_decoder(decoder).map_err(|e| describe(format, e))?;
    let mut rgb = to_rgb_like_pillow(image, gray16)?;
    if format == ImageFormat::Bmp {
        if let Some(green_bits) = bmp_16bit_green_bits(bytes) {
            rescale_16bit_bmp(&mut rgb, green_bits);
        }
    }
    Ok(rgb)
}

/// For a 16-bit BMP, the number of green bits (5 for X1R5G5B5, 6 for R5G6B5); `None` otherwise.
fn bmp_16bit_green_bits(bytes: &[u8]) -> Option<u32> {
    let le16 = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let le32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if le32(14)? < 40 || le16(28)? != 16 {
        return None;
    }
    // BI_BITFIELDS (3): the masks follow the 40-byte info header; Pillow knows only 555 and 565.
    let six_bit_green = le32(30)? == 3 && le32(58) == Some(0x07E0);
    Some(if six_bit_green { 6 } else { 5 })
}

/// Pillow expands 5/6-bit BMP samples with `v * 255 / max` (floor: `BGR;15`, `BGR;16` unpackers);
/// the `image` crate rounds. Recover each sample from the crate's value and re-expand it.
fn rescale_16bit_bmp(rgb: &mut RgbImage, green_bits: u32) {
    let table = |bits: u32| -> [u8; 256] {
        let max = (1u32 << bits) - 1;
        std::array::from_fn(|v| {
            let sample = (v as u32 * max + 127) / 255; // nearest sample for any sane expansion
            (sample * 255 / max) as u8
        })
    };
    let (five, green) = (table(5), table(green_bits));
    for p in rgb.pixels_mut() {
        p.0 = [five[usize::from(p.0[0])], green[usize::from(p.0[1])], five[usize::from(p.0[2])]];
    }
}

/// Converts a decoded image to 8-bit RGB with Pillow's rules (see the module docs).
/// `gray16_source` is true for a 16-bit greyscale PNG (Pillow mode `I;16`), with or without tRNS.
fn to_rgb_like_pillow(image: DynamicImage, gray16_source: bool) -> Result<RgbImage> {
    let (width, height) = (image.width(), image.height());
    // Pillow: I;16 -> RGB clips; the ;16B unpackers keep the high byte.
    let narrow = |v: u16| if gray16_source { v.min(255) as u8 } else { (v >> 8) as u8 };
    let high = |v: u16| (v >> 8) as u8;
    let raw = match &image {
        DynamicImage::ImageRgb8(_) => return Ok(image.into_rgb8()),
        DynamicImage::ImageRgba8(im) => map_pixels(im.as_raw(), 4, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma8(im) => map_pixels(im.as_raw(), 1, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(im) => map_pixels(im.as_raw(), 2, |p| [p[0]; 3]),
        DynamicImage::ImageLuma16(im) => map_pixels(im.as_raw(), 1, |p| [narrow(p[0]); 3]),
        DynamicImage::ImageLumaA16(im) => map_pixels(im.as_raw(), 2, |p| [narrow(p[0]); 3]),
        DynamicImage::ImageRgb16(im) => map_pixels(im.as_raw(), 3, |p| [high(p[0]), high(p[1]), high(p[2])]),
        DynamicImage::ImageRgba16(im) => map_pixels(im.as_raw(), 4, |p| [high(p[0]), high(p[1]), high(p[2])]),
        // Float images do not come out of the five accepted formats.
        _ => return Ok(image.to_rgb8()),
    };
    RgbImage::from_raw(width, height, raw)
        .ok_or_else(|| err(format!("decoder returned a pixel buffer of the wrong size for {width}×{height}")))
}

fn map_pixels<T: Copy>(raw: &[T], channels: usize, f: impl Fn(&[T]) -> [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / channels * 3);
    for p in raw.chunks_exact(channels) {
        out.extend_from_slice(&f(p));
    }
    out
}
