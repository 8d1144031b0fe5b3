//! Entropy decoding of one scan: sequential blocks and the four progressive passes (DC/AC, first/refine).

use super::huffman::{BitReader, Huffman, STD_AC_CHROMA, STD_AC_LUMA, STD_DC_CHROMA, STD_DC_LUMA};
use super::{err, Frame, ScanKind, Tables, NATURAL};
use crate::error::Result;

/// Decodes one scan whose SOS header is `seg` and whose entropy-coded data begins at `start`.
/// Returns the position just after the scan data, or None for an unsupported scan.
pub(super) fn decode_scan(data: &[u8], start: usize, seg: &[u8], f: &mut Frame, t: &Tables) -> Result<Option<usize>> {
    let ns = *seg.first().ok_or_else(|| err("bad SOS marker"))? as usize;
    if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
        return Err(err("bad SOS marker"));
    }
    let mut scomp: Vec<(usize, usize, usize)> = Vec::with_capacity(ns); // (component index, dc tbl, ac tbl)
    for i in 0..ns {
        let id = seg[1 + 2 * i];
        let tables = seg[2 + 2 * i];
        let Some(ci) = f.comps.iter().position(|c| c.id == id) else {
            return Err(err("SOS refers to an unknown component"));
        };
        if scomp.iter().any(|s| s.0 == ci) {
            return Err(err("SOS lists a component twice"));
        }
        scomp.push((ci, (tables >> 4) as usize, (tables & 15) as usize));
    }
    let ss = seg[1 + 2 * ns] as usize;
    let se = seg[2 + 2 * ns] as usize;
    let ah = (seg[3 + 2 * ns] >> 4) as u32;
    let al = (seg[3 + 2 * ns] & 15) as u32;
    let kind = if !f.progressive {
        ScanKind::Sequential
    } else {
        let bad = if ss == 0 { se != 0 } else { se < ss || se > 63 || ns != 1 };
        if bad || al > 13 || (ah != 0 && ah != al + 1) {
            return Err(err("invalid progressive scan parameters"));
        }
        match (ss == 0, ah == 0) {
            (true, true) => ScanKind::DcFirst,
            (true, false) => ScanKind::DcRefine,
            (false, true) => ScanKind::AcFirst,
            (false, false) => ScanKind::AcRefine,
        }
    };
    if ns > 1 {
        let blocks: usize = scomp.iter().map(|s| f.comps[s.0].h * f.comps[s.0].v).sum();
        if blocks > 10 {
            return Ok(None);
        }
    }
    // Latch quantisation tables and resolve Huffman tables.
    let mut dc_tabs: Vec<Option<&Huffman>> = Vec::with_capacity(ns);
    let mut ac_tabs: Vec<Option<&Huffman>> = Vec::with_capacity(ns);
    let std_dc =
        [Huffman::build(&STD_DC_LUMA.0, STD_DC_LUMA.1, true), Huffman::build(&STD_DC_CHROMA.0, STD_DC_CHROMA.1, true)];
    let std_ac = [
        Huffman::build(&STD_AC_LUMA.0, STD_AC_LUMA.1, false),
        Huffman::build(&STD_AC_CHROMA.0, STD_AC_CHROMA.1, false),
    ];
    for &(ci, td, ta) in &scomp {
        let c = &mut f.comps[ci];
        if c.quant.is_none() {
            match t.quant[c.tq] {
                Some(q) => c.quant = Some(q),
                None => return Err(err("missing quantization table")),
            }
        }
        let need_dc = matches!(kind, ScanKind::Sequential | ScanKind::DcFirst);
        let need_ac = matches!(kind, ScanKind::Sequential | ScanKind::AcFirst | ScanKind::AcRefine);
        if td > 3 || ta > 3 {
            return Err(err("bad Huffman table index in SOS"));
        }
        dc_tabs.push(if need_dc { Some(resolve_table(&t.dc[td], td, &std_dc, !f.progressive)?) } else { None });
        ac_tabs.push(if need_ac { Some(resolve_table(&t.ac[ta], ta, &std_ac, !f.progressive)?) } else { None });
    }
    // Progressive bookkeeping (libjpeg's coef_bits).
    if f.progressive {
        for &(ci, _, _) in &scomp {
            let c = &mut f.comps[ci];
            for k in ss..=se {
                c.coef_bits[k] = al as i32;
            }
        }
    }
    for &(ci, _, _) in &scomp {
        f.comps[ci].dc_pred = 0;
    }

    let mut br = BitReader::new(data, start);
    let single = ns == 1;
    let (mx, my) = if single {
        let c = &f.comps[scomp[0].0];
        (c.dw.div_ceil(8), c.dh.div_ceil(8))
    } else {
        (f.mcux, f.mcuy)
    };
    let total = mx * my;
    let restart = t.restart_interval;
    let mut next_rst: u8 = 0;
    let mut eobrun: u32 = 0;
    let mut m = 0;
    while m < total {
        if restart > 0 && m > 0 && m % restart == 0 {
            br.restart(next_rst);
            next_rst = (next_rst + 1) & 7;
            eobrun = 0;
            for &(ci, _, _) in &scomp {
                f.comps[ci].dc_pred = 0;
            }
        }
        if br.overran_eof {
            return Err(err("truncated file (entropy-coded data ends early)"));
        }
        if br.insufficient {
            // libjpeg (decode_mcu, "if we've run out of data, just leave the MCU set to zeroes") leaves every
            // MCU up to the next restart as it is. Jumping there keeps a file of empty scans from costing a pass
            // over the whole image each (a time bomb: 1000 scans × millions of blocks).
            if restart == 0 || br.stuck {
                break;
            }
            m = (m / restart + 1) * restart;
            continue;
        }
        let (mxi, myi) = (m % mx, m / mx);
        for (si, &(ci, _, _)) in scomp.iter().enumerate() {
            let c = &mut f.comps[ci];
            let (nh, nv) = if single { (1, 1) } else { (c.h, c.v) };
            for by in 0..nv {
                for bx in 0..nh {
                    let (row, col) = (myi * nv + by, mxi * nh + bx);
                    let base = (row * c.bw + col) * 64;
                    let Some(block) = c.coefs.get_mut(base..base + 64) else {
                        return Err(err("internal block index out of range"));
                    };
                    let block: &mut [i16; 64] = block.try_into().map_err(|_| err("internal block size"))?;
                    match kind {
                        ScanKind::Sequential => {
                            decode_block_seq(&mut br, block, &mut c.dc_pred, dc_tabs[si], ac_tabs[si])
                        }
                        ScanKind::DcFirst => {
                            if let Some(dc) = dc_tabs[si] {
                                let s = dc.decode(&mut br) as u32;
                                let diff = br.receive_extend(s);
                                c.dc_pred = c.dc_pred.wrapping_add(diff);
                                block[0] = (c.dc_pred.wrapping_shl(al)) as i16;
                            }
                        }
                        ScanKind::DcRefine => {
                            if br.bits(1) != 0 {
                                block[0] |= (1i32 << al) as i16;
                            }
                        }
                        ScanKind::AcFirst => {
                            if let Some(ac) = ac_tabs[si] {
                                decode_ac_first(&mut br, block, ac, ss, se, al, &mut eobrun);
                            }
                        }
                        ScanKind::AcRefine => {
                            if let Some(ac) = ac_tabs[si] {
                                decode_ac_refine(&mut br, block, ac, ss, se, al, &mut eobrun);
                            }
                        }
                    }
                }
            }
        }
        m += 1;
    }
    if br.overran_eof {
        return Err(err("truncated file (entropy-coded data ends early)"));
    }
    Ok(Some(br.pos.min(data.len())))
}

fn resolve_table<'a>(
    slot: &'a Option<std::result::Result<Huffman, &'static str>>,
    idx: usize,
    std: &'a [std::result::Result<Huffman, &'static str>; 2],
    allow_std: bool,
) -> Result<&'a Huffman> {
    match slot {
        Some(Ok(h)) => Ok(h),
        Some(Err(e)) => Err(err(e)),
        None if allow_std && idx < 2 => match &std[idx] {
            Ok(h) => Ok(h),
            Err(e) => Err(err(e)),
        },
        None => Err(err("missing Huffman table")),
    }
}

#[inline]
fn decode_block_seq(
    br: &mut BitReader,
    block: &mut [i16; 64],
    dc_pred: &mut i32,
    dc: Option<&Huffman>,
    ac: Option<&Huffman>,
) {
    let (Some(dc), Some(ac)) = (dc, ac) else { return };
    let s = dc.decode(br) as u32;
    let diff = br.receive_extend(s);
    *dc_pred = dc_pred.wrapping_add(diff);
    block[0] = *dc_pred as i16;
    let mut k = 1usize;
    while k < 64 {
        let rs = ac.decode(br);
        let r = (rs >> 4) as usize;
        let s = (rs & 15) as u32;
        if s != 0 {
            k += r;
            let v = br.receive_extend(s);
            block[NATURAL[k.min(79)]] = v as i16;
            k += 1;
        } else {
            if r != 15 {
                break;
            }
            k += 16;
        }
    }
}

fn decode_ac_first(
    br: &mut BitReader,
    block: &mut [i16; 64],
    ac: &Huffman,
    ss: usize,
    se: usize,
    al: u32,
    eobrun: &mut u32,
) {
    if *eobrun > 0 {
        *eobrun -= 1;
        return;
    }
    let mut k = ss;
    while k <= se {
        let rs = ac.decode(br);
        let r = (rs >> 4) as u32;
        let s = (rs & 15) as u32;
        if s != 0 {
            k += r as usize;
            let v = br.receive_extend(s);
            block[NATURAL[k.min(79)]] = (v.wrapping_shl(al)) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            *eobrun = 1 << r;
            if r != 0 {
                *eobrun += br.bits(r);
            }
            *eobrun -= 1;
            break;
        }
        k += 1;
    }
}

fn decode_ac_refine(
    br: &mut BitReader,
    block: &mut [i16; 64],
    ac: &Huffman,
    ss: usize,
    se: usize,
    al: u32,
    eobrun: &mut u32,
) {
    let p1: i16 = (1i32 << al) as i16;
    let m1: i16 = (-1i32 << al) as i16;
    let mut k = ss;
    let refine = |br: &mut BitReader, coef: &mut i16| {
        if br.bits(1) != 0 && (*coef & p1) == 0 {
            if *coef >= 0 {
                *coef = coef.wrapping_add(p1);
            } else {
                *coef = coef.wrapping_add(m1);
            }
        }
    };
    if *eobrun == 0 {
        while k <= se {
            let rs = ac.decode(br);
            let mut r = (rs >> 4) as i32;
            let s = (rs & 15) as u32;
            let mut newval: i16 = 0;
            if s != 0 {
                newval = if br.bits(1) != 0 { p1 } else { m1 };
            } else if r != 15 {
                *eobrun = 1 << r;
                if r != 0 {
                    *eobrun += br.bits(r as u32);
                }
                break;
            }
            while k <= se {
                let coef = &mut block[NATURAL[k.min(79)]];
                if *coef != 0 {
                    refine(br, coef);
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if newval != 0 {
                block[NATURAL[k.min(79)]] = newval;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= se {
            let coef = &mut block[NATURAL[k.min(79)]];
            if *coef != 0 {
                refine(br, coef);
            }
            k += 1;
        }
        *eobrun -= 1;
    }
}
