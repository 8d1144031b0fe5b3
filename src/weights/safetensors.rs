//! The safetensors header, parsed from its own bytes so the data can then be fetched tensor by tensor.
//!
//! The `safetensors` crate validates a whole in-memory file (`SafeTensors::read_metadata`); here only the
//! header is in hand, so its checks are repeated against the file's length, each error naming the file and
//! the tensor: the length prefix at most 100 MB and inside the file; the header UTF-8 JSON whose
//! `__metadata__` maps strings to strings; every dtype known; `shape × dtype size` equal to the tensor's byte
//! length (without overflow); and the data ranges, sorted by offset, tiling the data section exactly —
//! the first starting at 0, each starting where the previous one ends (no gap, no overlap), the last ending
//! at the end of the file. A length prefix one byte short or a shifted range therefore fails here instead of
//! loading shifted (meaningless) weights.
//!
//! [`parse_header`] and [`header_from_bytes`] are pure (bytes in, `Result` out, never a panic): the fuzz
//! targets call them.

use super::files::ByteSource;
use crate::error::{Error, Result};
use crate::ops::WeightDType;
use std::collections::BTreeMap;

/// Largest header accepted: the `safetensors` crate's `MAX_HEADER_SIZE` (real headers are a few hundred KiB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes of the little-endian header length that starts every safetensors file.
const LENGTH_PREFIX: u64 = 8;

#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: WeightDType,
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub struct Header {
    pub source_name: String,
    /// The float tensors, in the order the header's JSON lists them by name.
    pub tensors: Vec<TensorEntry>,
    /// Tensors of types the engine does not compute with (e.g. int64 `position_ids` buffers): name → dtype.
    pub skipped: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: ::safetensors::Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Reads and validates the header of a safetensors file (see the module's documentation for the checks).
pub async fn read_header(src: &impl ByteSource) -> Result<Header> {
    let name = src.name();
    let file_len = src.len().await?;
    if file_len < LENGTH_PREFIX {
        return Err(not_safetensors(&name, file_len));
    }
    let prefix = src.read_range(0, LENGTH_PREFIX as usize).await?;
    let header_len = header_length(&name, &prefix, file_len)?;
    let json = src.read_range(LENGTH_PREFIX, header_len).await?;
    parse_header(&name, &json, file_len)
}

/// The header of a whole safetensors file held in memory (the same checks as [`read_header`]).
pub fn header_from_bytes(name: &str, file: &[u8]) -> Result<Header> {
    let file_len = file.len() as u64;
    let Some(prefix) = file.get(..LENGTH_PREFIX as usize) else {
        return Err(not_safetensors(name, file_len));
    };
    let header_len = header_length(name, prefix, file_len)?;
    parse_header(name, &file[LENGTH_PREFIX as usize..LENGTH_PREFIX as usize + header_len], file_len)
}

fn not_safetensors(name: &str, file_len: u64) -> Error {
    Error::weights(name, format!("not a safetensors file: {file_len} bytes, shorter than the 8-byte header length"))
}

/// The header length the 8-byte `prefix` gives, checked against the limit and the file's length.
fn header_length(name: &str, prefix: &[u8], file_len: u64) -> Result<usize> {
    let bytes: [u8; 8] =
        prefix.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| not_safetensors(name, file_len))?;
    let header_len = u64::from_le_bytes(bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::weights(
            name,
            format!("corrupt safetensors: the header length is {header_len} bytes, more than the {MAX_HEADER_BYTES} allowed"),
        ));
    }
    if LENGTH_PREFIX + header_len > file_len {
        return Err(Error::weights(
            name,
            format!("corrupt or truncated safetensors: header claims {header_len} bytes but the file has {file_len}"),
        ));
    }
    Ok(header_len as usize)
}

/// Parses and validates header JSON (without the 8-byte prefix) for a file of `file_len` bytes.
pub fn parse_header(name: &str, json: &[u8], file_len: u64) -> Result<Header> {
    let data_start = LENGTH_PREFIX + json.len() as u64;
    let Some(data_len) = file_len.checked_sub(data_start) else {
        return Err(Error::weights(
            name,
            format!("corrupt safetensors: a {}-byte header does not fit in {file_len} bytes", json.len()),
        ));
    };
    let text =
        std::str::from_utf8(json).map_err(|e| Error::weights(name, format!("safetensors header is not UTF-8: {e}")))?;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| Error::weights(name, format!("safetensors header is not a valid JSON object: {e}")))?;
    let mut entries = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key == "__metadata__" {
            serde_json::from_value::<BTreeMap<String, String>>(value).map_err(|e| {
                Error::weights(name, format!("safetensors `__metadata__` must map strings to strings: {e}"))
            })?;
            continue;
        }
        let raw: RawEntry = serde_json::from_value(value)
            .map_err(|e| Error::weights(name, format!("tensor `{key}`: malformed header entry: {e}")))?;
        let (begin, end) = raw.data_offsets;
        if begin > end || end > data_len {
            return Err(Error::weights(
                name,
                format!(
                    "tensor `{key}`: data offsets {begin}..{end} lie outside the {data_len} data bytes \
                     (header lies or file truncated)"
                ),
            ));
        }
        let bits = raw
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(raw.dtype.bitsize()));
        let expected = bits.filter(|b| b % 8 == 0).map(|b| (b / 8) as u64);
        if expected != Some(end - begin) {
            return Err(Error::weights(
                name,
                format!(
                    "tensor `{key}`: shape {:?} in {:?} needs {} bytes but its offsets span {}",
                    raw.shape,
                    raw.dtype,
                    match bits {
                        None => "too many".to_string(),
                        Some(b) if b % 8 != 0 => format!("{b} bits, not whole"),
                        Some(b) => (b / 8).to_string(),
                    },
                    end - begin
                ),
            ));
        }
        entries.push((key, raw));
    }
    check_tiling(name, &entries, data_len)?;
    let mut tensors = Vec::new();
    let mut skipped = BTreeMap::new();
    for (key, raw) in entries {
        let dtype = match raw.dtype {
            ::safetensors::Dtype::F32 => WeightDType::F32,
            ::safetensors::Dtype::F16 => WeightDType::F16,
            ::safetensors::Dtype::BF16 => WeightDType::BF16,
            other => {
                skipped.insert(key, format!("{other:?}"));
                continue;
            }
        };
        let (begin, end) = raw.data_offsets;
        // `end - begin` equals the shape's byte size, which fitted a usize above.
        tensors.push(TensorEntry {
            name: key,
            dtype,
            shape: raw.shape,
            offset: data_start + begin,
            len: (end - begin) as usize,
        });
    }
    Ok(Header { source_name: name.to_string(), tensors, skipped })
}

/// The `safetensors` crate's `Metadata::validate` and its end-of-buffer check: sorted by offsets, the ranges
/// start at 0, follow each other without gap or overlap, and end exactly at the end of the data section.
fn check_tiling(name: &str, entries: &[(String, RawEntry)], data_len: u64) -> Result<()> {
    let mut order: Vec<&(String, RawEntry)> = entries.iter().collect();
    order.sort_by_key(|(key, raw)| (raw.data_offsets, key.as_str()));
    let mut previous: Option<(&str, u64, u64)> = None;
    for (key, raw) in order {
        let (begin, end) = raw.data_offsets;
        let expected = previous.map_or(0, |(_, _, e)| e);
        if begin != expected {
            let what = match previous {
                None => format!("the first tensor's data starts at byte {begin}, not 0"),
                Some((p, pb, pe)) if begin < pe => format!("they overlap tensor `{p}` ({pb}..{pe})"),
                Some((p, pb, pe)) => format!("they leave {} unused bytes after tensor `{p}` ({pb}..{pe})", begin - pe),
            };
            return Err(Error::weights(
                name,
                format!("tensor `{key}`: data offsets {begin}..{end} do not follow on from the previous tensor: {what} (corrupt header)"),
            ));
        }
        previous = Some((key, begin, end));
    }
    let end = previous.map_or(0, |(_, _, e)| e);
    if end != data_len {
        let last = previous.map_or("no tensor".to_string(), |(k, _, _)| format!("the last, `{k}`,"));
        return Err(Error::weights(
            name,
            format!(
                "corrupt safetensors: the tensors' data ends at byte {end} ({last}) but the file has {data_len} data bytes \
                 after its header (a wrong header length or extra bytes)"
            ),
        ));
    }
    Ok(())
}

/// How many values of a tensor's raw little-endian bytes are NaN or ±∞, and the index of the first (for the
/// block types: every value of a block whose scale is non-finite).
pub fn non_finite(raw: &[u8], dtype: WeightDType) -> (usize, Option<usize>) {
    // A float is non-finite exactly when its exponent bits are all ones.
    fn scan<const N: usize>(raw: &[u8], is_bad: impl Fn([u8; N]) -> bool) -> (usize, Option<usize>) {
        let mut count = 0;
        let mut first = None;
        for (i, c) in raw.chunks_exact(N).enumerate() {
            if is_bad(c.try_into().expect("chunks of N")) {
                count += 1;
                first.get_or_insert(i);
            }
        }
        (count, first)
    }
    match dtype {
        WeightDType::F32 => scan::<4>(raw, |b| u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000),
        WeightDType::F16 => scan::<2>(raw, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
        WeightDType::BF16 => scan::<2>(raw, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
        // A block's values are its integers times its f16 scale: non-finite exactly when the scale is.
        WeightDType::Q8_0 | WeightDType::Q4_0 => {
            let (blocks, first) = crate::ops::blocks::non_finite_scales(raw, dtype.block_bytes());
            (blocks * dtype.block_values(), first.map(|b| b * dtype.block_values()))
        }
    }
}

/// An error when a tensor's raw bytes hold a NaN or an infinity (weights that would turn every result into
/// NaN); the caller names the file and the tensor.
pub fn check_finite(raw: &[u8], dtype: WeightDType) -> Result<()> {
    match non_finite(raw, dtype) {
        (0, _) => Ok(()),
        (count, first) => Err(Error::Input(format!(
            "{count} of its {} values are NaN or infinite (the first at index {}): the weights are corrupt",
            raw.len() / dtype.block_bytes() * dtype.block_values(),
            first.unwrap_or(0)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file: `entries` are (name, dtype, shape, begin, end) written verbatim into the header.
    fn file(entries: &[(&str, &str, &[usize], u64, u64)], data_len: usize) -> Vec<u8> {
        let mut json = serde_json::Map::new();
        for (n, dtype, shape, b, e) in entries {
            json.insert((*n).into(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [b, e]}));
        }
        let text = serde_json::Value::Object(json).to_string().into_bytes();
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend(text);
        out.extend(vec![0u8; data_len]);
        out
    }

    fn err(bytes: &[u8]) -> String {
        header_from_bytes("w.safetensors", bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_tiled_file_parses() {
        let h = header_from_bytes(
            "w",
            &file(&[("a", "F32", &[2], 0, 8), ("b", "I64", &[1], 8, 16), ("c", "F16", &[0], 16, 16)], 16),
        )
        .unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!((h.tensors[0].name.as_str(), h.tensors[1].offset - h.tensors[0].offset), ("a", 16));
        assert_eq!(h.skipped.get("b").map(String::as_str), Some("I64"));
    }

    #[test]
    fn gaps_overlaps_and_a_wrong_start_or_end_name_the_tensor() {
        let e = err(&file(&[("a", "F32", &[2], 0, 8), ("b", "F32", &[2], 4, 12)], 12));
        assert!(e.contains("`b`") && e.contains("overlap tensor `a`"), "{e}");
        let e = err(&file(&[("a", "F32", &[2], 0, 8), ("b", "F32", &[2], 9, 17)], 17));
        assert!(e.contains("`b`") && e.contains("1 unused bytes"), "{e}");
        let e = err(&file(&[("a", "F32", &[2], 4, 12)], 12));
        assert!(e.contains("`a`") && e.contains("not 0"), "{e}");
        let e = err(&file(&[("a", "F32", &[2], 0, 8)], 9));
        assert!(e.contains("`a`") && e.contains("9 data bytes"), "{e}");
    }

    #[test]
    fn shape_times_dtype_must_equal_the_byte_length_for_every_dtype() {
        let e = err(&file(&[("ids", "I64", &[3], 0, 16)], 16));
        assert!(e.contains("`ids`") && e.contains("needs 24 bytes"), "{e}");
        let e = err(&file(&[("huge", "F32", &[usize::MAX, 2], 0, 8)], 8));
        assert!(e.contains("too many"), "{e}");
        let e = err(&file(&[("x", "Q4", &[2], 0, 8)], 8));
        assert!(e.contains("`x`") && e.contains("malformed"), "{e}");
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        assert!(err(&[1, 2, 3]).contains("not a safetensors file"));
        assert!(err(&u64::MAX.to_le_bytes()).contains("more than"));
        assert!(err(&100u64.to_le_bytes()).contains("header claims 100"));
        assert!(parse_header("w", b"{}", 3).is_err());
        let mut bad_utf8 = 4u64.to_le_bytes().to_vec();
        bad_utf8.extend([b'{', 0xff, b'}', b' ']);
        assert!(err(&bad_utf8).contains("UTF-8"));
        let meta = file(&[], 0);
        assert!(header_from_bytes("w", &meta).unwrap().tensors.is_empty());
    }

    #[test]
    fn non_finite_values_are_counted_in_every_dtype() {
        let f32s: Vec<u8> = [1.0f32, f32::NAN, f32::INFINITY, -0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(non_finite(&f32s, WeightDType::F32), (2, Some(1)));
        let f16s: Vec<u8> =
            [1.0f32, 65504.0, f32::NEG_INFINITY].iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(non_finite(&f16s, WeightDType::F16), (1, Some(2)));
        let bf16s: Vec<u8> = [f32::NAN, 3e38].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(non_finite(&bf16s, WeightDType::BF16), (1, Some(0)));
        assert!(check_finite(&f32s, WeightDType::F32).unwrap_err().to_string().contains("2 of its 4 values"));
    }
}
