//! What a tensor is on the device: a shared buffer (or, for a weight above the binding limit, one buffer per
//! block of rows), its shape and element type, and for int8 the per-row scales. Also the checks every op
//! makes on its operands and the allocation of fresh f32 activations from the pool.

use super::pool::{self, PooledBuffer};
use super::{backend_err, u32_of, GpuBackend};
use crate::error::{DeviceError, Result};
use std::sync::Arc;

/// How a [`GpuTensor`]'s buffer stores its elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuDType {
    F32,
    /// IEEE half floats packed two per u32, element 2i in the low 16 bits.
    F16,
    /// Signed bytes packed four per u32, element 4i in the low byte; value = q · scale of its row
    /// ([`Int8Scales`]).
    I8,
    /// ggml's Q8_0 blocks as the GGUF file stores them (34 bytes per 32 values along each row; the row is
    /// everything after the first dimension). Read by the GEMM and dequantize_blocks.wgsl.
    Q8_0,
    /// ggml's Q4_0 blocks (18 bytes per 32 values), as Q8_0.
    Q4_0,
}

impl GpuDType {
    /// Bytes of one row of `row_elems` elements (whole blocks for the block types).
    pub(super) fn row_bytes(self, row_elems: usize) -> usize {
        match self {
            GpuDType::F32 => 4 * row_elems,
            GpuDType::F16 => 2 * row_elems,
            GpuDType::I8 => row_elems,
            GpuDType::Q8_0 => row_elems / 32 * 34,
            GpuDType::Q4_0 => row_elems / 32 * 18,
        }
    }

    pub(super) fn is_blocks(self) -> bool {
        matches!(self, GpuDType::Q8_0 | GpuDType::Q4_0)
    }
}

/// The per-row scales of an int8 tensor: element e belongs to row e / row_len (fixed at quantisation, so a
/// reshape does not move it).
pub(super) struct Int8Scales {
    pub(super) buf: PooledBuffer,
    pub(super) row_len: usize,
}

/// A tensor on the device: a shared buffer handle, its shape and element type. Cloning is cheap; the buffer
/// goes back to the pool (activations) or is freed (weights) when the last clone drops.
#[derive(Clone)]
pub struct GpuTensor {
    /// The whole tensor, or the first row chunk of a split weight.
    pub(super) buf: Arc<PooledBuffer>,
    /// For a weight above the binding limit: all its row chunks in order (the first is `buf`); else empty.
    pub(super) chunks: Arc<[RowChunk]>,
    pub(super) shape: Vec<usize>,
    pub(super) dtype: GpuDType,
    /// The scales of an int8 tensor (all rows, split or not); `None` for other types.
    pub(super) scales: Option<Arc<Int8Scales>>,
}

/// Rows `first_row .. first_row + rows` (of the first dimension) of a split weight, in their own buffer.
pub struct RowChunk {
    pub(super) first_row: usize,
    pub(super) rows: usize,
    pub(super) buf: Arc<PooledBuffer>,
}

impl GpuTensor {
    pub(super) fn new(buf: PooledBuffer, shape: &[usize], dtype: GpuDType) -> GpuTensor {
        GpuTensor { buf: Arc::new(buf), chunks: Arc::new([]), shape: shape.to_vec(), dtype, scales: None }
    }
    pub fn dtype(&self) -> GpuDType {
        self.dtype
    }
    /// How many buffers hold the tensor (more than one for weights above the binding limit).
    pub fn buffer_count(&self) -> usize {
        self.chunks.len().max(1)
    }
    pub(super) fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Elements per row of the first dimension.
    pub(super) fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    pub(super) fn is_split(&self) -> bool {
        !self.chunks.is_empty()
    }
    pub(super) fn buffer(&self) -> &PooledBuffer {
        &self.buf
    }
    /// `(first_row, rows, buffer)` for each buffer, covering all rows of the first dimension.
    pub(super) fn row_chunks(&self) -> Vec<(usize, usize, &PooledBuffer)> {
        if self.chunks.is_empty() {
            vec![(0, self.shape.first().copied().unwrap_or(1), self.buffer())]
        } else {
            self.chunks.iter().map(|c| (c.first_row, c.rows, &*c.buf)).collect()
        }
    }
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor({:?}, {:?})", self.shape, self.dtype)
    }
}

/// The two dimensions of a rank-2 tensor, or an error naming the op.
pub(super) fn dims2(t: &GpuTensor, op: &str) -> Result<(usize, usize)> {
    match t.shape[..] {
        [r, c] => Ok((r, c)),
        _ => Err(backend_err(format!("{op}: expected a rank-2 tensor, got shape {:?}", t.shape))),
    }
}

impl GpuBackend {
    pub(super) fn check_binding_size(&self, bytes: u64, what: &str) -> Result<()> {
        let limit = self.inner.limits.max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(DeviceError::BindingLimit { what: what.to_string(), bytes, limit }.into());
        }
        Ok(())
    }

    /// A fresh f32 activation of the given shape from the pool (contents undefined until written).
    pub(super) fn alloc_f32(&self, shape: &[usize], what: &str) -> Result<GpuTensor> {
        let numel: usize = shape.iter().product();
        let bytes = (numel.max(1) * 4) as u64;
        self.check_binding_size(bytes, what)?;
        u32_of(numel, "element count")?;
        let buf = pool::take(&self.inner.pool, &self.inner.device, bytes);
        Ok(GpuTensor::new(buf, shape, GpuDType::F32))
    }

    /// Ops other than `linear`, `conv2d` and `gather_rows` read one buffer: a split weight is refused, not misread.
    pub(super) fn check_whole(&self, t: &GpuTensor, op: &str) -> Result<()> {
        if t.is_split() {
            return Err(backend_err(format!(
                "{op}: tensor {:?} is split across {} buffers (above the {}-byte binding limit); only linear, \
                 conv2d and gather_rows read split weights",
                t.shape,
                t.buffer_count(),
                self.inner.max_tensor_bytes
            )));
        }
        Ok(())
    }
}
