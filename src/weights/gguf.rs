//! GGUF files (ggml's format, what `lambda-eclipse quantize` writes): the header parsed into the same
//! [`Header`] as a safetensors file's, so loading, streaming by byte range, caching and progress are one path.
//!
//! The header is parsed by candle's `gguf_file::Content::read`, which bounds every count and length by the
//! bytes it was given. A GGUF header has no length prefix, so it is read from a prefix of the file (1 MiB,
//! then doubled while candle runs out of bytes, up to [`MAX_HEADER_BYTES`]). Then the checks the safetensors
//! reader makes, in GGUF's terms: every type one the engine computes (F32, F16, BF16, Q8_0, Q4_0), a block
//! type's rows whole blocks, each tensor's bytes inside the file, and the tensors, sorted by offset, starting
//! at the data section's start and each at the previous one's end rounded up to the file's alignment (no
//! overlap, no hidden gap), the last ending at the end of the file (or its alignment padding).
//!
//! GGUF stores dimensions innermost first and a block type's innermost dimension must be whole blocks, so a
//! conv kernel `[cout, cin, 3, 3]` is stored as the matrix `[cout, cin·9]`; its PyTorch shape is kept in the
//! metadata key [`SHAPES_KEY`] (JSON: name → shape) and is the shape the engine sees.

use super::files::ByteSource;
use super::safetensors::{Header, TensorEntry};
use crate::error::{Error, Result};
use crate::ops::WeightDType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use std::collections::BTreeMap;

/// Largest header accepted (a bigG tower's is about 100 KB), as for safetensors.
pub const MAX_HEADER_BYTES: u64 = super::safetensors::MAX_HEADER_BYTES;
/// The first read of a header.
const FIRST_READ: u64 = 1 << 20;
/// Metadata key holding the PyTorch shapes of tensors stored flattened to matrices.
pub const SHAPES_KEY: &str = "lambda_eclipse.shapes";
/// GGUF's magic number, the file's first four bytes ("GGUF").
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Reads and validates the header of a GGUF file (see the module's documentation for the checks).
pub async fn read_header(src: &impl ByteSource) -> Result<Header> {
    let name = src.name();
    let file_len = src.len().await?;
    let mut want = FIRST_READ.min(file_len);
    loop {
        let prefix = src.read_range(0, want as usize).await?;
        match parse(&name, &prefix, file_len) {
            Ok(header) => return Ok(header),
            Err(Parse::Corrupt(e)) => return Err(e),
            Err(Parse::Short(e)) if want >= file_len.min(MAX_HEADER_BYTES) => return Err(e),
            Err(Parse::Short(_)) => want = (want * 2).min(file_len).min(MAX_HEADER_BYTES),
        }
    }
}

/// The header of a whole GGUF file held in memory (the same checks as [`read_header`]).
pub fn header_from_bytes(name: &str, file: &[u8]) -> Result<Header> {
    let prefix = &file[..file.len().min(MAX_HEADER_BYTES as usize)];
    parse(name, prefix, file.len() as u64).map_err(|e| match e {
        Parse::Corrupt(e) | Parse::Short(e) => e,
    })
}

enum Parse {
    /// The prefix may have been too short: a longer one may parse.
    Short(Error),
    /// Wrong whatever the length.
    Corrupt(Error),
}

fn parse(name: &str, prefix: &[u8], file_len: u64) -> std::result::Result<Header, Parse> {
    let corrupt = |message: String| Parse::Corrupt(Error::weights(name, message));
    if !prefix.starts_with(MAGIC) {
        return Err(corrupt(format!(
            "not a GGUF file: it does not start with the bytes \"GGUF\" ({} bytes long)",
            file_len
        )));
    }
    let content = Content::read(&mut std::io::Cursor::new(prefix)).map_err(|e| {
        let e = Error::weights(name, format!("corrupt GGUF header: {e}"));
        if (prefix.len() as u64) < file_len {
            Parse::Short(e)
        } else {
            Parse::Corrupt(e)
        }
    })?;
    let alignment = match content.metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.to_u32() {
            Ok(a) if a.is_power_of_two() => a as u64,
            _ => return Err(corrupt(format!("`general.alignment` is {v:?}, not a power of two"))),
        },
    };
    let shapes: BTreeMap<String, Vec<usize>> = match content.metadata.get(SHAPES_KEY) {
        None => BTreeMap::new(),
        Some(Value::String(json)) => serde_json::from_str(json)
            .map_err(|e| corrupt(format!("metadata `{SHAPES_KEY}` is not a JSON map of names to shapes: {e}")))?,
        Some(other) => return Err(corrupt(format!("metadata `{SHAPES_KEY}` must be a string, not {other:?}"))),
    };
    let data_start = content.tensor_data_offset;
    let mut entries = Vec::with_capacity(content.tensor_infos.len());
    for (key, info) in &content.tensor_infos {
        let stored: Vec<usize> = info.shape.dims().to_vec();
        let dtype = match info.ggml_dtype {
            GgmlDType::F32 => WeightDType::F32,
            GgmlDType::F16 => WeightDType::F16,
            GgmlDType::BF16 => WeightDType::BF16,
            GgmlDType::Q8_0 => WeightDType::Q8_0,
            GgmlDType::Q4_0 => WeightDType::Q4_0,
            other => {
                return Err(corrupt(format!(
                    "tensor `{key}` is stored as {other:?}; the engine computes F32, F16, BF16, Q8_0 and Q4_0 \
                     (quantize the original with `lambda-eclipse quantize --type q8_0|q4_m|q4_0`)"
                )))
            }
        };
        let shape = shapes.get(key).cloned().unwrap_or_else(|| stored.clone());
        let numel = stored.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let len = numel.and_then(|n| dtype.bytes_for(n));
        let (Some(numel), Some(len)) = (numel, len) else {
            return Err(corrupt(format!(
                "tensor `{key}`: {stored:?} values of {} are not whole blocks or too many",
                dtype.name()
            )));
        };
        if shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) != Some(numel)
            || (dtype.is_quantized() && shape.first() != stored.first())
        {
            return Err(corrupt(format!(
                "tensor `{key}`: its shape {shape:?} (metadata `{SHAPES_KEY}`) does not match the {stored:?} stored"
            )));
        }
        if dtype.is_quantized() && !crate::ops::blocks::can_quantize(&shape) {
            return Err(corrupt(format!("tensor `{key}`: a {} tensor must be a matrix, not {shape:?}", dtype.name())));
        }
        let offset =
            data_start.checked_add(info.offset).filter(|o| o.checked_add(len as u64).is_some_and(|e| e <= file_len));
        let Some(offset) = offset else {
            return Err(corrupt(format!(
                "tensor `{key}`: its {len} bytes at data offset {} lie outside the {file_len}-byte file (header lies or \
                 file truncated)",
                info.offset
            )));
        };
        entries.push(TensorEntry { name: key.clone(), dtype, shape, offset, len });
    }
    for key in shapes.keys() {
        if !content.tensor_infos.contains_key(key) {
            return Err(corrupt(format!("metadata `{SHAPES_KEY}` names `{key}`, which the file does not hold")));
        }
    }
    entries.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
    check_layout(name, &entries, data_start, alignment, file_len).map_err(Parse::Corrupt)?;
    Ok(Header { source_name: name.to_string(), tensors: entries, skipped: BTreeMap::new() })
}

/// Sorted by offset, each tensor starts where the previous one ends rounded up to `alignment` (the first at
/// the data section's start) and the file ends at the last one's end, or at that rounded up.
fn check_layout(name: &str, entries: &[TensorEntry], data_start: u64, alignment: u64, file_len: u64) -> Result<()> {
    let mut end = data_start;
    let mut previous: Option<&TensorEntry> = None;
    for e in entries {
        let expected = end.next_multiple_of(alignment);
        if e.offset != expected {
            let what = match previous {
                None => format!("the first tensor's data starts at byte {}, not {expected}", e.offset),
                Some(p) if e.offset < end => format!("it overlaps tensor `{}` (bytes {}..{end})", p.name, p.offset),
                Some(p) => format!("it leaves {} unused bytes after tensor `{}`", e.offset - end, p.name),
            };
            return Err(Error::weights(
                name,
                format!("tensor `{}` at byte {}: {what} (corrupt header)", e.name, e.offset),
            ));
        }
        end = e.offset + e.len as u64;
        previous = Some(e);
    }
    if file_len != end && file_len != end.next_multiple_of(alignment) {
        return Err(Error::weights(
            name,
            format!(
                "corrupt GGUF: the tensors' data ends at byte {end} but the file has {file_len} bytes (truncated, or \
                 extra bytes)"
            ),
        ));
    }
    Ok(())
}
