//! `ops::gpu` when the crate is built without the `gpu` feature: the same public types and constructors as the
//! WebGPU backend (as candle's dummy CUDA and Metal backends stand in for theirs), so callers pick a backend
//! without any `cfg` of their own. The constructors fail with [`DeviceError::NotBuilt`], which `auto` treats
//! as "no usable adapter" (`ops::choice`). No value of [`GpuBackend`] or [`GpuTensor`] can exist: each holds an
//! uninhabited field, so every method is `absurd(&self.never)`, an empty `match` the compiler proves
//! unreachable: nothing here panics.

use super::{Activation, Backend, WeightDType};
use crate::error::{DeviceError, Result};
use std::convert::Infallible;
use std::future::Future;

pub use super::gpu_options::{GpuOptions, KernelProfile};

/// Activation-pool counters (as the real backend's; never produced here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub buffers: usize,
    pub bytes: u64,
    pub free: usize,
}

/// No tensor of a backend that cannot be opened.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    _never: Infallible,
}

/// The WebGPU backend of a build without it: never constructed.
#[derive(Clone, Debug)]
pub struct GpuBackend {
    never: Infallible,
}

/// Any value, from one that cannot exist (the body of every method below).
fn absurd<T>(never: &Infallible) -> T {
    match *never {}
}

impl GpuBackend {
    /// Always [`DeviceError::NotBuilt`].
    pub async fn new() -> Result<GpuBackend> {
        Self::with_options(GpuOptions::default()).await
    }

    /// Always [`DeviceError::NotBuilt`].
    pub async fn with_options(_options: GpuOptions) -> Result<GpuBackend> {
        Err(DeviceError::NotBuilt.into())
    }

    pub fn adapter_description(&self) -> String {
        absurd(&self.never)
    }

    pub fn has_shader_f16(&self) -> bool {
        absurd(&self.never)
    }

    pub fn has_f16_math(&self) -> bool {
        absurd(&self.never)
    }

    pub fn is_cpu_adapter(&self) -> bool {
        absurd(&self.never)
    }

    pub fn take_kernel_profile(&self) -> KernelProfile {
        absurd(&self.never)
    }

    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        absurd(&self.never)
    }

    pub fn pool_stats(&self) -> PoolStats {
        absurd(&self.never)
    }

    pub async fn fma_peak_gflops(&self, _f16: bool) -> Result<Option<f64>> {
        absurd(&self.never)
    }

    pub fn uniform_buffers(&self) -> usize {
        absurd(&self.never)
    }

    pub fn flush(&self) {
        absurd(&self.never)
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;

    fn name(&self) -> &'static str {
        absurd(&self.never)
    }
    fn with_f16_weights(&self) -> Self {
        absurd(&self.never)
    }
    fn with_int8_weights(&self) -> Self {
        absurd(&self.never)
    }
    fn upload_weight(&self, _raw: &[u8], _dtype: WeightDType, _shape: &[usize]) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn from_f32(&self, _data: &[f32], _shape: &[usize]) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn shape(&self, _t: &GpuTensor) -> Vec<usize> {
        absurd(&self.never)
    }
    fn read_f32(&self, _t: &GpuTensor) -> impl Future<Output = Result<Vec<f32>>> {
        std::future::ready(absurd(&self.never))
    }
    fn byte_size(&self, _t: &GpuTensor) -> usize {
        absurd(&self.never)
    }
    fn sync(&self) -> impl Future<Output = Result<()>> {
        std::future::ready(absurd(&self.never))
    }
    fn max_activation_bytes(&self) -> Option<u64> {
        absurd(&self.never)
    }
    fn matmul(&self, _a: &GpuTensor, _b: &GpuTensor) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn linear(&self, _x: &GpuTensor, _w: &GpuTensor, _bias: Option<&GpuTensor>, _act: Activation) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn layer_norm(&self, _x: &GpuTensor, _gamma: &GpuTensor, _beta: &GpuTensor, _eps: f64) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn attention(
        &self,
        _q: &GpuTensor,
        _k: &GpuTensor,
        _v: &GpuTensor,
        _heads: usize,
        _scale: f32,
        _bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn add(&self, _a: &GpuTensor, _b: &GpuTensor) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn activation(&self, _x: &GpuTensor, _act: Activation) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn gather_rows(&self, _table: &GpuTensor, _ids: &[u32]) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn concat_rows(&self, _parts: &[&GpuTensor]) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn slice_rows(&self, _x: &GpuTensor, _start: usize, _len: usize) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn reshape(&self, _x: &GpuTensor, _shape: &[usize]) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn image_patches(&self, _image: &GpuTensor, _patch: usize) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn conv2d(
        &self,
        _x: &GpuTensor,
        _height: usize,
        _width: usize,
        _weight: &GpuTensor,
        _bias: Option<&GpuTensor>,
        _kernel: usize,
    ) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn group_norm(
        &self,
        _x: &GpuTensor,
        _groups: usize,
        _gamma: &GpuTensor,
        _beta: &GpuTensor,
        _eps: f64,
    ) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn avg_pool_2x2(&self, _x: &GpuTensor, _height: usize, _width: usize) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn resize_nearest(
        &self,
        _x: &GpuTensor,
        _height: usize,
        _width: usize,
        _out_height: usize,
        _out_width: usize,
    ) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn concat_cols(&self, _parts: &[&GpuTensor]) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn mul(&self, _a: &GpuTensor, _b: &GpuTensor) -> Result<GpuTensor> {
        absurd(&self.never)
    }
    fn scale_shift(&self, _x: &GpuTensor, _scale: &GpuTensor, _shift: &GpuTensor) -> Result<GpuTensor> {
        absurd(&self.never)
    }
}

// Native only: the test blocks on the future with pollster, a native dev-dependency.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn opening_the_gpu_in_a_build_without_it_is_the_not_built_error() {
        let err = pollster::block_on(GpuBackend::new()).err().expect("the stand-in never opens");
        assert!(matches!(err, crate::Error::Device(DeviceError::NotBuilt)), "{err:?}");
        assert!(err.to_string().contains("built without the `gpu` feature"), "{err}");
    }
}
