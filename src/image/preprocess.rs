//! CLIP image preprocessing from `preprocessor_config.json` (transformers' `CLIPImageProcessor`):
//! RGB → resize shortest edge (Pillow bicubic on 8-bit) → centre crop → rescale → normalise → CHW f32.

use super::resize::resize_bicubic;
use crate::error::{Error, Result};
use image::RgbImage;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct SizeSpec {
    pub shortest_edge: Option<u32>,
    pub height: Option<u32>,
    pub width: Option<u32>,
}

fn yes() -> bool {
    true
}
fn bicubic() -> u32 {
    3
}
fn rescale_default() -> f64 {
    1.0 / 255.0
}

#[derive(Clone, Debug, Deserialize)]
pub struct ImageProcessorConfig {
    pub size: SizeSpec,
    pub crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "rescale_default")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// PIL resampling filter id; only 3 (BICUBIC) is supported.
    #[serde(default = "bicubic")]
    pub resample: u32,
}

impl ImageProcessorConfig {
    pub fn validate(&self, path: &str) -> Result<()> {
        if self.resample != 3 {
            return Err(Error::config(path, format!("resample {} is not supported (only 3 = bicubic)", self.resample)));
        }
        if self.image_std.contains(&0.0) {
            return Err(Error::config(path, "image_std has a zero"));
        }
        let (h, w) = self.crop_hw();
        if self.do_center_crop && (h == 0 || w == 0) {
            return Err(Error::config(path, "crop_size needs height and width"));
        }
        if self.do_resize
            && self.size.shortest_edge.is_none()
            && (self.size.height.is_none() || self.size.width.is_none())
        {
            return Err(Error::config(path, "size needs shortest_edge, or height and width"));
        }
        Ok(())
    }

    fn crop_hw(&self) -> (u32, u32) {
        let c = self.crop_size.as_ref().unwrap_or(&self.size);
        let h = c.height.or(c.shortest_edge).unwrap_or(0);
        (h, c.width.or(c.shortest_edge).unwrap_or(h))
    }

    /// Side length of the square the vision tower receives.
    pub fn output_hw(&self) -> (u32, u32) {
        self.crop_hw()
    }
}

/// transformers' `get_resize_output_image_size` for `shortest_edge`: the short side becomes `target`,
/// the long side `int(long * target / short)`.
pub fn shortest_edge_size(width: u32, height: u32, target: u32) -> (u32, u32) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (long as u64 * target as u64 / short.max(1) as u64) as u32;
    if width <= height {
        (target, new_long)
    } else {
        (new_long, target)
    }
}

/// transformers' `center_crop`: top = (h − ch) // 2, left = (w − cw) // 2; an image smaller than the crop is
/// padded with zeros around it first.
fn center_crop(img: &RgbImage, ch: u32, cw: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(cw, ch);
    let top = (h as i64 - ch as i64).div_euclid(2);
    let left = (w as i64 - cw as i64).div_euclid(2);
    for y in 0..ch {
        for x in 0..cw {
            let (sy, sx) = (y as i64 + top, x as i64 + left);
            if sy >= 0 && sx >= 0 && sy < h as i64 && sx < w as i64 {
                out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

/// Preprocesses one RGB image into CHW `pixel_values`.
pub fn preprocess(img: &RgbImage, cfg: &ImageProcessorConfig) -> Result<Vec<f32>> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::Image("image has no pixels".into()));
    }
    let mut img = if cfg.do_resize {
        let (nw, nh) = match cfg.size.shortest_edge {
            Some(target) => shortest_edge_size(w, h, target),
            None => (cfg.size.width.unwrap_or(w), cfg.size.height.unwrap_or(h)),
        };
        if nw == 0 || nh == 0 {
            return Err(Error::Image(format!(
                "a {w}×{h} image is too thin to resize to a shortest edge of {}",
                cfg.size.shortest_edge.unwrap_or(0)
            )));
        }
        resize_bicubic(img, nw, nh)?
    } else {
        img.clone()
    };
    if cfg.do_center_crop {
        let (ch, cw) = cfg.crop_hw();
        img = center_crop(&img, ch, cw);
    }
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    let scale = if cfg.do_rescale { cfg.rescale_factor as f32 } else { 1.0 };
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            let mut v = px[c] as f32 * scale;
            if cfg.do_normalize {
                v = (v - cfg.image_mean[c]) / cfg.image_std[c];
            }
            out[c * plane + i] = v;
        }
    }
    Ok(out)
}
