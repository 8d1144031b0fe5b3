//! [`AnyBackend`]: the backend chosen at run time (the CPU or the GPU) as one type that implements [`Backend`],
//! as candle's `Device` is one type over its CPU, CUDA and Metal storages. Engines are built once over it —
//! `LambdaEngine<AnyBackend>`, `DecoderEngine<AnyBackend>` — so the CLI and the wasm API hold one engine type
//! whatever the user picked, instead of an enum of engines with a `match` at every call. The dispatch is one
//! `match` per op, small next to any op's work. In a build without the `gpu` feature the `Gpu` arm holds the
//! stand-in `GpuBackend`, which cannot be constructed, so the same code compiles in every build.

use super::cpu::CpuBackend;
use super::gpu::GpuBackend;
use super::{Activation, Backend, WeightDType};
use crate::error::{Error, Result};

/// The CPU (candle) or the GPU (WGSL through wgpu), chosen at run time (see `ops::choice`).
#[derive(Clone)]
pub enum AnyBackend {
    Cpu(CpuBackend),
    Gpu(GpuBackend),
}

/// A tensor of an [`AnyBackend`]: of the backend that made it.
#[derive(Clone)]
pub enum AnyTensor {
    Cpu(<CpuBackend as Backend>::Tensor),
    Gpu(<GpuBackend as Backend>::Tensor),
}

/// A tensor handed to the other backend than the one that made it: a bug in the caller, reported as an error
/// rather than a panic.
fn foreign(backend: &str) -> Error {
    Error::Backend(format!("a tensor of another backend was given to the {backend} backend"))
}

impl AnyTensor {
    fn cpu(&self) -> Result<&<CpuBackend as Backend>::Tensor> {
        match self {
            AnyTensor::Cpu(t) => Ok(t),
            AnyTensor::Gpu(_) => Err(foreign("cpu")),
        }
    }

    fn gpu(&self) -> Result<&<GpuBackend as Backend>::Tensor> {
        match self {
            AnyTensor::Gpu(t) => Ok(t),
            AnyTensor::Cpu(_) => Err(foreign("webgpu")),
        }
    }
}

impl AnyBackend {
    /// Whether this is the GPU backend.
    pub fn is_gpu(&self) -> bool {
        matches!(self, AnyBackend::Gpu(_))
    }

    /// The GPU adapter in words, or `None` on the CPU.
    pub fn adapter_description(&self) -> Option<String> {
        match self {
            AnyBackend::Cpu(_) => None,
            AnyBackend::Gpu(g) => Some(g.adapter_description()),
        }
    }
}

/// `$body` run on the concrete backend `$be`, with `$t` the function that takes an [`AnyTensor`] argument to
/// that backend's tensor (an error for the other backend's); the result is wrapped back into an [`AnyTensor`].
macro_rules! on_each {
    ($self:expr, |$be:ident, $t:ident| $body:expr) => {
        match $self {
            AnyBackend::Cpu($be) => {
                let $t = AnyTensor::cpu;
                $body.map(AnyTensor::Cpu)
            }
            AnyBackend::Gpu($be) => {
                let $t = AnyTensor::gpu;
                $body.map(AnyTensor::Gpu)
            }
        }
    };
}

/// Each of `parts` as the concrete backend's tensor.
fn all<'a, T>(parts: &[&'a AnyTensor], t: fn(&'a AnyTensor) -> Result<&'a T>) -> Result<Vec<&'a T>> {
    parts.iter().map(|&p| t(p)).collect()
}

/// An optional tensor argument as the concrete backend's tensor.
fn opt<'a, T>(x: Option<&'a AnyTensor>, t: fn(&'a AnyTensor) -> Result<&'a T>) -> Result<Option<&'a T>> {
    x.map(t).transpose()
}

impl Backend for AnyBackend {
    type Tensor = AnyTensor;

    fn name(&self) -> &'static str {
        match self {
            AnyBackend::Cpu(b) => b.name(),
            AnyBackend::Gpu(b) => b.name(),
        }
    }

    // The weight policies and the device queries must reach the concrete backend: the trait's defaults
    // (keep f32, nothing to wait for, no activation limit) would silently be wrong for the GPU.
    fn with_f16_weights(&self) -> Self {
        match self {
            AnyBackend::Cpu(b) => AnyBackend::Cpu(b.with_f16_weights()),
            AnyBackend::Gpu(b) => AnyBackend::Gpu(b.with_f16_weights()),
        }
    }

    fn with_int8_weights(&self) -> Self {
        match self {
            AnyBackend::Cpu(b) => AnyBackend::Cpu(b.with_int8_weights()),
            AnyBackend::Gpu(b) => AnyBackend::Gpu(b.with_int8_weights()),
        }
    }

    async fn sync(&self) -> Result<()> {
        match self {
            AnyBackend::Cpu(b) => b.sync().await,
            AnyBackend::Gpu(b) => b.sync().await,
        }
    }

    fn max_activation_bytes(&self) -> Option<u64> {
        match self {
            AnyBackend::Cpu(b) => b.max_activation_bytes(),
            AnyBackend::Gpu(b) => b.max_activation_bytes(),
        }
    }

    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<AnyTensor> {
        on_each!(self, |be, _t| be.upload_weight(raw, dtype, shape))
    }

    fn layout_for_products(&self, w: AnyTensor) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.layout_for_products(t(&w)?.clone()))
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<AnyTensor> {
        on_each!(self, |be, _t| be.from_f32(data, shape))
    }

    fn shape(&self, t: &AnyTensor) -> Vec<usize> {
        match (self, t) {
            (AnyBackend::Cpu(b), AnyTensor::Cpu(t)) => b.shape(t),
            (AnyBackend::Gpu(b), AnyTensor::Gpu(t)) => b.shape(t),
            // A foreign tensor (a caller's bug; an engine holds one backend and every tensor it makes): no shape
            // from this backend, and the next op on the tensor fails naming the mix-up.
            _ => Vec::new(),
        }
    }

    async fn read_f32(&self, t: &AnyTensor) -> Result<Vec<f32>> {
        match self {
            AnyBackend::Cpu(b) => b.read_f32(t.cpu()?).await,
            AnyBackend::Gpu(b) => b.read_f32(t.gpu()?).await,
        }
    }

    fn byte_size(&self, t: &AnyTensor) -> usize {
        match (self, t) {
            (AnyBackend::Cpu(b), AnyTensor::Cpu(t)) => b.byte_size(t),
            (AnyBackend::Gpu(b), AnyTensor::Gpu(t)) => b.byte_size(t),
            // Memory reports only: a foreign tensor is not held by this backend.
            _ => 0,
        }
    }

    fn matmul(&self, a: &AnyTensor, b: &AnyTensor) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.matmul(t(a)?, t(b)?))
    }

    fn linear(&self, x: &AnyTensor, w: &AnyTensor, bias: Option<&AnyTensor>, act: Activation) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.linear(t(x)?, t(w)?, opt(bias, t)?, act))
    }

    fn linear_residual(
        &self,
        x: &AnyTensor,
        w: &AnyTensor,
        bias: Option<&AnyTensor>,
        residual: &AnyTensor,
    ) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.linear_residual(t(x)?, t(w)?, opt(bias, t)?, t(residual)?))
    }

    fn layer_norm(&self, x: &AnyTensor, gamma: &AnyTensor, beta: &AnyTensor, eps: f64) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.layer_norm(t(x)?, t(gamma)?, t(beta)?, eps))
    }

    fn attention(
        &self,
        q: &AnyTensor,
        k: &AnyTensor,
        v: &AnyTensor,
        heads: usize,
        scale: f32,
        bias: Option<&AnyTensor>,
    ) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.attention(t(q)?, t(k)?, t(v)?, heads, scale, opt(bias, t)?))
    }

    fn add(&self, a: &AnyTensor, b: &AnyTensor) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.add(t(a)?, t(b)?))
    }

    fn activation(&self, x: &AnyTensor, act: Activation) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.activation(t(x)?, act))
    }

    fn gather_rows(&self, table: &AnyTensor, ids: &[u32]) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.gather_rows(t(table)?, ids))
    }

    fn concat_rows(&self, parts: &[&AnyTensor]) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.concat_rows(&all(parts, t)?))
    }

    fn slice_rows(&self, x: &AnyTensor, start: usize, len: usize) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.slice_rows(t(x)?, start, len))
    }

    fn reshape(&self, x: &AnyTensor, shape: &[usize]) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.reshape(t(x)?, shape))
    }

    fn image_patches(&self, image: &AnyTensor, patch: usize) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.image_patches(t(image)?, patch))
    }

    fn conv2d(
        &self,
        x: &AnyTensor,
        height: usize,
        width: usize,
        weight: &AnyTensor,
        bias: Option<&AnyTensor>,
        kernel: usize,
    ) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.conv2d(t(x)?, height, width, t(weight)?, opt(bias, t)?, kernel))
    }

    fn group_norm(
        &self,
        x: &AnyTensor,
        groups: usize,
        gamma: &AnyTensor,
        beta: &AnyTensor,
        eps: f64,
    ) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.group_norm(t(x)?, groups, t(gamma)?, t(beta)?, eps))
    }

    fn group_norm_act(
        &self,
        x: &AnyTensor,
        groups: usize,
        gamma: &AnyTensor,
        beta: &AnyTensor,
        eps: f64,
        act: Activation,
    ) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.group_norm_act(t(x)?, groups, t(gamma)?, t(beta)?, eps, act))
    }

    fn avg_pool_2x2(&self, x: &AnyTensor, height: usize, width: usize) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.avg_pool_2x2(t(x)?, height, width))
    }

    fn resize_nearest(
        &self,
        x: &AnyTensor,
        height: usize,
        width: usize,
        out_height: usize,
        out_width: usize,
    ) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.resize_nearest(t(x)?, height, width, out_height, out_width))
    }

    fn concat_cols(&self, parts: &[&AnyTensor]) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.concat_cols(&all(parts, t)?))
    }

    fn mul(&self, a: &AnyTensor, b: &AnyTensor) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.mul(t(a)?, t(b)?))
    }

    fn scale_shift(&self, x: &AnyTensor, scale: &AnyTensor, shift: &AnyTensor) -> Result<AnyTensor> {
        on_each!(self, |be, t| be.scale_shift(t(x)?, t(scale)?, t(shift)?))
    }
}
