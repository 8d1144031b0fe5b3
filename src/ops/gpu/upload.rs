//! Moving bytes between host and device: weights as stored (f32, packed f16) or quantised to int8 rows,
//! split by rows above the binding limit; inputs; and the one readback that submits a recorded forward.

use super::device::MatrixStorage;
use super::pool::PooledBuffer;
use super::tensor::{GpuDType, GpuTensor, Int8Scales, RowChunk};
use super::{backend_err, u32_of, GpuBackend};
use crate::error::Result;
use crate::ops::{Int8Rows, WeightDType};
use std::sync::Arc;

impl GpuBackend {
    /// A new buffer holding `bytes` (zero-padded to 4), filled by `Queue::write_buffer`, which copies straight
    /// from `bytes` (in the browser: from wasm memory). A buffer mapped at creation would first copy them into
    /// a temporary `Vec` of the same size in wasm memory (wgpu's web backend) — twice the largest tensor in
    /// the wasm heap while loading — and keep a shared-memory mapping per buffer in the page's process. The
    /// write is correct for work recorded before the next submit because the buffer is new: queue writes run
    /// before the next submission and nothing recorded earlier can use it (a pooled buffer could not be
    /// written this way). Not pooled: freed when dropped.
    pub(super) fn upload(&self, bytes: &[u8], what: &str) -> Result<PooledBuffer> {
        self.upload_padded(bytes, 0, what)
    }

    /// [`GpuBackend::upload`] into a buffer `extra` bytes longer, those left zero (WebGPU zero-fills new
    /// buffers): a block weight's padding word without a padded copy of the tensor in (wasm) memory.
    fn upload_padded(&self, bytes: &[u8], extra: usize, what: &str) -> Result<PooledBuffer> {
        self.check_binding_size((bytes.len() + extra) as u64, what)?;
        let size = ((bytes.len() + extra).max(4) as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let buffer = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.inner.queue.write_buffer(&buffer, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.inner.queue.write_buffer(&buffer, whole as u64, &tail);
        }
        Ok(PooledBuffer::owned(buffer, &self.inner.recorder.bind_groups))
    }

    /// [`crate::ops::Backend::upload_weight`]: f32 and f16 matrices as stored (or per [`MatrixStorage`]),
    /// vectors and bf16 as f32. Block types (Q8_0, Q4_0) are kept as the file stores them, whatever the
    /// matrix storage asks (they are smaller than f16 and int8 rows): the GEMM dequantises them as it loads
    /// its tiles, other ops get an f32 copy (dequantize_blocks.wgsl).
    pub(super) fn upload_weight_as_stored(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<GpuTensor> {
        dtype.check_bytes(raw.len(), shape)?;
        if dtype.is_quantized() {
            let gpu_dtype = if dtype == WeightDType::Q8_0 { GpuDType::Q8_0 } else { GpuDType::Q4_0 };
            let what = format!("{} weight of shape {shape:?}", dtype.name());
            u32_of(shape.iter().product(), "element count")?;
            // Four zero bytes more: a kernel reading four values at once reads the word after theirs.
            if raw.len() as u64 + 4 <= self.inner.max_tensor_bytes {
                return Ok(GpuTensor::new(self.upload_padded(raw, 4, &what)?, shape, gpu_dtype));
            }
            return self.upload_split(raw, shape, gpu_dtype, &what);
        }
        let numel: usize = shape.iter().product();
        let what = format!("weight of shape {shape:?}");
        if self.matrices == MatrixStorage::Int8 && shape.len() >= 2 {
            return self.upload_int8(&Int8Rows::quantize(&dtype.to_f32(raw), shape[0]), shape, &what);
        }
        let (bytes, gpu_dtype): (std::borrow::Cow<[u8]>, GpuDType) = match dtype {
            WeightDType::F32 if self.matrices == MatrixStorage::F16 && shape.len() >= 2 => {
                let v: Vec<u8> = raw
                    .chunks_exact(4)
                    .flat_map(|c| half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                    .collect();
                (v.into(), GpuDType::F16)
            }
            WeightDType::F32 => (raw.into(), GpuDType::F32),
            WeightDType::F16 if shape.len() >= 2 => (raw.into(), GpuDType::F16),
            WeightDType::F16 => {
                let v: Vec<f32> =
                    raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
                (bytemuck::cast_slice::<f32, u8>(&v).to_vec().into(), GpuDType::F32)
            }
            WeightDType::BF16 => {
                let v: Vec<f32> =
                    raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
                (bytemuck::cast_slice::<f32, u8>(&v).to_vec().into(), GpuDType::F32)
            }
            WeightDType::Q8_0 | WeightDType::Q4_0 => {
                return Err(backend_err(format!("{what}: {} blocks reached the f32 upload", dtype.name())))
            }
        };
        u32_of(numel, "element count")?;
        if bytes.len() as u64 <= self.inner.max_tensor_bytes {
            let buf = self.upload(&bytes, &what)?;
            return Ok(GpuTensor::new(buf, shape, gpu_dtype));
        }
        self.upload_split(&bytes, shape, gpu_dtype, &what)
    }

    /// [`crate::ops::Backend::from_f32`].
    pub(super) fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(backend_err(format!("from_f32: {} values do not fill shape {shape:?}", data.len())));
        }
        u32_of(numel, "element count")?;
        let buf = self.upload(bytemuck::cast_slice(data), "input")?;
        Ok(GpuTensor::new(buf, shape, GpuDType::F32))
    }

    /// Uploads a weight above the binding limit as row chunks of the first dimension, each ≤ the limit.
    /// int8 chunks need no alignment: each chunk's elements are counted from its own start, and its rows'
    /// scales are found from `first_row`.
    fn upload_split(&self, bytes: &[u8], shape: &[usize], dtype: GpuDType, what: &str) -> Result<GpuTensor> {
        let rows = shape.first().copied().unwrap_or(1);
        let row_elems: usize = shape.iter().skip(1).product::<usize>().max(1);
        let row_bytes = dtype.row_bytes(row_elems);
        let max = self.inner.max_tensor_bytes as usize;
        // Block chunks start at a row (their kernels count blocks from there) and get four bytes of padding.
        let room = if dtype.is_blocks() { max.saturating_sub(4) } else { max };
        let mut rows_per_chunk = (room / row_bytes.max(1)).min(rows);
        // Packed f16 chunks must start on a u32 boundary: an even element count per chunk.
        if dtype == GpuDType::F16 && row_elems % 2 == 1 {
            rows_per_chunk -= rows_per_chunk % 2;
        }
        if rows_per_chunk == 0 {
            return Err(backend_err(format!(
                "{what}: one row of {row_bytes} bytes is above the {max}-byte binding limit, so it cannot be split by rows"
            )));
        }
        let mut chunks = Vec::new();
        let mut first_row = 0;
        while first_row < rows {
            let n = rows_per_chunk.min(rows - first_row);
            let part = &bytes[first_row * row_bytes..(first_row + n) * row_bytes];
            let label = format!("{what} rows {first_row}..{}", first_row + n);
            let buf = Arc::new(self.upload_padded(part, if dtype.is_blocks() { 4 } else { 0 }, &label)?);
            chunks.push(RowChunk { first_row, rows: n, buf });
            first_row += n;
        }
        Ok(GpuTensor { buf: chunks[0].buf.clone(), chunks: chunks.into(), shape: shape.to_vec(), dtype, scales: None })
    }

    /// An int8 matrix (split by rows like any weight above the binding limit) and its scales buffer.
    fn upload_int8(&self, quantized: &Int8Rows, shape: &[usize], what: &str) -> Result<GpuTensor> {
        let bytes: &[u8] = bytemuck::cast_slice(&quantized.q);
        let mut t = if bytes.len() as u64 <= self.inner.max_tensor_bytes {
            GpuTensor::new(self.upload(bytes, what)?, shape, GpuDType::I8)
        } else {
            self.upload_split(bytes, shape, GpuDType::I8, what)?
        };
        let row_len = shape[1..].iter().product();
        let buf = self.upload(bytemuck::cast_slice(&quantized.scales), &format!("{what} int8 scales"))?;
        t.scales = Some(Arc::new(Int8Scales { buf, row_len }));
        Ok(t)
    }

    /// [`crate::ops::Backend::read_f32`]: submits everything recorded, copies the tensor (as f32) into a
    /// staging buffer and maps it.
    pub(super) async fn read_back_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let n = t.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let t = self.as_f32(t)?;
        let bytes = (n * 4) as u64;
        let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lambda-eclipse readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record_and_submit(|enc| enc.copy_buffer_to_buffer(&t.buffer().buffer, 0, &staging, 0, bytes));

        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        // Natively the map callback only runs when the device is polled; in the browser this is a no-op and
        // the callback arrives from the event loop while we await.
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| backend_err(format!("waiting for the GPU: {e}")))?;
        let mapped = rx.await;
        self.take_device_error()?;
        match mapped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(backend_err(format!("reading back a tensor: {e}"))),
            Err(_) => return Err(backend_err("reading back a tensor: the mapping was cancelled (device lost?)")),
        }
        let out = {
            let view = staging.get_mapped_range(..).map_err(|e| backend_err(format!("reading back a tensor: {e}")))?;
            view.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        staging.unmap();
        Ok(out)
    }

    /// [`crate::ops::Backend::byte_size`]: the buffers actually allocated (pool buckets and f16 padding
    /// included).
    pub(super) fn allocated_bytes(&self, t: &GpuTensor) -> usize {
        let scales = t.scales.as_ref().map_or(0, |s| s.buf.buffer.size() as usize);
        t.row_chunks().iter().map(|(_, _, b)| b.buffer.size() as usize).sum::<usize>() + scales
    }
}
