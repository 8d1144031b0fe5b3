//! Models, written once against the op layer ([`crate::ops::Backend`]). Each has a config struct read from
//! the Hugging Face `config.json`, a `new(vb, cfg)` constructor taking HF weight names, and `forward`.

pub mod clip;
pub mod conv;
pub mod movq;
pub mod prior;
pub mod unet;

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;

/// Parses a `config.json`, naming the file and the field in the error.
pub fn parse_config<T: DeserializeOwned>(path: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::config(path, format!("invalid config: {e}")))
}
