//! The ops of the [`Backend`](crate::ops::Backend) trait, by family. Each function checks its operands
//! (shapes, dtypes, split weights), converts stored weights to f32 where its kernel has no packed path, takes
//! its output from the pool and records its dispatches; `GpuBackend`'s `Backend` impl (gpu/mod.rs) calls them.

pub(super) mod attention;
pub(super) mod elementwise;
pub(super) mod gemm;
pub(super) mod image;
pub(super) mod layout;
pub(super) mod norm;
pub(super) mod peak;
