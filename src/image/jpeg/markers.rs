//! Marker segments: SOI to EOI, the frame header (SOF, with the memory budget), tables (DHT, DQT, DRI) and
//! colour-space markers (JFIF, Adobe); each SOS hands its scan to [`super::entropy`].

use super::entropy::decode_scan;
use super::huffman::{find_marker, Huffman};
use super::idct::idct_component;
use super::{err, Budget, ColorSpace, Component, Frame, Tables, NATURAL};
use crate::error::Result;

/// Each scan walks every block of its components, so a hostile file with very many scans could keep the
/// decoder busy for a long time; real progressive files have about 10.
const MAX_SCANS: usize = 1000;

fn read_u16(data: &[u8], pos: usize) -> Result<usize> {
    match (data.get(pos), data.get(pos + 1)) {
        (Some(&a), Some(&b)) => Ok(((a as usize) << 8) | b as usize),
        _ => Err(err("truncated file (marker segment)")),
    }
}

/// The payload of the marker segment whose length field starts at `pos`, and the position after it.
fn segment(data: &[u8], pos: usize) -> Result<(&[u8], usize)> {
    let len = read_u16(data, pos)?;
    if len < 2 {
        return Err(err("bad marker segment length"));
    }
    let end = pos + len;
    if end > data.len() {
        return Err(err("truncated file (marker segment)"));
    }
    Ok((&data[pos + 2..end], end))
}

pub(super) fn decode_frame(data: &[u8], budget: &Budget) -> Result<Option<Frame>> {
    let luma_only = budget.luma_only;
    if data.len() < 2 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(err("not a JPEG file (no SOI marker)"));
    }
    let mut t = Tables {
        quant: [None; 4],
        dc: [None, None, None, None],
        ac: [None, None, None, None],
        restart_interval: 0,
        saw_jfif: false,
        adobe_transform: None,
    };
    let mut frame: Option<Frame> = None;
    let mut scans = 0usize;
    let mut saw_eoi = false;
    let mut pos = 2usize;
    // A sequential file that ends without EOI after all its components were coded is accepted (libjpeg fakes
    // the EOI; Pillow reports "truncated" unless ImageFile.LOAD_TRUNCATED_IMAGES, then gives these pixels).
    // Any other early end of file is an error (checked after the loop).
    while let Some((mpos, marker)) = find_marker(data, pos) {
        pos = mpos + 2;
        match marker {
            0xD8 => return Err(err("duplicate SOI marker")),
            0xD9 => {
                saw_eoi = true;
                break;
            }
            0xD0..=0xD7 | 0x01 => {}
            0xC0..=0xC2 => {
                let (seg, next) = segment(data, pos)?;
                pos = next;
                if frame.is_some() {
                    return Err(err("more than one SOF marker"));
                }
                match parse_sof(seg, marker == 0xC2, budget)? {
                    Some(f) => frame = Some(f),
                    None => return Ok(None),
                }
            }
            // lossless, hierarchical, arithmetic-coded: not handled here
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(None),
            0xC4 => {
                let (seg, next) = segment(data, pos)?;
                pos = next;
                parse_dht(seg, &mut t)?;
            }
            0xDB => {
                let (seg, next) = segment(data, pos)?;
                pos = next;
                parse_dqt(seg, &mut t)?;
            }
            0xDD => {
                let (seg, next) = segment(data, pos)?;
                pos = next;
                if seg.len() < 2 {
                    return Err(err("bad DRI marker"));
                }
                t.restart_interval = ((seg[0] as usize) << 8) | seg[1] as usize;
            }
            0xE0 => {
                let (seg, next) = segment(data, pos)?;
                pos = next;
                if seg.len() >= 14 && seg.starts_with(b"JFIF\0") {
                    t.saw_jfif = true;
                }
            }
            0xEE => {
                let (seg, next) = segment(data, pos)?;
                pos = next;
                if seg.len() >= 12 && seg.starts_with(b"Adobe") {
                    t.adobe_transform = Some(seg[11]);
                }
            }
            0xDA => {
                let (seg, next) = segment(data, pos)?;
                let Some(f) = frame.as_mut() else { return Err(err("SOS before SOF")) };
                match decode_scan(data, next, seg, f, &t)? {
                    Some(after) => pos = after,
                    None => return Ok(None),
                }
                scans += 1;
                if scans > MAX_SCANS {
                    return Err(err(format!("more than {MAX_SCANS} scans")));
                }
            }
            0xC8 | 0xCC | 0xDC | 0xDE | 0xDF | 0xE1..=0xED | 0xEF..=0xFE => {
                let (_, next) = segment(data, pos)?;
                pos = next;
            }
            _ => return Err(err(format!("unknown marker 0x{marker:02X}"))),
        }
    }
    let Some(mut f) = frame else { return Err(err("no SOF marker")) };
    if scans == 0 {
        return Err(err("no image data (no SOS marker)"));
    }
    if !saw_eoi && (f.progressive || f.comps.iter().any(|c| c.quant.is_none())) {
        // The file ends before EOI with scans still to come.
        return Err(err("truncated file (no EOI marker)"));
    }
    f.color = match f.comps.len() {
        1 => ColorSpace::Gray,
        3 => {
            if t.saw_jfif {
                ColorSpace::YCbCr
            } else if let Some(tr) = t.adobe_transform {
                if tr == 0 {
                    ColorSpace::Rgb
                } else {
                    ColorSpace::YCbCr
                }
            } else {
                let ids = (f.comps[0].id, f.comps[1].id, f.comps[2].id);
                if ids == (82, 71, 66) {
                    ColorSpace::Rgb
                } else {
                    ColorSpace::YCbCr
                }
            }
        }
        _ => match t.adobe_transform {
            Some(0) => ColorSpace::Cmyk,
            Some(_) => ColorSpace::Ycck,
            None => ColorSpace::Cmyk,
        },
    };
    if f.progressive {
        // libjpeg smooths blocks whose first AC coefficients are not fully known (block smoothing);
        // that is not reproduced here.
        for c in &f.comps {
            let Some(q) = c.quant else { continue };
            let nonzero_q = [0usize, 1, 8, 16, 9, 2, 3, 10, 17, 24].iter().all(|&i| q[i] != 0);
            if nonzero_q && c.coef_bits[0] >= 0 && c.coef_bits[1..10].iter().any(|&b| b != 0) {
                return Ok(None);
            }
        }
    }
    let needed: Vec<bool> = (0..f.comps.len()).map(|ci| !luma_only || ci == 0 || f.color == ColorSpace::Rgb).collect();
    if luma_only && matches!(f.color, ColorSpace::Cmyk | ColorSpace::Ycck) {
        return Ok(None);
    }
    // Each component's coefficients are freed once its plane exists (the peak `peak_bytes` assumes).
    f.planes = f
        .comps
        .iter_mut()
        .zip(&needed)
        .map(|(c, &need)| {
            let plane = need.then(|| idct_component(c));
            c.coefs = Vec::new();
            plane
        })
        .collect();
    Ok(Some(f))
}

fn parse_sof(seg: &[u8], progressive: bool, budget: &Budget) -> Result<Option<Frame>> {
    if seg.len() < 6 {
        return Err(err("bad SOF marker"));
    }
    let precision = seg[0];
    let height = ((seg[1] as usize) << 8) | seg[2] as usize;
    let width = ((seg[3] as usize) << 8) | seg[4] as usize;
    let nc = seg[5] as usize;
    if seg.len() < 6 + 3 * nc {
        return Err(err("bad SOF marker (too short)"));
    }
    if precision != 8 {
        return Ok(None);
    }
    if !(nc == 1 || nc == 3 || nc == 4) {
        return Ok(None);
    }
    if height == 0 {
        return Ok(None); // height given by a DNL marker
    }
    if width == 0 {
        return Err(err("image width is zero"));
    }
    // The side and pixel limits first: they bound the figures `peak_bytes` multiplies.
    budget.limits.check("JPEG image", width as u64, height as u64, 0)?;
    let mut raw = Vec::with_capacity(nc);
    for i in 0..nc {
        let id = seg[6 + 3 * i];
        let hv = seg[7 + 3 * i];
        let tq = seg[8 + 3 * i] as usize;
        let (h, v) = ((hv >> 4) as usize, (hv & 15) as usize);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Ok(None);
        }
        if tq > 3 {
            return Err(err("bad quantization table index"));
        }
        raw.push((id, h, v, tq));
    }
    let max_h = raw.iter().map(|r| r.1).max().unwrap_or(1);
    let max_v = raw.iter().map(|r| r.2).max().unwrap_or(1);
    if raw.iter().any(|r| max_h % r.1 != 0 || max_v % r.2 != 0) {
        return Ok(None); // fractional sampling ratios
    }
    let mcux = width.div_ceil(8 * max_h);
    let mcuy = height.div_ceil(8 * max_v);
    let padded: Vec<(usize, usize, u64)> =
        raw.iter().map(|r| (r.1, r.2, (mcux * r.1 * 8) as u64 * (mcuy * r.2 * 8) as u64)).collect();
    let peak = peak_bytes(&padded, (max_h, max_v), width as u64 * height as u64, budget);
    budget.limits.check("JPEG image", width as u64, height as u64, peak)?;
    let comps = raw
        .into_iter()
        .map(|(id, h, v, tq)| {
            let bw = mcux * h;
            let bh = mcuy * v;
            Component {
                id,
                h,
                v,
                tq,
                quant: None,
                bw,
                bh,
                dw: (width * h).div_ceil(max_h),
                dh: (height * v).div_ceil(max_v),
                coefs: vec![0i16; bw * bh * 64],
                coef_bits: [-1; 64],
                dc_pred: 0,
            }
        })
        .collect();
    Ok(Some(Frame {
        width,
        height,
        progressive,
        max_h,
        max_v,
        mcux,
        mcuy,
        comps,
        color: ColorSpace::YCbCr,
        planes: Vec::new(),
    }))
}

/// The most memory a decode holds at once, from the SOF alone: `padded` is each component's (h, v, samples
/// in its MCU-padded coefficient array). Phase 1 (entropy decoding, then the IDCT component by component):
/// every component's coefficients (2 bytes a sample) until its plane (1 byte a sample) is made. Phase 2
/// (upsampling and colour conversion): the planes, a full-size copy of each subsampled plane, the output.
/// Components that a luma decode skips are counted anyway (an upper bound).
fn peak_bytes(padded: &[(usize, usize, u64)], (max_h, max_v): (usize, usize), pixels: u64, budget: &Budget) -> u64 {
    let samples: Vec<u64> = padded.iter().map(|p| p.2).collect();
    let phase1 = (0..samples.len())
        .map(|k| 2 * samples[k..].iter().sum::<u64>() + samples[..=k].iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let upsampled = padded.iter().filter(|p| p.0 != max_h || p.1 != max_v).count() as u64;
    let out = if budget.luma_only { 1 } else { 3 };
    let phase2 = samples.iter().sum::<u64>() + (upsampled + out) * pixels;
    phase1.max(phase2).max(pixels.saturating_mul(budget.then_bytes_per_pixel))
}

fn parse_dht(mut seg: &[u8], t: &mut Tables) -> Result<()> {
    while !seg.is_empty() {
        if seg.len() < 17 {
            return Err(err("bad DHT marker"));
        }
        let tc = seg[0] >> 4;
        let th = (seg[0] & 15) as usize;
        let mut bits = [0u8; 16];
        bits.copy_from_slice(&seg[1..17]);
        let count: usize = bits.iter().map(|&b| b as usize).sum();
        if count > 256 || seg.len() < 17 + count {
            return Err(err("bad DHT marker"));
        }
        if tc > 1 || th > 3 {
            return Err(err("bad DHT table index"));
        }
        let values = &seg[17..17 + count];
        let table = Huffman::build(&bits, values, tc == 0);
        if tc == 0 {
            t.dc[th] = Some(table);
        } else {
            t.ac[th] = Some(table);
        }
        seg = &seg[17 + count..];
    }
    Ok(())
}

fn parse_dqt(mut seg: &[u8], t: &mut Tables) -> Result<()> {
    while !seg.is_empty() {
        let pq = seg[0] >> 4;
        let tq = (seg[0] & 15) as usize;
        if tq > 3 || pq > 1 {
            return Err(err("bad DQT marker"));
        }
        let n = if pq == 0 { 64 } else { 128 };
        if seg.len() < 1 + n {
            return Err(err("bad DQT marker (too short)"));
        }
        let mut q = [0u16; 64];
        for k in 0..64 {
            let v = if pq == 0 { seg[1 + k] as u16 } else { ((seg[1 + 2 * k] as u16) << 8) | seg[2 + 2 * k] as u16 };
            q[NATURAL[k]] = v;
        }
        t.quant[tq] = Some(q);
        seg = &seg[1 + n..];
    }
    Ok(())
}
