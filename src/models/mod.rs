//! Models, written once against the op layer ([`crate::ops::Backend`]). Each has a config struct read from
//! the Hugging Face `config.json`, a `new(vb, cfg)` constructor taking HF weight names, and `forward`.

pub mod clip;
pub mod conv;
pub mod layers;
pub mod movq;
pub mod prior;
pub mod unet;

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;

/// Parses a `config.json`, naming the file and the field in the error.
pub fn parse_config<T: DeserializeOwned>(path: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::config(path, format!("invalid config: {e}")))
}

/// A normalisation epsilon (`layer_norm_eps`, `norm_eps`) must be a positive number: 0 divides by zero on a
/// constant row, a negative value takes the square root of a negative variance — NaN either way.
pub fn check_norm_eps(path: &str, field: &str, eps: f64) -> Result<()> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(Error::config(path, format!("`{field}` is {eps}; it must be a positive number (e.g. 1e-5)")))
    }
}
