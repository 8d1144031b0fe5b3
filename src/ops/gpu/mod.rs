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
//! `shader-f16`: where the adapter has it, f16 weights are read as native `f16` by the linear kernel
//! (`linear_f16_native.wgsl`); otherwise through `unpack2x16float` (browsers without the feature).

mod image_ops;
mod pool;

pub use pool::PoolStats;

use super::{Activation, Backend, Int8Rows, WeightDType};
use crate::error::{DeviceError, Error, Result};
use pool::{lock, PooledBuffer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// How a [`GpuTensor`]'s buffer stores its elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuDType {
    F32,
    /// IEEE half floats packed two per u32, element 2i in the low 16 bits.
    F16,
    /// Signed bytes packed four per u32, element 4i in the low byte; value = q · scale of its row
    /// ([`Int8Scales`]).
    I8,
}

impl GpuDType {
    fn size_in_bytes(self) -> usize {
        match self {
            GpuDType::F32 => 4,
            GpuDType::F16 => 2,
            GpuDType::I8 => 1,
        }
    }
}

/// The per-row scales of an int8 tensor: element e belongs to row e / row_len (fixed at quantisation, so a
/// reshape does not move it).
struct Int8Scales {
    buf: PooledBuffer,
    row_len: usize,
}

/// A tensor on the device: a shared buffer handle, its shape and element type. Cloning is cheap; the buffer
/// goes back to the pool (activations) or is freed (weights) when the last clone drops.
#[derive(Clone)]
pub struct GpuTensor {
    /// The whole tensor, or the first row chunk of a split weight.
    buf: Arc<PooledBuffer>,
    /// For a weight above the binding limit: all its row chunks in order (the first is `buf`); else empty.
    chunks: Arc<[RowChunk]>,
    shape: Vec<usize>,
    dtype: GpuDType,
    /// The scales of an int8 tensor (all rows, split or not); `None` for other types.
    scales: Option<Arc<Int8Scales>>,
}

/// Rows `first_row .. first_row + rows` (of the first dimension) of a split weight, in their own buffer.
pub struct RowChunk {
    first_row: usize,
    rows: usize,
    buf: Arc<PooledBuffer>,
}

impl GpuTensor {
    fn new(buf: PooledBuffer, shape: &[usize], dtype: GpuDType) -> GpuTensor {
        GpuTensor { buf: Arc::new(buf), chunks: Arc::new([]), shape: shape.to_vec(), dtype, scales: None }
    }
    pub fn dtype(&self) -> GpuDType {
        self.dtype
    }
    /// How many buffers hold the tensor (more than one for weights above the binding limit).
    pub fn buffer_count(&self) -> usize {
        self.chunks.len().max(1)
    }
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    fn is_split(&self) -> bool {
        !self.chunks.is_empty()
    }
    fn buffer(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }
    /// `(first_row, rows, buffer)` for each buffer, covering all rows of the first dimension.
    fn row_chunks(&self) -> Vec<(usize, usize, &wgpu::Buffer)> {
        if self.chunks.is_empty() {
            vec![(0, self.shape.first().copied().unwrap_or(1), self.buffer())]
        } else {
            self.chunks.iter().map(|c| (c.first_row, c.rows, &c.buf.buffer)).collect()
        }
    }
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor({:?}, {:?})", self.shape, self.dtype)
    }
}

/// The compute kernels, one WGSL file each (plus shared pieces prepended, WGSL having no includes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kernel {
    /// The tiled GEMM (gemm_params.wgsl) for one way of reading the weight, one way of reading the input and
    /// one tiling.
    Gemm(GemmWeight, GemmInput, GemmTile),
    LayerNorm,
    Attention,
    Add,
    Activation,
    GatherRows,
    UnpackF16,
    DequantizeI8,
    ImagePatches,
    SoftmaxRows,
    GroupNorm,
    Mul,
    ScaleShift,
    AvgPool2x2,
    ResizeNearest,
    CopyCols,
}

/// How the tiled GEMM reads its right operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum GemmWeight {
    F32,
    /// f16 packed two per u32, unpacked with `unpack2x16float` (every adapter).
    F16Packed,
    /// f16 read as WGSL `f16` (adapters with `shader-f16`).
    F16Native,
    /// int8 four per u32 with per-row scales, dequantised in the load.
    Int8,
}

/// The GEMM's output tile per workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum GemmTile {
    /// 64×64, 4×4 per thread: small outputs.
    T64,
    /// 128×128, 8×8 per thread: both output dimensions ≥ 128.
    T128,
}

/// How the tiled GEMM reads its left operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum GemmInput {
    /// A strided view of a row-major matrix.
    Dense,
    /// The same, four consecutive k at a time (and the weight likewise): only where k, strides and offsets
    /// are multiples of 4 and the weight is linear-layout.
    DenseVec4,
    /// Implicit im2col of a channels-last image (conv2d).
    Conv,
}

const ACTIVATION_FNS: &str = include_str!("kernels/activation_fns.wgsl");
const GEMM_PARAMS: &str = include_str!("kernels/gemm_params.wgsl");
const INT8_FNS: &str = include_str!("kernels/int8_fns.wgsl");
/// `c = combine(a, b)` over two same-shape tensors: add and mul prepend their `combine`.
const ELEMENTWISE_PAIR: &str = include_str!("kernels/elementwise_pair.wgsl");

impl Kernel {
    fn name(self) -> &'static str {
        match self {
            Kernel::Gemm(..) => "gemm",
            Kernel::LayerNorm => "layer_norm",
            Kernel::Attention => "attention",
            Kernel::Add => "add",
            Kernel::Activation => "activation",
            Kernel::GatherRows => "gather_rows",
            Kernel::UnpackF16 => "unpack_f16",
            Kernel::DequantizeI8 => "dequantize_i8",
            Kernel::ImagePatches => "image_patches",
            Kernel::SoftmaxRows => "softmax_rows",
            Kernel::GroupNorm => "group_norm",
            Kernel::Mul => "mul",
            Kernel::ScaleShift => "scale_shift",
            Kernel::AvgPool2x2 => "avg_pool_2x2",
            Kernel::ResizeNearest => "resize_nearest",
            Kernel::CopyCols => "copy_cols",
        }
    }

    fn source(self) -> String {
        match self {
            Kernel::Gemm(weight_kind, input, tile) => {
                let vec4 = input == GemmInput::DenseVec4;
                // The f16 files start with `enable f16;`, which must come first in a module.
                let weight = match (weight_kind, vec4) {
                    (GemmWeight::F32, false) => include_str!("kernels/gemm_w_f32.wgsl"),
                    (GemmWeight::F32, true) => include_str!("kernels/gemm_w_f32_vec4.wgsl"),
                    (GemmWeight::F16Packed, false) => include_str!("kernels/gemm_w_f16_packed.wgsl"),
                    (GemmWeight::F16Packed, true) => include_str!("kernels/gemm_w_f16_packed_vec4.wgsl"),
                    (GemmWeight::F16Native, false) => include_str!("kernels/gemm_w_f16.wgsl"),
                    (GemmWeight::F16Native, true) => include_str!("kernels/gemm_w_f16_vec4.wgsl"),
                    (GemmWeight::Int8, false) => include_str!("kernels/gemm_w_i8.wgsl"),
                    (GemmWeight::Int8, true) => include_str!("kernels/gemm_w_i8_vec4.wgsl"),
                };
                let weight_fns = if weight_kind == GemmWeight::Int8 { INT8_FNS } else { "" };
                let input = match input {
                    GemmInput::Dense => include_str!("kernels/gemm_x_dense.wgsl"),
                    GemmInput::DenseVec4 => include_str!("kernels/gemm_x_dense_vec4.wgsl"),
                    GemmInput::Conv => include_str!("kernels/gemm_x_conv.wgsl"),
                };
                let load = if vec4 { include_str!("kernels/gemm_load_vec4.wgsl") } else { include_str!("kernels/gemm_load.wgsl") };
                let tile = match tile {
                    GemmTile::T64 => include_str!("kernels/gemm_tile_64.wgsl"),
                    GemmTile::T128 => include_str!("kernels/gemm_tile_128.wgsl"),
                };
                [weight, weight_fns, ACTIVATION_FNS, GEMM_PARAMS, input, load, tile].concat()
            }
            Kernel::Activation => [ACTIVATION_FNS, include_str!("kernels/activation.wgsl")].concat(),
            Kernel::LayerNorm => include_str!("kernels/layer_norm.wgsl").into(),
            Kernel::Attention => [ACTIVATION_FNS, include_str!("kernels/attention.wgsl")].concat(),
            Kernel::Add => ["fn combine(x: f32, y: f32) -> f32 { return x + y; }\n", ELEMENTWISE_PAIR].concat(),
            Kernel::GatherRows => [INT8_FNS, include_str!("kernels/gather_rows.wgsl")].concat(),
            Kernel::UnpackF16 => include_str!("kernels/unpack_f16.wgsl").into(),
            Kernel::DequantizeI8 => [INT8_FNS, include_str!("kernels/dequantize_i8.wgsl")].concat(),
            Kernel::ImagePatches => include_str!("kernels/image_patches.wgsl").into(),
            Kernel::SoftmaxRows => [ACTIVATION_FNS, include_str!("kernels/softmax_rows.wgsl")].concat(),
            Kernel::GroupNorm => include_str!("kernels/group_norm.wgsl").into(),
            Kernel::Mul => ["fn combine(x: f32, y: f32) -> f32 { return x * y; }\n", ELEMENTWISE_PAIR].concat(),
            Kernel::ScaleShift => include_str!("kernels/scale_shift.wgsl").into(),
            Kernel::AvgPool2x2 => include_str!("kernels/avg_pool_2x2.wgsl").into(),
            Kernel::ResizeNearest => include_str!("kernels/resize_nearest.wgsl").into(),
            Kernel::CopyCols => include_str!("kernels/copy_cols.wgsl").into(),
        }
    }
}

/// Workgroup sizes and shared-memory bounds baked into the kernels.
const ELEMENTWISE_WG: usize = 256;
const ATTENTION_MAX_HEAD_DIM: usize = 256;
const ATTENTION_MAX_KEYS: usize = 1024;
/// Submit the pending encoder after this many recorded ops, so a long forward does not build one huge
/// command buffer before the first read.
const FLUSH_EVERY: usize = 512;

/// Recorded work, submitted in order. An encoder is always submitted while the `pending` lock is held, so work recorded
/// later (possibly into a pooled buffer freed meanwhile) can never reach the queue before it.
#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    ops: usize,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    shader_f16: bool,
    limits: wgpu::Limits,
    /// Largest buffer one tensor may occupy (the storage-binding limit unless a test lowers it).
    max_tensor_bytes: u64,
    /// A forced GEMM tiling (tests, benchmarks); `None` picks by output size.
    gemm_tile: Option<GemmTile>,
    /// Whether the GEMM may read four consecutive k at once where alignment allows.
    vec4_loads: bool,
    pipelines: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
    /// Uniform buffers by content: params are immutable, so equal params share one buffer forever.
    uniforms: Mutex<HashMap<Vec<u32>, wgpu::Buffer>>,
    pool: Arc<Mutex<pool::Pool>>,
    pending: Mutex<Pending>,
    /// Bound where a kernel's optional input (bias) is absent: auto layouts still expect a buffer.
    dummy: wgpu::Buffer,
    /// First error the device reported (validation, out of memory); surfaced at the next read.
    device_error: Arc<Mutex<Option<DeviceError>>>,
}

/// The WebGPU backend. Clones share one device, pool and pending command encoder.
#[derive(Clone)]
pub struct GpuBackend {
    inner: Arc<Inner>,
    /// How weight matrices are stored; per handle, so one device can hold an f32 text tower and an f16 or
    /// int8 decoder.
    matrices: MatrixStorage,
}

/// What [`Backend::upload_weight`] does with a weight matrix (rank ≥ 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatrixStorage {
    /// f32 and f16 as the file stores them (bf16 → f32).
    AsStored,
    /// f32 → f16 too ([`Backend::with_f16_weights`]).
    F16,
    /// Any float type → int8 per row ([`Backend::with_int8_weights`]).
    Int8,
}

fn backend_err(msg: impl Into<String>) -> Error {
    Error::Backend(msg.into())
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// Converts a size or index to the u32 the kernels use.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| backend_err(format!("{what} = {v} does not fit the kernels' 32-bit indices")))
}

/// Choices when opening the device; [`GpuOptions::default`] is what the app and CLI use.
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Use `shader-f16` where the adapter has it (default true). Off: the packed-f16 path browsers without the
    /// feature take, so it can be tested on any adapter.
    pub use_shader_f16: bool,
    /// Split weights above this many bytes across buffers (default: the storage-binding limit). Tests lower it
    /// to exercise splitting with small tensors.
    pub max_tensor_bytes: Option<u64>,
    /// Force the GEMM's 64×64 (`Some(64)`) or 128×128 (`Some(128)`) tiling; `None` (default) picks 128×128
    /// when both output dimensions are ≥ 128. For tests and the benchmark.
    pub gemm_tile: Option<u32>,
    /// Let the GEMM load four consecutive k at once where k, strides and offsets are multiples of 4
    /// (default true). Off: element-wise loads everywhere, for tests and the benchmark.
    pub vec4_loads: bool,
    /// Request the adapter's own limits instead of WebGPU's defaults (storage bindings above 128 MiB on most
    /// real GPUs). Off by default so native runs behave like the browser; the benchmark uses it to show what
    /// a card can do at sizes whose activations exceed 128 MiB (the MoVQ at 512 px).
    pub adapter_limits: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { use_shader_f16: true, max_tensor_bytes: None, gemm_tile: None, vec4_loads: true, adapter_limits: false }
    }
}

impl GpuBackend {
    /// Opens the default (high-performance) adapter. Fails with a clear error where there is none (no WebGPU
    /// in the browser, no Vulkan/Metal/DX12 driver natively). `WGPU_BACKEND` etc. are honoured natively.
    pub async fn new() -> Result<GpuBackend> {
        Self::with_options(GpuOptions::default()).await
    }

    /// [`GpuBackend::new`] with explicit [`GpuOptions`].
    pub async fn with_options(options: GpuOptions) -> Result<GpuBackend> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| DeviceError::NoAdapter(e.to_string()))?;
        // WebGPU's default limits (as a browser guarantees), lowered only where the adapter offers less.
        let limits = if options.adapter_limits { adapter.limits() } else { wgpu::Limits::default().or_worse_values_from(&adapter.limits()) };
        let shader_f16 = options.use_shader_f16 && adapter.features().contains(wgpu::Features::SHADER_F16);
        let binding_limit = u64::from(limits.max_storage_buffer_binding_size);
        let max_tensor_bytes = options.max_tensor_bytes.map_or(binding_limit, |m| m.clamp(4, binding_limit));
        let gemm_tile = match options.gemm_tile {
            None => None,
            Some(64) => Some(GemmTile::T64),
            Some(128) => Some(GemmTile::T128),
            Some(t) => return Err(backend_err(format!("GEMM tile {t}: the kernels have 64 and 128"))),
        };
        let required_features = if shader_f16 { wgpu::Features::SHADER_F16 } else { wgpu::Features::empty() };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("lambda-eclipse"),
                required_features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| DeviceError::NoDevice(e.to_string()))?;
        let device_error = Arc::new(Mutex::new(None::<DeviceError>));
        let slot = device_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            lock(&slot).get_or_insert_with(|| match e {
                wgpu::Error::OutOfMemory { .. } => DeviceError::OutOfMemory,
                other => DeviceError::Reported(other.to_string()),
            });
        }));
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lambda-eclipse unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(GpuBackend {
            matrices: MatrixStorage::AsStored,
            inner: Arc::new(Inner {
                device,
                queue,
                info: adapter.get_info(),
                shader_f16,
                limits,
                max_tensor_bytes,
                gemm_tile,
                vec4_loads: options.vec4_loads,
                pipelines: Mutex::default(),
                uniforms: Mutex::default(),
                pool: Arc::default(),
                pending: Mutex::default(),
                dummy,
                device_error,
            }),
        })
    }

    /// The adapter in words, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn adapter_description(&self) -> String {
        let i = &self.inner.info;
        format!("{} ({:?})", i.name, i.backend)
    }

    /// Whether f16 weights are read through `shader-f16` (the adapter has it and the options allow it); else
    /// packed f16 is unpacked with core `unpack2x16float`, which every adapter has.
    pub fn has_shader_f16(&self) -> bool {
        self.inner.shader_f16
    }

    /// Activation-pool counters (buffers are reused across forwards; this lets tests check it).
    pub fn pool_stats(&self) -> PoolStats {
        pool::stats(&self.inner.pool)
    }

    /// Number of distinct uniform-parameter buffers created so far (bounded by the distinct op shapes).
    pub fn uniform_buffers(&self) -> usize {
        lock(&self.inner.uniforms).len()
    }

    /// Submits all recorded work without waiting for it.
    pub fn flush(&self) {
        let mut pending = lock(&self.inner.pending);
        if let Some(enc) = pending.encoder.take() {
            self.inner.queue.submit(Some(enc.finish()));
        }
        pending.ops = 0;
    }

    fn check_binding_size(&self, bytes: u64, what: &str) -> Result<()> {
        let limit = self.inner.limits.max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(DeviceError::BindingLimit { what: what.to_string(), bytes, limit }.into());
        }
        Ok(())
    }

    /// A fresh f32 activation of the given shape from the pool (contents undefined until written).
    fn alloc_f32(&self, shape: &[usize], what: &str) -> Result<GpuTensor> {
        let numel: usize = shape.iter().product();
        let bytes = (numel.max(1) * 4) as u64;
        self.check_binding_size(bytes, what)?;
        u32_of(numel, "element count")?;
        let buf = pool::take(&self.inner.pool, &self.inner.device, bytes);
        Ok(GpuTensor::new(buf, shape, GpuDType::F32))
    }

    /// A new buffer holding `bytes` (zero-padded to 4), filled by `Queue::write_buffer`, which copies straight
    /// from `bytes` (in the browser: from wasm memory). A buffer mapped at creation would first copy them into
    /// a temporary `Vec` of the same size in wasm memory (wgpu's web backend) — twice the largest tensor in
    /// the wasm heap while loading — and keep a shared-memory mapping per buffer in the page's process. The
    /// write is correct for work recorded before the next submit because the buffer is new: queue writes run
    /// before the next submission and nothing recorded earlier can use it (a pooled buffer could not be
    /// written this way). Not pooled: freed when dropped.
    fn upload(&self, bytes: &[u8], what: &str) -> Result<PooledBuffer> {
        self.check_binding_size(bytes.len() as u64, what)?;
        let size = (bytes.len().max(4) as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
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
        Ok(PooledBuffer::owned(buffer))
    }

    fn pipeline(&self, kernel: Kernel) -> wgpu::ComputePipeline {
        let mut cache = lock(&self.inner.pipelines);
        cache
            .entry(kernel)
            .or_insert_with(|| {
                let device = &self.inner.device;
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.name()),
                    source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.name()),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .clone()
    }

    fn uniform(&self, params: &[u32]) -> wgpu::Buffer {
        // Uniform structs are padded to 16 bytes.
        let mut key = params.to_vec();
        key.resize(params.len().div_ceil(4).max(1) * 4, 0);
        let mut cache = lock(&self.inner.uniforms);
        if let Some(b) = cache.get(&key) {
            return b.clone();
        }
        let buffer = self.inner.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("lambda-eclipse params"),
            contents: bytemuck::cast_slice(&key),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        cache.insert(key, buffer.clone());
        buffer
    }

    /// Runs `f` on the pending encoder (created on demand) and submits it every `FLUSH_EVERY` ops.
    fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut pending = lock(&self.inner.pending);
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lambda-eclipse") })
        });
        f(encoder);
        pending.ops += 1;
        if pending.ops >= FLUSH_EVERY {
            if let Some(enc) = pending.encoder.take() {
                self.inner.queue.submit(Some(enc.finish()));
            }
            pending.ops = 0;
        }
    }

    /// Records one dispatch: binding 0 is the params uniform, bindings 1.. are `buffers` in order (the
    /// output last, by the kernels' convention).
    fn dispatch(&self, kernel: Kernel, params: &[u32], buffers: &[&wgpu::Buffer], groups: [u32; 3]) {
        let pipeline = self.pipeline(kernel);
        let uniform = self.uniform(params);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
        }
        let bind_group = self.inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.record(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name()), timestamp_writes: None });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
    }

    /// Workgroup grid for a 1-D kernel over `n` elements (256 per group), folded into y past the 65535 limit.
    fn groups_1d(&self, n: usize) -> [u32; 3] {
        let groups = ceil_div(n, ELEMENTWISE_WG).max(1);
        let max = self.inner.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            [max as u32, ceil_div(groups, max) as u32, 1]
        }
    }

    /// Unpacks `count` f16 elements starting at `src_off` of `src` into `dst` at `dst_off`.
    fn unpack_into(&self, src: &GpuTensor, src_off: usize, dst: &GpuTensor, dst_off: usize, count: usize) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let params = [u32_of(count, "count")?, u32_of(src_off, "offset")?, u32_of(dst_off, "offset")?];
        self.dispatch(Kernel::UnpackF16, &params, &[src.buffer(), dst.buffer()], self.groups_1d(count));
        Ok(())
    }

    /// The tensor as f32: itself, or an f16 or int8 weight unpacked into a new activation.
    fn as_f32(&self, t: &GpuTensor) -> Result<GpuTensor> {
        self.check_whole(t, "this op")?;
        match (t.dtype, &t.scales) {
            (GpuDType::F32, _) => Ok(t.clone()),
            (GpuDType::F16, _) => {
                let out = self.alloc_f32(&t.shape, "unpacked f16 tensor")?;
                self.unpack_into(t, 0, &out, 0, t.numel())?;
                Ok(out)
            }
            (GpuDType::I8, Some(scales)) => {
                let out = self.alloc_f32(&t.shape, "dequantised int8 tensor")?;
                let n = t.numel();
                if n > 0 {
                    let params = [u32_of(n, "count")?, u32_of(scales.row_len, "row length")?];
                    self.dispatch(Kernel::DequantizeI8, &params, &[t.buffer(), &scales.buf.buffer, out.buffer()], self.groups_1d(n));
                }
                Ok(out)
            }
            (GpuDType::I8, None) => Err(backend_err("int8 tensor without scales")),
        }
    }

    /// Ops other than `linear`, `conv2d` and `gather_rows` read one buffer: a split weight is refused, not misread.
    fn check_whole(&self, t: &GpuTensor, op: &str) -> Result<()> {
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

    /// Uploads a weight above the binding limit as row chunks of the first dimension, each ≤ the limit.
    /// int8 chunks need no alignment: each chunk's elements are counted from its own start, and its rows'
    /// scales are found from `first_row`.
    fn upload_split(&self, bytes: &[u8], shape: &[usize], dtype: GpuDType, what: &str) -> Result<GpuTensor> {
        let rows = shape.first().copied().unwrap_or(1);
        let row_elems: usize = shape.iter().skip(1).product::<usize>().max(1);
        let elem_bytes = dtype.size_in_bytes();
        let max = self.inner.max_tensor_bytes as usize;
        let mut rows_per_chunk = (max / (row_elems * elem_bytes)).min(rows);
        // Packed f16 chunks must start on a u32 boundary: an even element count per chunk.
        if dtype == GpuDType::F16 && row_elems % 2 == 1 {
            rows_per_chunk -= rows_per_chunk % 2;
        }
        if rows_per_chunk == 0 {
            return Err(backend_err(format!(
                "{what}: one row of {} bytes is above the {max}-byte binding limit, so it cannot be split by rows",
                row_elems * elem_bytes
            )));
        }
        let row_bytes = row_elems * elem_bytes;
        let mut chunks = Vec::new();
        let mut first_row = 0;
        while first_row < rows {
            let n = rows_per_chunk.min(rows - first_row);
            let part = &bytes[first_row * row_bytes..(first_row + n) * row_bytes];
            let buf = Arc::new(self.upload(part, &format!("{what} rows {first_row}..{}", first_row + n))?);
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

    fn take_device_error(&self) -> Result<()> {
        match lock(&self.inner.device_error).take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// `x [m, k]` times the weight described by strides (see gemm_params.wgsl), plus bias, then activation.
    /// A weight split by rows (`linear` only: rows are output columns) runs one dispatch per chunk.
    fn gemm(&self, x: &GpuTensor, w: &GpuTensor, (m, k, n): (usize, usize, usize), (w_sn, w_sk): (usize, usize),
        bias: Option<&GpuTensor>, act: Activation, op: &str) -> Result<GpuTensor> {
        let x = self.as_f32(x)?;
        let bias = bias.map(|b| self.as_f32(b)).transpose()?;
        let out = self.alloc_f32(&[m, n], op)?;
        if m == 0 || n == 0 {
            return Ok(out);
        }
        let chunks = if w.is_split() { w.row_chunks() } else { vec![(0, n, w.buffer())] };
        for (first, cols, w_buf) in chunks {
            self.dispatch_gemm(&Gemm {
                n: cols,
                w: w_buf,
                w_scale_off: first,
                w_sn,
                w_sk,
                bias: bias.as_ref().map(|b| (b.buffer(), first)),
                act,
                out_stride: n,
                out_off: first,
                ..Gemm::linear(m, k, cols, x.buffer(), w, out.buffer())
            })?;
        }
        Ok(out)
    }

    /// Records one tiled-GEMM dispatch (gemm_params.wgsl).
    fn dispatch_gemm(&self, g: &Gemm) -> Result<()> {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let weight = match g.w_dtype {
            GpuDType::F32 => GemmWeight::F32,
            GpuDType::F16 if self.inner.shader_f16 => GemmWeight::F16Native,
            GpuDType::F16 => GemmWeight::F16Packed,
            GpuDType::I8 => GemmWeight::Int8,
        };
        let (scales, w_row_len) = match (weight, g.w_scales) {
            (GemmWeight::Int8, Some(s)) => (Some(&s.buf.buffer), s.row_len),
            (GemmWeight::Int8, None) => return Err(backend_err("int8 GEMM weight without scales")),
            _ => (None, 0),
        };
        let (conv_h, conv_w, conv_cin, conv_ks) = g.conv.unwrap_or((0, 0, 0, 0));
        let params = [
            u32_of(g.m, "m")?,
            u32_of(g.n, "n")?,
            u32_of(g.k, "k")?,
            u32_of(g.w_sn, "stride")?,
            u32_of(g.w_sk, "stride")?,
            u32_of(g.w_off, "offset")?,
            g.bias.is_some() as u32,
            activation_code(g.act)?,
            u32_of(g.x_stride, "stride")?,
            u32_of(g.x_off, "offset")?,
            u32_of(g.out_stride, "stride")?,
            u32_of(g.out_off, "offset")?,
            u32_of(g.bias.map_or(0, |b| b.1), "offset")?,
            u32_of(conv_h, "height")?,
            u32_of(conv_w, "width")?,
            u32_of(conv_cin, "channels")?,
            u32_of(conv_ks, "kernel")?,
            u32_of(w_row_len, "row length")?,
            u32_of(g.w_scale_off, "offset")?,
        ];
        let aligned = |v: usize| v % 4 == 0;
        let input = if g.conv.is_some() {
            GemmInput::Conv
        } else if self.inner.vec4_loads
            && g.w_sk == 1
            && [g.k, g.x_stride, g.x_off, g.w_sn, g.w_off].into_iter().all(aligned)
            && (scales.is_none() || aligned(w_row_len))
        {
            GemmInput::DenseVec4
        } else {
            GemmInput::Dense
        };
        let (tile, size) = match self.inner.gemm_tile {
            Some(tile) => (tile, if tile == GemmTile::T128 { 128 } else { 64 }),
            // 128×128 tiles only where there are enough of them to fill a large GPU (an H200 has 132 SMs):
            // measured there, [257×8192]·[8192×1664] (39 such tiles) ran at 660 GF/s against 1060 with 64×64.
            None if ceil_div(g.m, 128) * ceil_div(g.n, 128) >= 256 => (GemmTile::T128, 128),
            None => (GemmTile::T64, 64),
        };
        let bias_buf = g.bias.map_or(&self.inner.dummy, |b| b.0);
        let groups = [u32_of(ceil_div(g.n, size), "n")?, u32_of(ceil_div(g.m, size), "m")?, 1];
        let mut buffers = vec![g.x, g.w, bias_buf, g.out];
        buffers.extend(scales);
        self.dispatch(Kernel::Gemm(weight, input, tile), &params, &buffers, groups);
        Ok(())
    }
}

/// One tiled-GEMM dispatch: `out[out_off + i·out_stride + j] = act(Σ_k X(i, k)·W(j, k) + bias[bias_off + j])`
/// with `X(i, k) = x[x_off + i·x_stride + k]` (or the conv gather) and `W(j, k) = w[w_off + j·w_sn + k·w_sk]`.
struct Gemm<'a> {
    m: usize,
    n: usize,
    k: usize,
    x: &'a wgpu::Buffer,
    x_stride: usize,
    x_off: usize,
    /// Implicit im2col instead of a dense `x`: (height, width, in channels, kernel size).
    conv: Option<(usize, usize, usize, usize)>,
    w: &'a wgpu::Buffer,
    w_dtype: GpuDType,
    /// An int8 weight's scales, and the row of `w`'s first element among them (a split weight's chunk).
    w_scales: Option<&'a Int8Scales>,
    w_scale_off: usize,
    w_sn: usize,
    w_sk: usize,
    w_off: usize,
    /// The bias buffer and the offset of output column 0 in it.
    bias: Option<(&'a wgpu::Buffer, usize)>,
    act: Activation,
    out: &'a wgpu::Buffer,
    out_stride: usize,
    out_off: usize,
}

impl<'a> Gemm<'a> {
    /// `x [m, k] · w [n, k]ᵀ → out [m, n]`, all dense and unoffset; call sites change what differs.
    fn linear(m: usize, k: usize, n: usize, x: &'a wgpu::Buffer, w: &'a GpuTensor, out: &'a wgpu::Buffer) -> Gemm<'a> {
        Gemm {
            m,
            n,
            k,
            x,
            x_stride: k,
            x_off: 0,
            conv: None,
            w: w.buffer(),
            w_dtype: w.dtype,
            w_scales: w.scales.as_deref(),
            w_scale_off: 0,
            w_sn: k,
            w_sk: 1,
            w_off: 0,
            bias: None,
            act: Activation::Identity,
            out,
            out_stride: n,
            out_off: 0,
        }
    }
}

/// The kernels' code for an activation (activation_fns.wgsl).
fn activation_code(act: Activation) -> Result<u32> {
    Ok(match act {
        Activation::Identity => 0,
        Activation::GeluErf => 1,
        Activation::QuickGelu => 2,
        Activation::Silu => 3,
    })
}

fn dims2(t: &GpuTensor, op: &str) -> Result<(usize, usize)> {
    match t.shape[..] {
        [r, c] => Ok((r, c)),
        _ => Err(backend_err(format!("{op}: expected a rank-2 tensor, got shape {:?}", t.shape))),
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;

    fn name(&self) -> &'static str {
        "webgpu"
    }

    /// Weight matrices stored in f32 (the real decoder UNet: 5 GB) are kept as f16 on the device (2.5 GB).
    fn with_f16_weights(&self) -> GpuBackend {
        GpuBackend { inner: self.inner.clone(), matrices: MatrixStorage::F16 }
    }

    /// Weight matrices as int8 per output channel (the real decoder UNet: 1.26 GB instead of f16's 2.51 GB).
    fn with_int8_weights(&self) -> GpuBackend {
        GpuBackend { inner: self.inner.clone(), matrices: MatrixStorage::Int8 }
    }

    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<GpuTensor> {
        let numel: usize = shape.iter().product();
        if raw.len() != numel * dtype.size_in_bytes() {
            return Err(backend_err(format!(
                "weight of shape {shape:?} needs {} bytes, got {}",
                numel * dtype.size_in_bytes(),
                raw.len()
            )));
        }
        let what = format!("weight of shape {shape:?}");
        if self.matrices == MatrixStorage::Int8 && shape.len() >= 2 {
            return self.upload_int8(&Int8Rows::quantize(&dtype.to_f32(raw), shape[0]), shape, &what);
        }
        let (bytes, gpu_dtype): (std::borrow::Cow<[u8]>, GpuDType) = match dtype {
            WeightDType::F32 if self.matrices == MatrixStorage::F16 && shape.len() >= 2 => {
                let v: Vec<u8> = raw.chunks_exact(4).flat_map(|c| half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()).collect();
                (v.into(), GpuDType::F16)
            }
            WeightDType::F32 => (raw.into(), GpuDType::F32),
            WeightDType::F16 if shape.len() >= 2 => (raw.into(), GpuDType::F16),
            WeightDType::F16 => {
                let v: Vec<f32> = raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
                (bytemuck::cast_slice::<f32, u8>(&v).to_vec().into(), GpuDType::F32)
            }
            WeightDType::BF16 => {
                let v: Vec<f32> = raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
                (bytemuck::cast_slice::<f32, u8>(&v).to_vec().into(), GpuDType::F32)
            }
        };
        u32_of(numel, "element count")?;
        if bytes.len() as u64 <= self.inner.max_tensor_bytes {
            let buf = self.upload(&bytes, &what)?;
            return Ok(GpuTensor::new(buf, shape, gpu_dtype));
        }
        self.upload_split(&bytes, shape, gpu_dtype, &what)
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(backend_err(format!("from_f32: {} values do not fill shape {shape:?}", data.len())));
        }
        u32_of(numel, "element count")?;
        let buf = self.upload(bytemuck::cast_slice(data), "input")?;
        Ok(GpuTensor::new(buf, shape, GpuDType::F32))
    }

    fn shape(&self, t: &GpuTensor) -> Vec<usize> {
        t.shape.clone()
    }

    async fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
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
        {
            let mut pending = lock(&self.inner.pending);
            let mut encoder = pending.encoder.take().unwrap_or_else(|| {
                self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lambda-eclipse") })
            });
            encoder.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, bytes);
            self.inner.queue.submit(Some(encoder.finish()));
            pending.ops = 0;
        }

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

    /// The size of the buffer actually allocated (pool buckets and f16 padding included).
    fn byte_size(&self, t: &GpuTensor) -> usize {
        let scales = t.scales.as_ref().map_or(0, |s| s.buf.buffer.size() as usize);
        t.row_chunks().iter().map(|(_, _, b)| b.size() as usize).sum::<usize>() + scales
    }

    async fn sync(&self) -> Result<()> {
        // A one-value readback submits everything recorded and reports what the device rejected meanwhile.
        let probe = self.from_f32(&[0.0], &[1])?;
        self.read_f32(&probe).await.map(|_| ())
    }

    fn max_activation_bytes(&self) -> Option<u64> {
        let l = &self.inner.limits;
        Some(u64::from(l.max_storage_buffer_binding_size).min(l.max_buffer_size))
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let (m, k) = dims2(a, "matmul")?;
        let (k2, n) = dims2(b, "matmul")?;
        if k != k2 {
            return Err(backend_err(format!("matmul: shapes {:?} and {:?} do not chain", a.shape, b.shape)));
        }
        self.check_whole(b, "matmul")?;
        self.gemm(a, b, (m, k, n), (1, n), None, Activation::Identity, "matmul")
    }

    fn linear(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>, act: Activation) -> Result<GpuTensor> {
        let (m, k) = dims2(x, "linear")?;
        let (n, k2) = dims2(w, "linear")?;
        if k != k2 {
            return Err(backend_err(format!("linear: input {:?} does not fit weight {:?}", x.shape, w.shape)));
        }
        if let Some(b) = bias {
            if b.numel() != n {
                return Err(backend_err(format!("linear: bias {:?} does not fit weight {:?}", b.shape, w.shape)));
            }
        }
        self.gemm(x, w, (m, k, n), (k, 1), bias, act, "linear")
    }

    fn layer_norm(&self, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f64) -> Result<GpuTensor> {
        let (rows, cols) = dims2(x, "layer_norm")?;
        if gamma.numel() != cols || beta.numel() != cols {
            return Err(backend_err(format!(
                "layer_norm: gamma {:?} / beta {:?} do not fit input {:?}",
                gamma.shape, beta.shape, x.shape
            )));
        }
        let (x, gamma, beta) = (self.as_f32(x)?, self.as_f32(gamma)?, self.as_f32(beta)?);
        let out = self.alloc_f32(&x.shape, "layer_norm")?;
        if rows == 0 || cols == 0 {
            return Ok(out);
        }
        let params = [u32_of(cols, "cols")?, (eps as f32).to_bits()];
        let groups = [u32_of(rows, "rows")?, 1, 1];
        self.dispatch(Kernel::LayerNorm, &params, &[x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()], groups);
        Ok(out)
    }

    fn attention(&self, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, heads: usize, scale: f32,
        bias: Option<&GpuTensor>) -> Result<GpuTensor> {
        let (t, width) = dims2(q, "attention")?;
        let (s, kw) = dims2(k, "attention")?;
        if kw != width || v.shape != [s, width] || heads == 0 || width % heads != 0 {
            return Err(backend_err(format!(
                "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
                q.shape, k.shape, v.shape
            )));
        }
        if let Some(b) = bias {
            if b.numel() != t * s {
                return Err(backend_err(format!("attention: bias {:?} is not [{t}, {s}]", b.shape)));
            }
        }
        let d = width / heads;
        let (q, k, v) = (self.as_f32(q)?, self.as_f32(k)?, self.as_f32(v)?);
        let bias = bias.map(|b| self.as_f32(b)).transpose()?;
        if t > 0 && s > 0 && (d > ATTENTION_MAX_HEAD_DIM || s > ATTENTION_MAX_KEYS) {
            // Beyond the fused kernel's workgroup memory (the decoders' long sequences, MoVQ's 512-wide head).
            return self.attention_blocked(&q, &k, &v, heads, scale, bias.as_ref());
        }
        let out = self.alloc_f32(&[t, width], "attention")?;
        if t == 0 || width == 0 {
            return Ok(out);
        }
        if s == 0 {
            return Err(backend_err("attention: no keys"));
        }
        let params = [
            u32_of(s, "keys")?,
            u32_of(d, "head dim")?,
            u32_of(width, "width")?,
            bias.is_some() as u32,
            scale.to_bits(),
        ];
        let bias_buf = bias.as_ref().map_or(&self.inner.dummy, |b| b.buffer());
        let groups = [u32_of(t, "queries")?, u32_of(heads, "heads")?, 1];
        self.dispatch(Kernel::Attention, &params, &[q.buffer(), k.buffer(), v.buffer(), bias_buf, out.buffer()], groups);
        Ok(out)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.elementwise_pair(Kernel::Add, a, b, "add")
    }

    fn activation(&self, x: &GpuTensor, act: Activation) -> Result<GpuTensor> {
        if act == Activation::Identity {
            return Ok(x.clone());
        }
        let code = activation_code(act)?;
        let x = self.as_f32(x)?;
        let out = self.alloc_f32(&x.shape, "activation")?;
        let n = x.numel();
        if n > 0 {
            self.dispatch(Kernel::Activation, &[n as u32, code], &[x.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    fn gather_rows(&self, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
        let (rows, cols) = dims2(table, "gather_rows")?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(backend_err(format!("gather_rows: index {bad} out of range for {rows} rows")));
        }
        let out = self.alloc_f32(&[ids.len(), cols], "gather_rows")?;
        let n = ids.len() * cols;
        if n == 0 {
            return Ok(out);
        }
        let ids_buf = self.upload(bytemuck::cast_slice(ids), "gather_rows ids")?;
        let (table_type, scales) = match (table.dtype, &table.scales) {
            (GpuDType::F32, _) => (0, &self.inner.dummy),
            (GpuDType::F16, _) => (1, &self.inner.dummy),
            (GpuDType::I8, Some(s)) if s.row_len == cols => (2, &s.buf.buffer),
            (GpuDType::I8, _) => return Err(backend_err(format!("gather_rows: int8 table {:?} without per-row scales", table.shape))),
        };
        // One dispatch per row chunk of a split table; each writes the output rows whose id it holds.
        for (first, count, table_buf) in table.row_chunks() {
            if !ids.iter().any(|&i| (first..first + count).contains(&(i as usize))) {
                continue;
            }
            let params = [
                u32_of(ids.len(), "rows")?,
                u32_of(cols, "cols")?,
                table_type,
                u32_of(first, "first row")?,
                u32_of(count, "row count")?,
            ];
            self.dispatch(Kernel::GatherRows, &params, &[table_buf, &ids_buf.buffer, out.buffer(), scales], self.groups_1d(n));
        }
        Ok(out)
    }

    fn concat_rows(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        let first = parts.first().ok_or_else(|| backend_err("concat_rows: no tensors"))?;
        if first.shape.is_empty() || parts.iter().any(|p| p.shape.len() != first.shape.len() || p.shape[1..] != first.shape[1..]) {
            let shapes: Vec<_> = parts.iter().map(|p| &p.shape).collect();
            return Err(backend_err(format!("concat_rows: shapes {shapes:?} do not stack")));
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let out = self.alloc_f32(&shape, "concat_rows")?;
        let mut offset = 0;
        for part in parts {
            self.check_whole(part, "concat_rows")?;
            let part = if part.dtype == GpuDType::I8 { &self.as_f32(part)? } else { *part };
            let n = part.numel();
            match part.dtype {
                GpuDType::F32 if n > 0 => self.record(|enc| {
                    enc.copy_buffer_to_buffer(part.buffer(), 0, out.buffer(), (offset * 4) as u64, (n * 4) as u64)
                }),
                GpuDType::F32 => {}
                GpuDType::F16 => self.unpack_into(part, 0, &out, offset, n)?,
                GpuDType::I8 => return Err(backend_err("concat_rows: an int8 part was not dequantised")),
            }
            offset += n;
        }
        Ok(out)
    }

    fn slice_rows(&self, x: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
        let rows = *x.shape.first().ok_or_else(|| backend_err("slice_rows: scalar tensor"))?;
        if start.checked_add(len).is_none_or(|end| end > rows) {
            return Err(backend_err(format!("slice_rows: rows {start}..{} out of range for {:?}", start + len, x.shape)));
        }
        self.check_whole(x, "slice_rows")?;
        let x = if x.dtype == GpuDType::I8 { &self.as_f32(x)? } else { x };
        let row: usize = x.shape[1..].iter().product();
        let mut shape = x.shape.clone();
        shape[0] = len;
        let out = self.alloc_f32(&shape, "slice_rows")?;
        let n = len * row;
        match x.dtype {
            GpuDType::F32 if n > 0 => self.record(|enc| {
                enc.copy_buffer_to_buffer(x.buffer(), (start * row * 4) as u64, out.buffer(), 0, (n * 4) as u64)
            }),
            GpuDType::F32 => {}
            GpuDType::F16 => self.unpack_into(x, start * row, &out, 0, n)?,
            GpuDType::I8 => return Err(backend_err("slice_rows: an int8 tensor was not dequantised")),
        }
        Ok(out)
    }

    fn reshape(&self, x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        if shape.iter().product::<usize>() != x.numel() {
            return Err(backend_err(format!("reshape: cannot view {:?} as {shape:?}", x.shape)));
        }
        // A split weight keeps its row chunks, so only reshapes that keep the first dimension are allowed
        // (e.g. a conv weight [out, in, kh, kw] viewed as [out, in·kh·kw]).
        if x.is_split() && shape.first() != x.shape.first() {
            return Err(backend_err(format!(
                "reshape: {:?} is split by rows across {} buffers; cannot view it as {shape:?}",
                x.shape,
                x.buffer_count()
            )));
        }
        Ok(GpuTensor { shape: shape.to_vec(), ..x.clone() })
    }

    fn image_patches(&self, image: &GpuTensor, patch: usize) -> Result<GpuTensor> {
        let (c, h, w) = match image.shape[..] {
            [c, h, w] => (c, h, w),
            _ => return Err(backend_err(format!("image_patches: expected [c, h, w], got {:?}", image.shape))),
        };
        if patch == 0 || h % patch != 0 || w % patch != 0 {
            return Err(backend_err(format!("image_patches: {h}×{w} is not a multiple of patch {patch}")));
        }
        let image = self.as_f32(image)?;
        let (gh, gw) = (h / patch, w / patch);
        let cols = c * patch * patch;
        let out = self.alloc_f32(&[gh * gw, cols], "image_patches")?;
        let n = gh * gw * cols;
        if n > 0 {
            let params = [h as u32, w as u32, patch as u32, gw as u32, cols as u32, u32_of(n, "element count")?];
            self.dispatch(Kernel::ImagePatches, &params, &[image.buffer(), out.buffer()], self.groups_1d(n));
        }
        Ok(out)
    }

    fn conv2d(&self, x: &GpuTensor, height: usize, width: usize, weight: &GpuTensor, bias: Option<&GpuTensor>,
        kernel: usize) -> Result<GpuTensor> {
        self.conv2d_kernel(x, height, width, weight, bias, kernel)
    }

    fn group_norm(&self, x: &GpuTensor, groups: usize, gamma: &GpuTensor, beta: &GpuTensor, eps: f64)
        -> Result<GpuTensor> {
        self.group_norm_kernel(x, groups, gamma, beta, eps)
    }

    fn avg_pool_2x2(&self, x: &GpuTensor, height: usize, width: usize) -> Result<GpuTensor> {
        self.avg_pool_2x2_kernel(x, height, width)
    }

    fn resize_nearest(&self, x: &GpuTensor, height: usize, width: usize, out_height: usize, out_width: usize)
        -> Result<GpuTensor> {
        self.resize_nearest_kernel(x, height, width, out_height, out_width)
    }

    fn concat_cols(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        self.concat_cols_kernel(parts)
    }

    fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.elementwise_pair(Kernel::Mul, a, b, "mul")
    }

    fn scale_shift(&self, x: &GpuTensor, scale: &GpuTensor, shift: &GpuTensor) -> Result<GpuTensor> {
        self.scale_shift_kernel(x, scale, shift)
    }
}
