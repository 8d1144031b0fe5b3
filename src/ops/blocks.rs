//! ggml's block-quantised formats, kept as stored (GGUF files): a row of a weight matrix is cut into blocks
//! of 32 values, each block one f16 scale `d` and 32 small integers `q`, value = `q · d`.
//!
//! - `Q8_0`: 34 bytes a block: `d` (f16), then 32 `i8` — value `j` is `q[j] · d`.
//! - `Q4_0`: 18 bytes a block: `d` (f16), then 16 bytes of nibbles — value `j < 16` is `(low nibble of byte j
//!   − 8) · d`, value `j ≥ 16` is `(high nibble of byte j − 16 − 8) · d`.
//!
//! These are the layouts of ggml's `block_q8_0` / `block_q4_0` (and candle's `BlockQ8_0` / `BlockQ4_0`), so a
//! file written by llama.cpp's tools or by candle reads here and the reverse. Every value is an integer of at
//! most 8 bits times an f16: exact in f32, so the CPU (candle), the GPU kernels and this host code
//! dequantise to the same f32 whatever the order of operations.

use super::WeightDType;
use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Values per block of both formats.
pub const BLOCK_VALUES: usize = 32;

/// Bytes of one block.
pub const fn block_bytes(q4: bool) -> usize {
    if q4 {
        18
    } else {
        34
    }
}

fn scale(block: &[u8]) -> f32 {
    half::f16::from_le_bytes([block[0], block[1]]).to_f32()
}

/// Appends the values of whole `Q8_0` blocks to `out`.
pub fn dequantize_q8_0(raw: &[u8], out: &mut Vec<f32>) {
    for block in raw.chunks_exact(block_bytes(false)) {
        let d = scale(block);
        out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
}

/// Appends the values of whole `Q4_0` blocks to `out`.
pub fn dequantize_q4_0(raw: &[u8], out: &mut Vec<f32>) {
    for block in raw.chunks_exact(block_bytes(true)) {
        let d = scale(block);
        let qs = &block[2..];
        out.extend(qs.iter().map(|&b| f32::from((b & 0x0f) as i8 - 8) * d));
        out.extend(qs.iter().map(|&b| f32::from((b >> 4) as i8 - 8) * d));
    }
}

/// The 32 values of one block of `dtype` (`Q8_0` or `Q4_0`; as [`dequantize_q8_0`] / [`dequantize_q4_0`]).
pub fn dequantize_block(q4: bool, block: &[u8], out: &mut [f32; BLOCK_VALUES]) {
    let d = scale(block);
    let qs = &block[2..];
    if q4 {
        for (j, &b) in qs.iter().enumerate() {
            out[j] = f32::from((b & 0x0f) as i8 - 8) * d;
            out[j + BLOCK_VALUES / 2] = f32::from((b >> 4) as i8 - 8) * d;
        }
    } else {
        for (o, &q) in out.iter_mut().zip(qs) {
            *o = f32::from(q as i8) * d;
        }
    }
}

/// Whether a weight of `shape` can be stored in a block type: a matrix (or a conv kernel, rows = output
/// channels) whose rows — everything after the first dimension — are whole blocks.
pub fn can_quantize(shape: &[usize]) -> bool {
    shape.len() >= 2 && shape.iter().skip(1).product::<usize>().is_multiple_of(BLOCK_VALUES)
}

/// ggml's dtype for a block type.
pub fn ggml_dtype(dtype: WeightDType) -> Result<GgmlDType> {
    match dtype {
        WeightDType::Q8_0 => Ok(GgmlDType::Q8_0),
        WeightDType::Q4_0 => Ok(GgmlDType::Q4_0),
        other => Err(Error::Backend(format!("{} is not a block type", other.name()))),
    }
}

/// `values` of a weight of `shape` in a block type, row by row (the row is everything after the first
/// dimension), by candle's port of ggml's reference quantisers (`quantize_row_q8_0`: `d = max|x| / 127`,
/// `q = round(x / d)`; `quantize_row_q4_0`: `d = x_m / −8` for the `x_m` of largest magnitude, `q = x/d + 8`
/// truncated into 0..=15), so the bytes are what llama.cpp's tools would write.
pub fn quantize(dtype: WeightDType, values: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    if !can_quantize(shape) || values.len() != shape.iter().product::<usize>() {
        return Err(Error::Backend(format!(
            "cannot quantise {} values of shape {shape:?} to {}: rows must be whole blocks of {BLOCK_VALUES}",
            values.len(),
            dtype.name()
        )));
    }
    let matrix = Tensor::from_slice(values, (shape[0], shape[1..].iter().product::<usize>()), &Device::Cpu)?;
    Ok(QTensor::quantize(&matrix, ggml_dtype(dtype)?)?.data()?.into_owned())
}

/// Cosine similarity of two vectors, in f64 (how quantised results are compared with the originals).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// How many blocks have a scale that is NaN or ±∞ (every value of such a block is), and the index of the first.
pub fn non_finite_scales(raw: &[u8], block: usize) -> (usize, Option<usize>) {
    let mut count = 0;
    let mut first = None;
    for (i, b) in raw.chunks_exact(block).enumerate() {
        if u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00 {
            count += 1;
            first.get_or_insert(i);
        }
    }
    (count, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(d: f32, qs: &[u8]) -> Vec<u8> {
        let mut b = half::f16::from_f32(d).to_le_bytes().to_vec();
        b.extend_from_slice(qs);
        b
    }

    #[test]
    fn q8_0_values_are_signed_bytes_times_the_scale() {
        let qs: Vec<u8> = (0..32).map(|j| (j as i8 - 16) as u8).collect();
        let mut out = Vec::new();
        dequantize_q8_0(&block(0.5, &qs), &mut out);
        assert_eq!(out, (0..32).map(|j| (j - 16) as f32 * 0.5).collect::<Vec<_>>());
    }

    #[test]
    fn q4_0_puts_low_nibbles_first_and_high_nibbles_second() {
        // Byte j holds value j in its low nibble and value j + 16 in its high nibble.
        let qs: Vec<u8> = (0..16).map(|j| (j as u8) | ((15 - j as u8) << 4)).collect();
        let mut out = Vec::new();
        dequantize_q4_0(&block(2.0, &qs), &mut out);
        let low: Vec<f32> = (0..16).map(|j| (j - 8) as f32 * 2.0).collect();
        let high: Vec<f32> = (0..16).map(|j| (15 - j - 8) as f32 * 2.0).collect();
        assert_eq!(out[..16], low[..]);
        assert_eq!(out[16..], high[..]);
    }

    #[test]
    fn a_block_with_an_infinite_scale_is_reported() {
        let mut raw = block(1.0, &[0; 32]);
        raw.extend(block(f32::INFINITY, &[0; 32]));
        assert_eq!(non_finite_scales(&raw, 34), (1, Some(1)));
    }
}
