//! The safetensors header, parsed from its own bytes so the data can then be fetched tensor by tensor.
//! (The `safetensors` crate validates a whole in-memory file; here only the header is in hand, and every
//! inconsistency must be reported against the file it came from.)

use super::files::ByteSource;
use crate::error::{Error, Result};
use crate::ops::WeightDType;
use std::collections::BTreeMap;

/// Largest header we accept: real checkpoints have headers of a few hundred KiB.
const MAX_HEADER_BYTES: u64 = 100 << 20;

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
    pub tensors: Vec<TensorEntry>,
    /// Tensors of types the engine does not compute with (e.g. int64 `position_ids` buffers): name → dtype.
    pub skipped: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Reads and validates the header of a safetensors file: the length prefix, the JSON, every tensor's
/// dtype, shape and byte range against the real file length.
pub async fn read_header(src: &impl ByteSource) -> Result<Header> {
    let name = src.name();
    let file_len = src.len().await?;
    if file_len < 8 {
        return Err(Error::weights(&name, format!("not a safetensors file: {file_len} bytes, shorter than the 8-byte header length")));
    }
    let prefix = src.read_range(0, 8).await?;
    let header_len = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(Error::weights(
            &name,
            format!("corrupt or truncated safetensors: header claims {header_len} bytes but the file has {file_len}"),
        ));
    }
    let json = src.read_range(8, header_len as usize).await?;
    parse_header(&name, &json, file_len)
}

/// Parses header JSON (without the 8-byte prefix) for a file of `file_len` bytes.
pub fn parse_header(name: &str, json: &[u8], file_len: u64) -> Result<Header> {
    let data_start = 8 + json.len() as u64;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| Error::weights(name, format!("safetensors header is not valid JSON: {e}")))?;
    let data_len = file_len - data_start;
    let mut tensors = Vec::new();
    let mut skipped = BTreeMap::new();
    for (key, value) in map {
        if key == "__metadata__" {
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
        let dtype = match raw.dtype.as_str() {
            "F32" => WeightDType::F32,
            "F16" => WeightDType::F16,
            "BF16" => WeightDType::BF16,
            other => {
                skipped.insert(key, other.to_string());
                continue;
            }
        };
        let numel = raw.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let expected = numel.and_then(|n| n.checked_mul(dtype.size_in_bytes()));
        if expected != Some((end - begin) as usize) {
            return Err(Error::weights(
                name,
                format!(
                    "tensor `{key}`: shape {:?} in {} needs {} bytes but its offsets span {}",
                    raw.shape,
                    raw.dtype,
                    expected.map_or("too many".to_string(), |n| n.to_string()),
                    end - begin
                ),
            ));
        }
        tensors.push(TensorEntry { name: key, dtype, shape: raw.shape, offset: data_start + begin, len: (end - begin) as usize });
    }
    Ok(Header { source_name: name.to_string(), tensors, skipped })
}
