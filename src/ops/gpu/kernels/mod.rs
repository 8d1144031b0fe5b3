//! The WGSL kernels (the `.wgsl` files in this folder) and the host's description of them.

mod registry;

pub(super) use registry::{GemmInput, GemmTile, GemmWeight, Kernel};
