//! The choices made when opening the GPU device: one struct for the WebGPU backend and its stand-in
//! (`gpu_standin.rs`), so option-building code compiles in every build. Nothing here needs wgpu.

/// Choices when opening the device; [`GpuOptions::default`] is what the app and CLI use.
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Use `shader-f16` where the adapter has it (default true). Off: the packed-f16 path browsers without the
    /// feature take, so it can be tested on any adapter.
    pub use_shader_f16: bool,
    /// Split weights above this many bytes across buffers (default: the storage-binding limit). Tests lower it
    /// to exercise splitting with small tensors.
    pub max_tensor_bytes: Option<u64>,
    /// Force the GEMM's 64×64 (`Some(64)`) or 128×128 (`Some(128)`) tiling; `None` (default) picks by shape
    /// and adapter (ops/gpu/ops/gemm.rs). For tests and the benchmark.
    pub gemm_tile: Option<u32>,
    /// Let the GEMM load four consecutive k at once where k, strides and offsets are multiples of 4
    /// (default true). Off: element-wise loads everywhere, for tests and the benchmark.
    pub vec4_loads: bool,
    /// Request the adapter's own limits instead of WebGPU's defaults (storage bindings above 128 MiB on most
    /// real GPUs). Off by default so native runs behave like the browser; the benchmark uses it to show what
    /// a card can do at sizes whose activations exceed 128 MiB (the MoVQ at 512 px).
    pub adapter_limits: bool,
    /// Attention through the tiled GEMM (scores per head and block of queries, softmax, P·V) instead of the
    /// fused flash kernel, for every head dim (default false: flash up to head dim 256). For the benchmark, to
    /// compare the two on one device in one run, and tests.
    pub blocked_attention: bool,
    /// GEMM tiles computed in f16 (f16 shared tiles and FMAs per K-tile, f32 totals) where the adapter has
    /// `shader-f16` (default false: f32 arithmetic everywhere, which the goldens' bounds assume). For the
    /// decoders at speed, as diffusers runs them in fp16; the bench's `--f16-math`.
    pub f16_math: bool,
    /// Split-K for the tiled GEMM (slices of K computed by separate workgroups into scratch, then added in a
    /// fixed order and given the epilogue): `None` (default) splits where the output has too few tiles to fill
    /// a GPU and K is long (ops/gpu/ops/gemm.rs, `split_k_slices`); `Some(true)` splits every tiled product
    /// whose K holds two K-tiles, `Some(false)` never. For tests and the benchmark (`--split-k`).
    pub split_k: Option<bool>,
    /// Reduce in the norms and the softmax through subgroup operations where the adapter has the `subgroups`
    /// feature (default true). Off: the portable workgroup-memory path every adapter has, so tests can compare
    /// both on one adapter.
    pub use_subgroups: bool,
    /// Submit and wait for each dispatch on its own, adding its wall time to its kernel variant's total
    /// (`GpuBackend::take_kernel_profile`; the bench's `--profile-kernels`), to see where a forward's time
    /// goes on a device without a profiler. Native only (the browser cannot wait). Every op then costs a
    /// round trip (tens of µs), so the totals compare kernels; they are not the forward's speed.
    pub profile_kernels: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            use_shader_f16: true,
            max_tensor_bytes: None,
            gemm_tile: None,
            vec4_loads: true,
            adapter_limits: false,
            blocked_attention: false,
            f16_math: false,
            split_k: None,
            use_subgroups: true,
            profile_kernels: false,
        }
    }
}

/// Dispatches and total milliseconds per kernel variant (its `Debug` form: the GEMM's weight, input and
/// tiling are part of it), from GpuOptions::profile_kernels.
pub type KernelProfile = std::collections::BTreeMap<String, (u64, f64)>;
