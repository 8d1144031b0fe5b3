//! One error type for the whole engine. Every variant carries enough words to tell a user what is wrong
//! and where (file, tensor, field); nothing in the engine panics on bad input.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (missing, unreadable, network).
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// A config file is missing a field or has a wrong value.
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    /// Weights are malformed, truncated, missing, unexpected or of the wrong shape.
    #[error("{source_name}: {message}")]
    Weights { source_name: String, message: String },
    /// An image could not be decoded or is unacceptable (too large, empty, corrupt).
    #[error("image: {0}")]
    Image(String),
    /// Tokenizer files or tokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad argument or input given by the caller.
    #[error("{0}")]
    Input(String),
    /// A backend failure inside an op (shape mismatch, a tensor too large for the kernels' indices, ...).
    #[error("backend: {0}")]
    Backend(String),
    /// The GPU device could not be opened or refused work: structured, so a caller can tell "no usable
    /// adapter" (where `auto` falls back to the CPU) from failures that must surface (out of memory, ...).
    #[error("backend: {0}")]
    Device(#[from] DeviceError),
    /// A stage computed NaN or infinity (corrupt weights, a config value out of range, an overflow): refused
    /// rather than handed on as a NaN embedding or a black image.
    #[error("{stage}: {count} of the {total} values computed are NaN or infinite (corrupt weights, a config value out of range, or an overflow)")]
    NonFinite { stage: String, count: usize, total: usize },
    /// The caller cancelled a long computation (e.g. a decode between two denoising steps).
    #[error("cancelled")]
    Cancelled,
}

/// What went wrong with the GPU device, by kind. [`DeviceError::means_no_usable_adapter`] is the rule that
/// `BackendChoice::Auto` falls back to the CPU by (`ops::choice`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// No adapter at all: no WebGPU in this browser, no Vulkan/Metal/DX12 driver natively.
    #[error("no WebGPU adapter available: {0}")]
    NoAdapter(String),
    /// An adapter exists but would not open a device (lost, or it cannot offer the features or limits asked).
    #[error("could not open the WebGPU device: {0}")]
    NoDevice(String),
    /// The crate was built without the `gpu` feature: `ops::gpu` is a stand-in whose constructors fail.
    #[error("this build has no WebGPU backend (built without the `gpu` feature)")]
    NotBuilt,
    /// The device ran out of memory (reported asynchronously, surfaced at the next `sync` or read).
    #[error(
        "the GPU is out of memory: the model's weights and activations do not fit in what this device offers (try \
         a smaller image, a smaller or int8 model, or close other programs using the GPU)"
    )]
    OutOfMemory,
    /// One activation is larger than one storage binding may be (only weights are split across buffers).
    #[error(
        "{what} needs {bytes} bytes, above this device's {limit}-byte storage-binding limit (only weights are \
         split across buffers, activations must fit one)"
    )]
    BindingLimit { what: String, bytes: u64, limit: u64 },
    /// Any other error the device reported (validation, device lost), in wgpu's words.
    #[error("WebGPU device error: {0}")]
    Reported(String),
}

impl DeviceError {
    /// Whether this error means there is no GPU to use here, so `auto` may quietly compute on the CPU. Every
    /// other error (out of memory, a binding limit, a validation error) is a real failure of a GPU that
    /// exists and is surfaced: falling back would hide a bug or a model that does not fit behind a slow CPU.
    pub fn means_no_usable_adapter(&self) -> bool {
        matches!(self, DeviceError::NoAdapter(_) | DeviceError::NoDevice(_) | DeviceError::NotBuilt)
    }
}

impl Error {
    pub fn io(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Io { path: path.to_string(), message: message.to_string() }
    }
    pub fn config(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Config { path: path.to_string(), message: message.to_string() }
    }
    pub fn weights(source_name: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Weights { source_name: source_name.to_string(), message: message.to_string() }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Backend(e.to_string())
    }
}
