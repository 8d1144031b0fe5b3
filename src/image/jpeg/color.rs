//! Upsampling (libjpeg's choice of method per component) and colour conversion.

use super::{ColorSpace, Frame};

/// A component at full image resolution: either the IDCT plane itself or an upsampled copy.
struct FullPlane<'a> {
    data: std::borrow::Cow<'a, [u8]>,
    stride: usize,
}

impl Frame {
    fn full_plane(&self, ci: usize) -> Option<FullPlane<'_>> {
        let c = &self.comps[ci];
        let plane = self.planes.get(ci)?.as_ref()?;
        let sstride = c.bw * 8;
        let (w, h) = (self.width, self.height);
        let hexp = self.max_h / c.h;
        let vexp = self.max_v / c.v;
        if hexp == 1 && vexp == 1 {
            return Some(FullPlane { data: std::borrow::Cow::Borrowed(plane), stride: sstride });
        }
        let mut out = vec![0u8; w * h];
        let (dw, dh) = (c.dw.max(1), c.dh.max(1));
        let row = |y: usize| &plane[y.min(dh - 1) * sstride..y.min(dh - 1) * sstride + dw];
        if hexp == 2 && vexp == 1 && c.dw > 2 {
            // h2v1 fancy: 3/4 nearer + 1/4 further sample, alternating rounding bias 1, 2
            for y in 0..h {
                let s = row(y);
                let o = &mut out[y * w..y * w + w];
                for (x, px) in o.iter_mut().enumerate() {
                    let i = x / 2;
                    let near = s[i] as u32 * 3;
                    *px = if x & 1 == 0 {
                        ((near + s[i.saturating_sub(1)] as u32 + 1) >> 2) as u8
                    } else {
                        ((near + s[(i + 1).min(dw - 1)] as u32 + 2) >> 2) as u8
                    };
                }
            }
        } else if hexp == 1 && vexp == 2 {
            // h1v2 fancy (libjpeg uses it regardless of width): bias 1 for the upper, 2 for the lower row
            for y in 0..h {
                let iy = y / 2;
                let near = row(iy);
                let (far, bias) = if y & 1 == 0 { (row(iy.saturating_sub(1)), 1) } else { (row(iy + 1), 2) };
                let o = &mut out[y * w..y * w + w];
                for (x, px) in o.iter_mut().enumerate() {
                    *px = ((near[x] as u32 * 3 + far[x] as u32 + bias) >> 2) as u8;
                }
            }
        } else if hexp == 2 && vexp == 2 && c.dw > 2 {
            // h2v2 fancy: vertical 3:1 column sums, then horizontal 3:1 with biases 8, 7
            let mut sums = vec![0u32; dw];
            for y in 0..h {
                let iy = y / 2;
                let near = row(iy);
                let far = if y & 1 == 0 { row(iy.saturating_sub(1)) } else { row(iy + 1) };
                for (x, s) in sums.iter_mut().enumerate() {
                    *s = near[x] as u32 * 3 + far[x] as u32;
                }
                let o = &mut out[y * w..y * w + w];
                for (x, px) in o.iter_mut().enumerate() {
                    let i = x / 2;
                    let this = sums[i] * 3;
                    *px = if x & 1 == 0 {
                        ((this + sums[i.saturating_sub(1)] + 8) >> 4) as u8
                    } else {
                        ((this + sums[(i + 1).min(dw - 1)] + 7) >> 4) as u8
                    };
                }
            }
        } else {
            // plain replication (h2v1/h2v2 on components at most 2 samples wide, and every other integral ratio)
            for y in 0..h {
                let s = &plane[(y / vexp) * sstride..];
                let o = &mut out[y * w..y * w + w];
                for (x, px) in o.iter_mut().enumerate() {
                    *px = s[x / hexp];
                }
            }
        }
        Some(FullPlane { data: std::borrow::Cow::Owned(out), stride: w })
    }

    pub(super) fn to_rgb(&self) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let mut out = vec![0u8; w * h * 3];
        let planes: Vec<Option<FullPlane>> = (0..self.comps.len()).map(|ci| self.full_plane(ci)).collect();
        let get = |i: usize| planes.get(i).and_then(|p| p.as_ref());
        match self.color {
            ColorSpace::Gray => {
                let Some(p) = get(0) else { return out };
                for y in 0..h {
                    let src = &p.data[y * p.stride..y * p.stride + w];
                    for (o, &v) in out[y * w * 3..(y + 1) * w * 3].chunks_exact_mut(3).zip(src) {
                        o.fill(v);
                    }
                }
            }
            ColorSpace::Rgb | ColorSpace::YCbCr => {
                let (Some(p0), Some(p1), Some(p2)) = (get(0), get(1), get(2)) else { return out };
                let tabs = YccTables::new();
                for y in 0..h {
                    let a = &p0.data[y * p0.stride..y * p0.stride + w];
                    let b = &p1.data[y * p1.stride..y * p1.stride + w];
                    let c = &p2.data[y * p2.stride..y * p2.stride + w];
                    let o = &mut out[y * w * 3..(y + 1) * w * 3];
                    if self.color == ColorSpace::Rgb {
                        for (x, px) in o.chunks_exact_mut(3).enumerate() {
                            px[0] = a[x];
                            px[1] = b[x];
                            px[2] = c[x];
                        }
                    } else {
                        for (x, px) in o.chunks_exact_mut(3).enumerate() {
                            let [r, g, bl] = tabs.rgb(a[x], b[x], c[x]);
                            px[0] = r;
                            px[1] = g;
                            px[2] = bl;
                        }
                    }
                }
            }
            ColorSpace::Cmyk | ColorSpace::Ycck => {
                let (Some(p0), Some(p1), Some(p2), Some(p3)) = (get(0), get(1), get(2), get(3)) else { return out };
                let tabs = YccTables::new();
                for y in 0..h {
                    let a = &p0.data[y * p0.stride..y * p0.stride + w];
                    let b = &p1.data[y * p1.stride..y * p1.stride + w];
                    let c = &p2.data[y * p2.stride..y * p2.stride + w];
                    let k = &p3.data[y * p3.stride..y * p3.stride + w];
                    let o = &mut out[y * w * 3..(y + 1) * w * 3];
                    for (x, px) in o.chunks_exact_mut(3).enumerate() {
                        // libjpeg's CMYK output (YCCK: inverted YCbCr→RGB, K passed through)
                        let cmy = if self.color == ColorSpace::Ycck {
                            let [r, g, bl] = tabs.rgb(a[x], b[x], c[x]);
                            [255 - r, 255 - g, 255 - bl]
                        } else {
                            [a[x], b[x], c[x]]
                        };
                        // Pillow: raw mode "CMYK;I" inverts everything, then its CMYK→RGB:
                        // out = nk - nk*c/255 (rounded) with nk = 255 - k
                        let nk = k[x] as i32;
                        for (dst, &v) in px.iter_mut().zip(&cmy) {
                            let ci = 255 - v as i32;
                            let t = ci * nk + 128;
                            let m = ((t >> 8) + t) >> 8;
                            *dst = (nk - m).clamp(0, 255) as u8;
                        }
                    }
                }
            }
        }
        out
    }

    pub(super) fn to_luma(&self) -> Option<Vec<u8>> {
        let (w, h) = (self.width, self.height);
        let mut out = vec![0u8; w * h];
        match self.color {
            ColorSpace::Gray | ColorSpace::YCbCr => {
                let p = self.full_plane(0)?;
                for y in 0..h {
                    out[y * w..(y + 1) * w].copy_from_slice(&p.data[y * p.stride..y * p.stride + w]);
                }
            }
            ColorSpace::Rgb => {
                let (p0, p1, p2) = (self.full_plane(0)?, self.full_plane(1)?, self.full_plane(2)?);
                let (fr, fg, fb) = (fix16(0.29900), fix16(0.58700), fix16(0.11400));
                for y in 0..h {
                    for x in 0..w {
                        let r = p0.data[y * p0.stride + x] as i64;
                        let g = p1.data[y * p1.stride + x] as i64;
                        let b = p2.data[y * p2.stride + x] as i64;
                        out[y * w + x] = ((fr * r + fg * g + fb * b + (1 << 15)) >> 16) as u8;
                    }
                }
            }
            ColorSpace::Cmyk | ColorSpace::Ycck => return None,
        }
        Some(out)
    }
}

fn fix16(x: f64) -> i64 {
    (x * 65536.0 + 0.5) as i64
}

/// libjpeg's YCbCr→RGB lookup tables (16-bit fixed point).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl YccTables {
    fn new() -> Self {
        let mut t = YccTables { cr_r: [0; 256], cb_b: [0; 256], cr_g: [0; 256], cb_g: [0; 256] };
        let half = 1i64 << 15;
        for i in 0..256usize {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix16(1.40200) * x + half) >> 16) as i32;
            t.cb_b[i] = ((fix16(1.77200) * x + half) >> 16) as i32;
            t.cr_g[i] = -fix16(0.71414) * x;
            t.cb_g[i] = -fix16(0.34414) * x + half;
        }
        t
    }

    #[inline]
    fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = y as i32;
        let r = y + self.cr_r[cr as usize];
        let g = y + ((self.cb_g[cb as usize] + self.cr_g[cr as usize]) >> 16) as i32;
        let b = y + self.cb_b[cb as usize];
        [r.clamp(0, 255) as u8, g.clamp(0, 255) as u8, b.clamp(0, 255) as u8]
    }
}
