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
    /// A backend failure (shape mismatch inside an op, device lost, ...).
    #[error("backend: {0}")]
    Backend(String),
    /// A stage computed NaN or infinity (corrupt weights, a config value out of range, an overflow): refused
    /// rather than handed on as a NaN embedding or a black image.
    #[error("{stage}: {count} of the {total} values computed are NaN or infinite (corrupt weights, a config value out of range, or an overflow)")]
    NonFinite { stage: String, count: usize, total: usize },
    /// The caller cancelled a long computation (e.g. a decode between two denoising steps).
    #[error("cancelled")]
    Cancelled,
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
