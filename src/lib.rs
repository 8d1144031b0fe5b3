//! lambda-eclipse: λ-ECLIPSE multi-subject personalised image embeddings, native and in the browser.
//!
//! Map of the crate (see ARCHITECTURE.md):
//! - [`ops`]: the op layer models are written against, and its backends (CPU on candle-core).
//! - [`weights`]: streaming safetensors loading from files, bytes or HTTP ranges.
//! - [`models`]: CLIP text and vision towers, the λ prior, the Kandinsky 2.2 decoder's UNet and MoVQ.
//! - [`tokenizer`], [`image`]: CLIP tokenizer and Pillow/OpenCV-exact image processing.
//! - [`pipeline`]: loading components from a model folder, computing embeddings and decoding them to images
//!   (used by CLI, wasm, tests).
//! - `wasm`: the JavaScript API (wasm32 only).

pub mod bench;
// The HTTP client of a GPU decoder endpoint (server/): native CLI builds only (ureq is part of `cli`).
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod decoder_client;
pub mod error;
pub mod image;
pub mod models;
pub mod ops;
pub mod pipeline;
// `lambda-eclipse quantize`: reads and writes folders on disk (native CLI builds only).
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod quantize;
pub mod tensor_file;
pub mod timing;
pub mod tokenizer;
pub mod weights;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};
