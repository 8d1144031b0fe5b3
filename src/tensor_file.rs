//! Reading and writing the small safetensors files the CLI exchanges (embeddings, noise, goldens).

use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::BTreeMap;

/// One named tensor to write.
pub enum OutTensor {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
    U8(Vec<usize>, Vec<u8>),
}

/// Serialises tensors to safetensors bytes (little-endian).
pub fn to_bytes(tensors: &BTreeMap<String, OutTensor>) -> Result<Vec<u8>> {
    let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| match t {
            OutTensor::F32(s, v) => {
                (name.clone(), Dtype::F32, s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            OutTensor::I64(s, v) => {
                (name.clone(), Dtype::I64, s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            OutTensor::U8(s, v) => (name.clone(), Dtype::U8, s.clone(), v.clone()),
        })
        .collect();
    let views = raw
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Input(format!("cannot serialise tensors: {e}")))?;
    safetensors::serialize(views, None).map_err(|e| Error::Input(format!("cannot serialise tensors: {e}")))
}

/// Reads tensor `name` of a safetensors file as f32 (from F32, F16, BF16, I64 or U8) with its shape.
pub fn read_f32(bytes: &[u8], name: &str, source_name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::weights(source_name, format!("not a valid safetensors file: {e}")))?;
    let view = st.tensor(name).map_err(|_| Error::weights(source_name, format!("has no tensor `{name}`")))?;
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::U8 => data.iter().map(|&b| b as f32).collect(),
        other => return Err(Error::weights(source_name, format!("tensor `{name}` has unsupported dtype {other:?}"))),
    };
    Ok((view.shape().to_vec(), values))
}

/// Reads an integer tensor (I64) as i64 values.
pub fn read_i64(bytes: &[u8], name: &str, source_name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::weights(source_name, format!("not a valid safetensors file: {e}")))?;
    let view = st.tensor(name).map_err(|_| Error::weights(source_name, format!("has no tensor `{name}`")))?;
    if view.dtype() != Dtype::I64 {
        return Err(Error::weights(source_name, format!("tensor `{name}` is {:?}, not I64", view.dtype())));
    }
    Ok((
        view.shape().to_vec(),
        view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
    ))
}
