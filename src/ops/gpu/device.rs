//! Opening the device: the adapter, WebGPU's default limits, `shader-f16`, the options tests and benchmarks
//! set, and the state every clone of a [`GpuBackend`] shares ([`Inner`]).

use super::backend_err;
use super::kernels::{GemmTile, Reduction};
use super::pool::{self, lock, PoolStats, PooledBuffer};
use super::recorder::Recorder;
use crate::error::{DeviceError, Result};
use crate::ops::gpu_options::{GpuOptions, KernelProfile};
use std::sync::{Arc, Mutex};

/// The WebGPU backend. Clones share one device, pool and pending command encoder.
#[derive(Clone)]
pub struct GpuBackend {
    pub(super) inner: Arc<Inner>,
    /// How weight matrices are stored; per handle, so one device can hold an f32 text tower and an f16 or
    /// int8 decoder.
    pub(super) matrices: MatrixStorage,
}

/// What [`crate::ops::Backend::upload_weight`] does with a weight matrix (rank ≥ 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MatrixStorage {
    /// f32 and f16 as the file stores them (bf16 → f32).
    AsStored,
    /// f32 → f16 too ([`crate::ops::Backend::with_f16_weights`]).
    F16,
    /// Any float type → int8 per row ([`crate::ops::Backend::with_int8_weights`]).
    Int8,
}

/// The device and everything shared by the clones of one backend.
pub(super) struct Inner {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(super) shader_f16: bool,
    pub(super) limits: wgpu::Limits,
    /// Largest buffer one tensor may occupy (the storage-binding limit unless a test lowers it).
    pub(super) max_tensor_bytes: u64,
    /// A forced GEMM tiling (tests, benchmarks); `None` picks by output size.
    pub(super) gemm_tile: Option<GemmTile>,
    /// Whether the GEMM may read four consecutive k at once where alignment allows.
    pub(super) vec4_loads: bool,
    pub(super) blocked_attention: bool,
    pub(super) f16_math: bool,
    /// Split-K for the tiled GEMM: `None` by shape and adapter (ops/gemm.rs), `Some(on)` forced.
    pub(super) split_k: Option<bool>,
    /// The adapter computes on the CPU (lavapipe, SwiftShader): a few workgroups already fill it.
    pub(super) cpu_adapter: bool,
    /// How the norms and the softmax reduce: through subgroup operations where the device has them.
    pub(super) reduction: Reduction,
    /// The adapter's subgroup sizes (min, max) when subgroup operations are in use.
    subgroup_sizes: Option<(u32, u32)>,
    /// The pending command encoder and the pipeline, uniform and bind-group caches.
    pub(super) recorder: Recorder,
    pub(super) pool: Arc<Mutex<pool::Pool>>,
    /// Bound where a kernel's optional input (bias) is absent: auto layouts still expect a buffer.
    pub(super) dummy: PooledBuffer,
    /// First error the device reported (validation, out of memory); surfaced at the next read.
    device_error: Arc<Mutex<Option<DeviceError>>>,
    /// Per kernel variant: dispatches and milliseconds, when GpuOptions::profile_kernels is on.
    pub(super) profile: Option<Mutex<KernelProfile>>,
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
        let limits = if options.adapter_limits {
            adapter.limits()
        } else {
            wgpu::Limits::default().or_worse_values_from(&adapter.limits())
        };
        let shader_f16 = options.use_shader_f16 && adapter.features().contains(wgpu::Features::SHADER_F16);
        let binding_limit = limits.max_storage_buffer_binding_size;
        let max_tensor_bytes = options.max_tensor_bytes.map_or(binding_limit, |m| m.clamp(4, binding_limit));
        let gemm_tile = match options.gemm_tile {
            None => None,
            Some(64) => Some(GemmTile::T64),
            Some(128) => Some(GemmTile::T128),
            Some(t) => return Err(backend_err(format!("GEMM tile {t}: the kernels have 64 and 128"))),
        };
        let info = adapter.get_info();
        // Subgroup operations where the adapter has them (native Vulkan/Metal/DX12; wgpu offers none on the
        // web yet) and the options allow. The kernels are correct for any subgroup size and layout; a reported
        // size outside the 4–128 wgpu promises (none known) keeps the portable path rather than trust it.
        let subgroups = options.use_subgroups
            && adapter.features().contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size >= 4
            && info.subgroup_max_size <= 128;
        let mut required_features = wgpu::Features::empty();
        required_features.set(wgpu::Features::SHADER_F16, shader_f16);
        required_features.set(wgpu::Features::SUBGROUP, subgroups);
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
        let recorder = Recorder::default();
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lambda-eclipse unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(GpuBackend {
            matrices: MatrixStorage::AsStored,
            inner: Arc::new(Inner {
                dummy: PooledBuffer::owned(dummy, &recorder.bind_groups),
                device,
                queue,
                cpu_adapter: info.device_type == wgpu::DeviceType::Cpu,
                reduction: if subgroups { Reduction::Subgroup } else { Reduction::Workgroup },
                subgroup_sizes: subgroups.then_some((info.subgroup_min_size, info.subgroup_max_size)),
                info,
                shader_f16,
                limits,
                max_tensor_bytes,
                gemm_tile,
                vec4_loads: options.vec4_loads,
                blocked_attention: options.blocked_attention,
                f16_math: options.f16_math && shader_f16,
                split_k: options.split_k,
                recorder,
                pool: Arc::default(),
                device_error,
                profile: options.profile_kernels.then(Mutex::default),
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

    /// The adapter's subgroup sizes (min, max) when the norms and the softmax reduce through subgroup
    /// operations; `None` on the portable path (no `subgroups` feature, or GpuOptions::use_subgroups off).
    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        self.inner.subgroup_sizes
    }

    /// What GpuOptions::profile_kernels measured since the last call (and start over); empty when it is off.
    pub fn take_kernel_profile(&self) -> KernelProfile {
        self.inner.profile.as_ref().map(|p| std::mem::take(&mut *lock(p))).unwrap_or_default()
    }

    /// Whether the adapter computes on the CPU (lavapipe, SwiftShader), where split-K is off unless forced.
    pub fn is_cpu_adapter(&self) -> bool {
        self.inner.cpu_adapter
    }

    /// Whether the GEMM tiles compute in f16 (GpuOptions::f16_math on an adapter with `shader-f16`).
    pub fn has_f16_math(&self) -> bool {
        self.inner.f16_math
    }

    /// Measured FMA throughput in GFLOP/s, f32 or (`f16`) f16 arithmetic; `None` for f16 without
    /// `shader-f16`. The bench's denominator for "% of peak" (ops/peak.rs).
    pub async fn fma_peak_gflops(&self, f16: bool) -> Result<Option<f64>> {
        super::ops::peak::fma_peak_gflops(self, f16).await
    }

    /// Activation-pool counters (buffers are reused across forwards; this lets tests check it).
    pub fn pool_stats(&self) -> PoolStats {
        pool::stats(&self.inner.pool)
    }

    /// The first error the device reported since the last call (validation, out of memory), as an error.
    pub(super) fn take_device_error(&self) -> Result<()> {
        match lock(&self.inner.device_error).take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
