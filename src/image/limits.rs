//! One decode budget for every image the engine reads: subject photos, the edge-control image, the CLI's
//! `canny`, the browser's `inspectImage` and `cannyPreview` (decompression-bomb protection).
//!
//! Every decode path reads the file's header first (the PNG IHDR, the JPEG SOF, the GIF screen, the WebP and
//! BMP headers), works out the memory the whole job will hold at its peak — the decoder's buffers, the 8-bit
//! result and what the caller computes on it afterwards (Canny) — and refuses the file *before any pixel
//! buffer is allocated* when that is over [`DecodeLimits`]. A 500-byte file claiming 30000×30000 pixels is
//! refused in microseconds, without the memory.
//!
//! The figures follow Pillow, the reference's image library, and the limits the README documents:
//! * 16384 px a side and 512 MiB of pixel memory (the engine's documented limit). For an RGB decode (the
//!   decoder's 3 bytes per pixel plus the 3 of the RGB copy) 512 MiB is 89,478,485 pixels, exactly Pillow's
//!   `Image.MAX_IMAGE_PIXELS`, above which Pillow warns.
//! * never more than 2 × `MAX_IMAGE_PIXELS` pixels, where Pillow raises `DecompressionBombError`, whatever the
//!   memory (it binds for custom limits with more memory).
//! * metadata that a decoder inflates (a PNG `iCCP` colour profile) at most 1 MiB, Pillow's
//!   `PngImagePlugin.MAX_TEXT_CHUNK` (Pillow refuses such a file too). Metadata stored uncompressed (EXIF, XMP,
//!   ICC in JPEG or WebP) is read from the file itself, so it is bounded by the file's length once a chunk that
//!   claims more bytes than the file holds is refused; compressed text (`zTXt`, `iTXt`) is never inflated.

use crate::error::{Error, Result};

/// Pillow's `Image.MAX_IMAGE_PIXELS` (`1024 * 1024 * 1024 // 4 // 3`): above it Pillow warns of a possible
/// decompression bomb, above twice it Pillow refuses to open the file.
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 1024 * 1024 * 1024 / 4 / 3;

/// Pillow's `PngImagePlugin.MAX_TEXT_CHUNK` (= `ImageFile.SAFEBLOCK`): the most a compressed PNG metadata chunk
/// may inflate to.
pub const PILLOW_MAX_TEXT_CHUNK: u64 = 1024 * 1024;

/// Size limits applied from the header, before decoding (decompression-bomb protection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Widest image accepted, in pixels.
    pub max_width: u32,
    /// Tallest image accepted, in pixels.
    pub max_height: u32,
    /// Most pixels accepted, whatever the memory.
    pub max_pixels: u64,
    /// Most bytes a decode may hold at once for pixels: the decoder's buffers, the 8-bit result and the
    /// caller's working memory on it.
    pub max_alloc_bytes: u64,
    /// Most bytes one compressed metadata block (a PNG `iCCP` profile) may inflate to.
    pub max_metadata_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_width: 16384,
            max_height: 16384,
            max_pixels: 2 * PILLOW_MAX_IMAGE_PIXELS,
            max_alloc_bytes: 512 * 1024 * 1024,
            max_metadata_bytes: PILLOW_MAX_TEXT_CHUNK,
        }
    }
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

impl DecodeLimits {
    /// Checks a `width`×`height` image (`what` names it: "PNG image") whose decode holds `peak_bytes` at
    /// once. The message says which limit the file is over.
    pub fn check(&self, what: &str, width: u64, height: u64, peak_bytes: u64) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::Image(format!("{what} is {width}×{height}: it has no pixels")));
        }
        let pixels = width.saturating_mul(height);
        let why = if width > u64::from(self.max_width) {
            format!("wider than {} px", self.max_width)
        } else if height > u64::from(self.max_height) {
            format!("taller than {} px", self.max_height)
        } else if pixels > self.max_pixels {
            format!(
                "{:.1} Mpx, more than the {:.1} Mpx at which Pillow refuses a decompression bomb",
                pixels as f64 / 1e6,
                self.max_pixels as f64 / 1e6
            )
        } else if peak_bytes > self.max_alloc_bytes {
            format!("it would need {} MiB", mib(peak_bytes))
        } else {
            return Ok(());
        };
        Err(Error::Image(format!(
            "{what} is {width}×{height}, more than the {}×{} / {} MiB decode limit ({why})",
            self.max_width,
            self.max_height,
            mib(self.max_alloc_bytes)
        )))
    }

    /// [`Self::check`] for a job that holds `bytes_per_pixel` bytes for each pixel at its peak.
    pub fn check_per_pixel(&self, what: &str, width: u32, height: u32, bytes_per_pixel: u64) -> Result<()> {
        let (w, h) = (u64::from(width), u64::from(height));
        self.check(what, w, h, w.saturating_mul(h).saturating_mul(bytes_per_pixel))
    }

    /// The same limits for the `image` crate's decoders (a second line of defence: they check their own
    /// allocations against it while decoding).
    pub fn image_crate_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_width);
        limits.max_image_height = Some(self.max_height);
        limits.max_alloc = Some(self.max_alloc_bytes);
        limits
    }
}
