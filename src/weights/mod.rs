//! Streaming weight loading: model files are read through [`ModelFiles`] (a folder on disk, bytes in
//! memory, or — in the browser — HTTP ranges), safetensors are parsed header first, then each tensor is
//! read by its byte range and handed straight to the backend. No whole file is ever held in memory.

pub mod files;
pub mod gguf;
#[cfg(target_arch = "wasm32")]
pub mod http;
pub mod safetensors;
pub mod store;

#[cfg(not(target_arch = "wasm32"))]
pub use files::DirFiles;
pub use files::{ByteSource, MemFiles, ModelFiles, TensorBytes};
pub use store::{
    load_component_weights, load_component_weights_where, open_component, WeightFile, WeightStore, Weights,
    TENSORS_IN_FLIGHT,
};
