//! Which backend computes, and how it keeps weight matrices: decided here, once, for the CLI (`--backend`,
//! `--f32-weights`/`--int8-weights`), the wasm engine (`load({ backend })`) and the wasm decoder
//! (`loadDecoder({ backend, weights })`).
//!
//! The one rule worth a test: `auto` computes on the CPU only when there is no usable GPU here (no adapter,
//! an adapter that would not open a device, a build without the `gpu` feature). Any other GPU error — out of
//! memory, a binding limit, a validation error, a bad option — is surfaced: quietly computing on a CPU many
//! times slower would hide a bug or a model that does not fit ([`auto_fallback`]).

use super::any::AnyBackend;
use super::cpu::CpuBackend;
use super::gpu::{GpuBackend, GpuOptions};
use super::Backend;
use crate::error::{Error, Result};
use std::str::FromStr;

/// Whether this build has the WebGPU backend; without it `ops::gpu` is a stand-in whose constructors fail
/// with `DeviceError::NotBuilt`.
pub const GPU_BUILT: bool = cfg!(feature = "gpu");

/// The backend a user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// The GPU when an adapter exists, else the CPU.
    Auto,
    Gpu,
    Cpu,
}

impl FromStr for BackendChoice {
    type Err = Error;

    /// The JS API's words: `"auto"`, `"webgpu"` (or `"gpu"`) and `"cpu"`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "webgpu" | "gpu" => Ok(BackendChoice::Gpu),
            "cpu" => Ok(BackendChoice::Cpu),
            other => Err(Error::Input(format!("backend must be \"auto\", \"webgpu\" or \"cpu\", not \"{other}\""))),
        }
    }
}

/// A backend opened for a [`BackendChoice`].
pub struct Opened {
    pub backend: AnyBackend,
    /// Why `auto` computes on the CPU (the GPU's error in words), if it does.
    pub fallback_reason: Option<String>,
}

impl BackendChoice {
    /// Opens the chosen backend; the GPU with `options` (the decoders ask for the adapter's own limits).
    /// `Gpu` without a usable GPU is an error; `Auto` then computes on the CPU (see [`auto_fallback`]).
    pub async fn open(self, options: GpuOptions) -> Result<Opened> {
        match self {
            BackendChoice::Cpu => Ok(Opened { backend: AnyBackend::Cpu(CpuBackend::new()), fallback_reason: None }),
            BackendChoice::Gpu => {
                Ok(Opened { backend: AnyBackend::Gpu(GpuBackend::with_options(options).await?), fallback_reason: None })
            }
            BackendChoice::Auto => auto_fallback(GpuBackend::with_options(options).await),
        }
    }
}

/// `auto`'s decision on the outcome of opening the GPU: the GPU if it opened; the CPU, with the reason, if the
/// error says there is no usable GPU here ([`crate::error::DeviceError::means_no_usable_adapter`]); any other
/// error as it is.
pub fn auto_fallback(gpu: Result<GpuBackend>) -> Result<Opened> {
    match gpu {
        Ok(gpu) => Ok(Opened { backend: AnyBackend::Gpu(gpu), fallback_reason: None }),
        Err(Error::Device(e)) if e.means_no_usable_adapter() => {
            Ok(Opened { backend: AnyBackend::Cpu(CpuBackend::new()), fallback_reason: Some(e.to_string()) })
        }
        Err(e) => Err(e),
    }
}

/// How weight matrices (rank ≥ 2) are kept; vectors (biases, norms) always stay f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightStorage {
    /// As the file stores them (f32 stays f32): what parity with diffusers' float32 goldens needs. Its word in
    /// the APIs is `"f32"`.
    AsStored,
    /// f32 matrices kept as f16 where the backend computes from f16 (the GPU; the CPU keeps f32): half the
    /// memory, about 1e-3 relative error. The decoders' default.
    #[default]
    F16,
    /// Quantised at load to int8 per output channel (`Backend::with_int8_weights`): a quarter of f32's
    /// memory, an approximation (the picture changes slightly).
    Int8,
}

impl WeightStorage {
    /// `backend` keeping its weight matrices this way.
    pub fn apply<B: Backend>(self, backend: B) -> B {
        match self {
            WeightStorage::AsStored => backend,
            WeightStorage::F16 => backend.with_f16_weights(),
            WeightStorage::Int8 => backend.with_int8_weights(),
        }
    }

    /// The word the APIs use: `"f32"`, `"f16"` or `"int8"`.
    pub fn name(self) -> &'static str {
        match self {
            WeightStorage::AsStored => "f32",
            WeightStorage::F16 => "f16",
            WeightStorage::Int8 => "int8",
        }
    }

    /// What the browser's decoder keeps on `backend` when asked for `self`: as asked on the GPU, f32 on the
    /// CPU whatever was asked — the wasm CPU computes in f32 and has no int8 storage, so int8 there would
    /// change the picture and save no memory. (The native CLI does quantise on the CPU when asked, so the two
    /// backends can be compared on the same values.)
    pub fn in_browser_on(self, backend: &AnyBackend) -> WeightStorage {
        if backend.is_gpu() {
            self
        } else {
            WeightStorage::AsStored
        }
    }
}

impl FromStr for WeightStorage {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(WeightStorage::F16),
            "int8" => Ok(WeightStorage::Int8),
            "f32" => Ok(WeightStorage::AsStored),
            other => Err(Error::Input(format!("weights must be \"f16\", \"int8\" or \"f32\", not \"{other}\""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DeviceError;

    fn outcome(err: Error) -> std::result::Result<Option<String>, String> {
        auto_fallback(Err(err))
            .map(|o| {
                assert!(!o.backend.is_gpu(), "a fallback computes on the CPU");
                o.fallback_reason
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn auto_falls_back_to_the_cpu_only_when_there_is_no_usable_gpu() {
        for no_gpu in [
            DeviceError::NoAdapter("no adapter found".into()),
            DeviceError::NoDevice("lost".into()),
            DeviceError::NotBuilt,
        ] {
            let words = no_gpu.to_string();
            assert_eq!(outcome(no_gpu.into()), Ok(Some(words)), "the reason is the GPU's error in words");
        }
    }

    #[test]
    fn auto_surfaces_every_other_gpu_error() {
        let surfaced = [
            Error::from(DeviceError::OutOfMemory),
            DeviceError::BindingLimit { what: "attention scores".into(), bytes: 1 << 28, limit: 1 << 27 }.into(),
            DeviceError::Reported("Validation Error".into()).into(),
            // A bad option (e.g. a GEMM tile the kernels lack) is the caller's error, not a missing GPU.
            Error::Backend("GEMM tile 32: the kernels have 64 and 128".into()),
        ];
        for err in surfaced {
            let words = err.to_string();
            assert_eq!(outcome(err), Err(words));
        }
    }

    #[test]
    fn backend_and_weight_words_parse_and_bad_ones_are_named() {
        assert_eq!("auto".parse::<BackendChoice>().unwrap(), BackendChoice::Auto);
        assert_eq!("webgpu".parse::<BackendChoice>().unwrap(), BackendChoice::Gpu);
        assert_eq!("gpu".parse::<BackendChoice>().unwrap(), BackendChoice::Gpu);
        assert_eq!("cpu".parse::<BackendChoice>().unwrap(), BackendChoice::Cpu);
        let e = "cuda".parse::<BackendChoice>().unwrap_err().to_string();
        assert_eq!(e, r#"backend must be "auto", "webgpu" or "cpu", not "cuda""#);
        for w in [WeightStorage::AsStored, WeightStorage::F16, WeightStorage::Int8] {
            assert_eq!(w.name().parse::<WeightStorage>().unwrap(), w);
        }
        let e = "bf16".parse::<WeightStorage>().unwrap_err().to_string();
        assert_eq!(e, r#"weights must be "f16", "int8" or "f32", not "bf16""#);
    }

    #[test]
    fn the_browser_cpu_keeps_f32_whatever_is_asked() {
        let cpu = AnyBackend::Cpu(CpuBackend::new());
        for asked in [WeightStorage::AsStored, WeightStorage::F16, WeightStorage::Int8] {
            assert_eq!(asked.in_browser_on(&cpu), WeightStorage::AsStored);
        }
    }
}
