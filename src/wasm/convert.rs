//! The typed JS boundary: requests arrive as JS values and are deserialized into the request structs of
//! `engine.rs` and `decoder.rs` (serde-wasm-bindgen, the field that does not fit named by its path, e.g.
//! `prior request: subjects[1].keyword: invalid type: …`); results are structs serialized to plain JS objects.
//! Numbers arrays cross as typed arrays (one copy, not a JS array of numbers): [`F32s`] as a `Float32Array`,
//! [`Bytes`] as a `Uint8Array`, [`I32s`] as an `Int32Array`, [`Rgba`] as a `Uint8ClampedArray`.

use crate::error::Error;
use js_sys::{Float32Array, Int32Array, Uint8Array, Uint8ClampedArray};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// An engine error as a JS `Error` carrying the same words.
pub(super) fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A result as a JS value: structs and maps become plain objects (not ES `Map`s), typed-array fields typed
/// arrays.
pub(super) fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true))
        .map_err(|e| JsError::new(&format!("cannot build the result: {e}")))
}

/// A request from a JS value; `what` names it in errors, with the path of the field that does not fit.
pub(super) fn from_js<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsError> {
    serde_path_to_error::deserialize(serde_wasm_bindgen::Deserializer::from(value)).map_err(|e| {
        let path = e.path().to_string();
        // serde-wasm-bindgen's error is a JS Error: its message, without the `Error: ` its Display adds.
        let inner = JsValue::from(e.into_inner());
        let words =
            inner.dyn_ref::<js_sys::Error>().map_or_else(|| format!("{inner:?}"), |e| String::from(e.message()));
        if path == "." {
            JsError::new(&format!("{what}: {words}"))
        } else {
            JsError::new(&format!("{what}: {path}: {words}"))
        }
    })
}

/// A vector that crosses the boundary as the typed array `$js`; `$expected` words the error for any other
/// JS value.
macro_rules! typed_array {
    ($(#[$doc:meta])* $name:ident, $elem:ty, $js:ty, $expected:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub(super) struct $name(pub Vec<$elem>);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serde_wasm_bindgen::preserve::serialize(&<$js>::from(self.0.as_slice()), serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value: JsValue = serde_wasm_bindgen::preserve::deserialize(deserializer)?;
                match value.dyn_ref::<$js>() {
                    Some(array) => Ok($name(array.to_vec())),
                    None => Err(D::Error::custom(concat!("expected ", $expected))),
                }
            }
        }
    };
}

typed_array!(
    /// f32 values as a `Float32Array` (embeddings, noise, latents).
    F32s, f32, Float32Array, "a Float32Array"
);
typed_array!(
    /// Bytes as a `Uint8Array` (an image file, an edge map).
    Bytes, u8, Uint8Array, "a Uint8Array of the file's bytes"
);
typed_array!(
    /// i32 values as an `Int32Array` (token ids, attention masks).
    I32s, i32, Int32Array, "an Int32Array"
);
typed_array!(
    /// RGBA bytes as a `Uint8ClampedArray` (what `ImageData` takes).
    Rgba, u8, Uint8ClampedArray, "a Uint8ClampedArray"
);

impl Rgba {
    /// RGB bytes as opaque RGBA.
    pub(super) fn from_rgb(rgb: &[u8]) -> Rgba {
        Rgba(rgb.chunks_exact(3).flat_map(|px| [px[0], px[1], px[2], 255]).collect())
    }

    /// Gray bytes (0..=255) as opaque RGBA.
    pub(super) fn from_gray(gray: &[u8]) -> Rgba {
        Rgba(gray.iter().flat_map(|&v| [v, v, v, 255]).collect())
    }
}

/// `(name, value)` pairs as one JS object whose keys keep this order (stage timings).
pub(super) struct Ordered<'a, V>(pub &'a [(String, V)]);

impl<V: Serialize> Serialize for Ordered<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A non-negative integer given as a JS number (exact up to 2⁵³), or `default` when absent.
pub(super) fn whole_number(value: Option<f64>, name: &str, default: u64) -> Result<u64, JsError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => Ok(n as u64),
        Some(_) => Err(JsError::new(&format!("{name} must be a non-negative integer"))),
    }
}

/// [`whole_number`] that must also fit this platform's `usize` (a count or a size).
pub(super) fn count(value: Option<f64>, name: &str, default: usize) -> Result<usize, JsError> {
    let v = whole_number(value, name, default as u64)?;
    usize::try_from(v).map_err(|_| JsError::new(&format!("{name} = {v} is too large")))
}
