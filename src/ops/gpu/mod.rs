//! WebGPU backend: the op layer as WGSL compute kernels through wgpu (WebGPU in the browser, Vulkan, Metal or
//! DX12 natively).
//!
//! Execution model: every op records a compute pass (or a buffer copy) into one pending `CommandEncoder`; the
//! whole forward is submitted at [`Backend::read_f32`], the only async op, which then maps a staging buffer.
//! Nothing else waits on the device.
//!
//! Storage: tensors are flat storage buffers. Activations are f32; weights stay as the file stores them where
//! a kernel can read that directly:
//! - f32 → f32;
//! - f16 matrices (rank ≥ 2) → uploaded as-is, two halves per u32 (element 2i in the low half; an odd count is
//!   padded), read with `unpack2x16float` by `linear`/`matmul`/`gather_rows` and unpacked to f32 on the
//!   device by every other op;
//! - f16 vectors (biases, norm parameters, class embeddings: a negligible share of the bytes) and all bf16
//!   tensors → converted to f32 on the host. bf16 → f32 is exact; keeping bf16 packed (`u32 << 16` unpacking)
//!   is a later step;
//! - through [`Backend::with_int8_weights`], matrices of any float type → int8 quantised per row (output
//!   channel) on the host, four per u32, plus an f32 scale per row in a buffer of its own; the GEMM
//!   dequantises as it loads (`gemm_w_i8.wgsl`), `gather_rows` likewise, every other op dequantises to f32
//!   first (`dequantize_i8.wgsl`).
//!
//! Limits are WebGPU's defaults (clamped to the adapter's where lower), so native runs behave like the
//! browser. One storage binding is at most 128 MiB there, so a larger weight (the f32 token embedding of the
//! bigG text tower is 253 MB) is split by rows into several buffers ([`RowChunk`]); `linear`, `conv2d` and
//! `gather_rows`, the ops that read such weights, run once per chunk. Other ops refuse split tensors clearly.
//!
//! `shader-f16`: where the adapter has it, f16 weights are read as native `f16` by the GEMM's weight reader
//! (`gemm_w_f16*.wgsl`); otherwise through `unpack2x16float` (browsers without the feature).
//!
//! Where things are:
//! - `device.rs` opens the adapter and device ([`GpuOptions`]) and holds what every clone shares;
//! - `tensor.rs` is [`GpuTensor`] (buffer, row chunks, dtype, int8 scales) and the operand checks;
//! - `pool.rs` hands out activation buffers by size and takes them back when the last handle drops;
//! - `upload.rs` moves bytes: weights (as stored, f16, int8, split by rows), inputs, the readback;
//! - `recorder.rs` records dispatches into the pending encoder, with the pipeline, uniform and bind-group
//!   caches;
//! - `kernels/` holds the `.wgsl` files, which files make each kernel variant and what each promises
//!   (`registry.rs`), and every kernel's params struct (`params.rs`), checked against the WGSL by
//!   `tests/kernel_contracts.rs`;
//! - `ops/` is the op layer by family: `gemm` (linear, matmul, conv2d), `attention`, `norm`, `elementwise`
//!   (add, mul, activations, scale-shift, f16/int8 → f32), `layout` (gather, concat, slice, reshape) and
//!   `image` (patches, pooling, resizing); the `Backend` impl below only routes to them.

// wgpu's handles are `Send + Sync` natively but not on wasm32, where they wrap JS objects. One code shares the
// device and buffers through `Arc` in both builds, which keeps the native backend `Send + Sync`; clippy's
// advice (`Rc`, or make the contents `Send + Sync`) applies to the browser build only, single-threaded there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

mod device;
pub mod kernels;
mod ops;
mod pool;
mod recorder;
mod tensor;
mod upload;

pub use super::gpu_options::{GpuOptions, KernelProfile};
pub use device::GpuBackend;
pub use pool::PoolStats;
pub use recorder::BindGroupStats;
pub use tensor::{GpuDType, GpuTensor, RowChunk};

use super::{Activation, Backend, WeightDType};
use crate::error::{Error, Result};
use kernels::Kernel;
use ops::{attention, elementwise, gemm, image, layout, norm};

fn backend_err(msg: impl Into<String>) -> Error {
    Error::Backend(msg.into())
}

/// Converts a size or index to the u32 the kernels use.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| backend_err(format!("{what} = {v} does not fit the kernels' 32-bit indices")))
}

/// The op layer's contract; each op lives with its family in `ops/`.
impl Backend for GpuBackend {
    type Tensor = GpuTensor;

    fn name(&self) -> &'static str {
        "webgpu"
    }

    /// Weight matrices stored in f32 (the real decoder UNet: 5 GB) are kept as f16 on the device (2.5 GB).
    fn with_f16_weights(&self) -> GpuBackend {
        GpuBackend { inner: self.inner.clone(), matrices: device::MatrixStorage::F16 }
    }

    /// Weight matrices as int8 per output channel (the real decoder UNet: 1.26 GB instead of f16's 2.51 GB).
    fn with_int8_weights(&self) -> GpuBackend {
        GpuBackend { inner: self.inner.clone(), matrices: device::MatrixStorage::Int8 }
    }

    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<GpuTensor> {
        self.upload_weight_as_stored(raw, dtype, shape)
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_f32(data, shape)
    }

    fn shape(&self, t: &GpuTensor) -> Vec<usize> {
        t.shape.clone()
    }

    async fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.read_back_f32(t).await
    }

    /// The size of the buffer actually allocated (pool buckets and f16 padding included).
    fn byte_size(&self, t: &GpuTensor) -> usize {
        self.allocated_bytes(t)
    }

    async fn sync(&self) -> Result<()> {
        // A one-value readback submits everything recorded and reports what the device rejected meanwhile.
        let probe = self.from_f32(&[0.0], &[1])?;
        self.read_f32(&probe).await.map(|_| ())
    }

    fn max_activation_bytes(&self) -> Option<u64> {
        let l = &self.inner.limits;
        Some(l.max_storage_buffer_binding_size.min(l.max_buffer_size))
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        gemm::matmul(self, a, b)
    }

    fn linear(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>, act: Activation) -> Result<GpuTensor> {
        gemm::linear(self, x, w, bias, act, None)
    }

    fn linear_residual(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        residual: &GpuTensor,
    ) -> Result<GpuTensor> {
        gemm::linear(self, x, w, bias, Activation::Identity, Some(residual))
    }

    fn layer_norm(&self, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f64) -> Result<GpuTensor> {
        norm::layer_norm(self, x, gamma, beta, eps)
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        heads: usize,
        scale: f32,
        bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        attention::attention(self, q, k, v, heads, scale, bias)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        elementwise::pair(self, Kernel::Add, a, b, "add")
    }

    fn activation(&self, x: &GpuTensor, act: Activation) -> Result<GpuTensor> {
        elementwise::activation(self, x, act)
    }

    fn gather_rows(&self, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
        layout::gather_rows(self, table, ids)
    }

    fn concat_rows(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        layout::concat_rows(self, parts)
    }

    fn slice_rows(&self, x: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
        layout::slice_rows(self, x, start, len)
    }

    fn reshape(&self, x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        layout::reshape(x, shape)
    }

    fn image_patches(&self, image: &GpuTensor, patch: usize) -> Result<GpuTensor> {
        image::image_patches(self, image, patch)
    }

    fn conv2d(
        &self,
        x: &GpuTensor,
        height: usize,
        width: usize,
        weight: &GpuTensor,
        bias: Option<&GpuTensor>,
        kernel: usize,
    ) -> Result<GpuTensor> {
        gemm::conv2d(self, x, height, width, weight, bias, kernel)
    }

    fn group_norm(
        &self,
        x: &GpuTensor,
        groups: usize,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f64,
    ) -> Result<GpuTensor> {
        norm::group_norm(self, x, groups, gamma, beta, eps, Activation::Identity)
    }

    fn group_norm_act(
        &self,
        x: &GpuTensor,
        groups: usize,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f64,
        act: Activation,
    ) -> Result<GpuTensor> {
        norm::group_norm(self, x, groups, gamma, beta, eps, act)
    }

    fn avg_pool_2x2(&self, x: &GpuTensor, height: usize, width: usize) -> Result<GpuTensor> {
        image::avg_pool_2x2(self, x, height, width)
    }

    fn resize_nearest(
        &self,
        x: &GpuTensor,
        height: usize,
        width: usize,
        out_height: usize,
        out_width: usize,
    ) -> Result<GpuTensor> {
        image::resize_nearest(self, x, height, width, out_height, out_width)
    }

    fn concat_cols(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        layout::concat_cols(self, parts)
    }

    fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        elementwise::pair(self, Kernel::Mul, a, b, "mul")
    }

    fn scale_shift(&self, x: &GpuTensor, scale: &GpuTensor, shift: &GpuTensor) -> Result<GpuTensor> {
        elementwise::scale_shift(self, x, scale, shift)
    }
}
