//! Checks made on a file before any decoder sees it: metadata that a decoder would allocate without a bound
//! (see `super::limits`), and structure that a decoder mishandles (found by fuzzing, `fuzz/`).
//!
//! * PNG `iCCP`: the png crate inflates the first colour profile while reading the header, bounded only by the
//!   pixel budget (a 1×1 PNG's profile could inflate to 512 MiB, or 4 GiB with the old Canny limits). The
//!   first `iCCP` before the image data (the only one the png crate reads) is inflated here with a bound of
//!   `max_metadata_bytes` (Pillow's `MAX_TEXT_CHUNK`, 1 MiB) and a larger one is refused, as Pillow refuses
//!   it. A corrupt profile stream is left to the decoder, which ignores it (as Pillow does).
//!   `zTXt`/`iTXt` are never inflated by our decode paths; `tEXt`/`eXIf` are bounded by the file.
//! * PNG `PLTE`: a palette whose length is not a whole number of RGB entries makes png 0.18 panic while
//!   expanding it (a slice out of range); libpng refuses it ("invalid"), and so do we.
//! * WebP `EXIF`/`ICCP`/`XMP `: image-webp allocates a metadata chunk by its declared size before reading it
//!   (when the orientation is asked for). A metadata chunk that claims more bytes than the file holds is refused.
//! * JPEG APPn segments are at most 64 KiB each and read from the file; GIF extensions are sub-blocks of the
//!   file; BMP has no metadata we read.

use super::limits::DecodeLimits;
use crate::error::{Error, Result};
use image::ImageFormat;

/// Checks a file of `format` against `limits` and for the structure decoders mishandle (see the module docs).
pub fn check_before_decoding(format: ImageFormat, bytes: &[u8], limits: &DecodeLimits) -> Result<()> {
    match format {
        ImageFormat::Png => check_png_chunks(bytes, limits),
        ImageFormat::WebP => check_webp_chunks(bytes),
        _ => Ok(()),
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn check_png_chunks(bytes: &[u8], limits: &DecodeLimits) -> Result<()> {
    let mut pos = 8usize;
    let mut iccp_seen = false;
    while let Some(head) = bytes.get(pos..pos + 8) {
        let len = be32(&head[..4]) as usize;
        let kind = &head[4..8];
        let Some(data) = bytes.get(pos + 8..(pos + 8).saturating_add(len)) else { return Ok(()) };
        match kind {
            b"IDAT" => return Ok(()),
            b"PLTE" if len == 0 || !len.is_multiple_of(3) || len > 3 * 256 => {
                return Err(Error::Image(format!(
                    "corrupt PNG: its palette (PLTE chunk) is {len} bytes, not 1 to 256 RGB entries of 3 bytes"
                )))
            }
            b"iCCP" if !iccp_seen => {
                iccp_seen = true;
                check_png_iccp(data, limits)?;
            }
            _ => {}
        }
        pos += 12 + len;
    }
    Ok(())
}

/// An `iCCP` chunk's data: profile name (1..=79 bytes), NUL, compression method (0 = zlib), zlib stream.
fn check_png_iccp(data: &[u8], limits: &DecodeLimits) -> Result<()> {
    let Some(nul) = data.iter().take(80).position(|&b| b == 0) else { return Ok(()) };
    let Some(stream) = data.get(nul + 2..) else { return Ok(()) };
    let bound = usize::try_from(limits.max_metadata_bytes).unwrap_or(usize::MAX);
    match fdeflate::decompress_to_vec_bounded(stream, bound) {
        Err(fdeflate::BoundedDecompressionError::OutputTooLarge { .. }) => Err(Error::Image(format!(
            "PNG colour profile (iCCP chunk) inflates to more than {} KiB, the metadata limit (a decompression bomb?)",
            limits.max_metadata_bytes / 1024
        ))),
        _ => Ok(()),
    }
}

fn check_webp_chunks(bytes: &[u8]) -> Result<()> {
    // "RIFF", size, "WEBP", then chunks: fourcc, little-endian size, data padded to an even length.
    let mut pos = 12usize;
    while let Some(head) = bytes.get(pos..pos + 8) {
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64;
        let fourcc = &head[..4];
        let left = (bytes.len() - pos - 8) as u64;
        if matches!(fourcc, b"EXIF" | b"ICCP" | b"XMP ") && size > left {
            return Err(Error::Image(format!(
                "corrupt WebP: its {} chunk claims {size} bytes but the file holds {left} more",
                String::from_utf8_lossy(fourcc).trim_end()
            )));
        }
        pos = pos.saturating_add(8).saturating_add(usize::try_from(size + (size & 1)).unwrap_or(usize::MAX));
    }
    Ok(())
}
