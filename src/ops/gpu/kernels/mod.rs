//! The WGSL kernels (the `.wgsl` files in this folder) and the host's description of them: which files make
//! each kernel variant and what each file promises ([`registry`]'s fragments), and every kernel's uniform
//! parameters as a Rust struct ([`params`]). Public so that `tests/kernel_contracts.rs` can check all of it
//! against the WGSL with naga, without a device.

pub mod params;
pub mod registry;

pub use params::{KernelParams, ParamField, ParamType, ParamsLayout};
pub use registry::{GemmInput, GemmTile, GemmWeight, Kernel, Reduction, WeightReader};

// ---- The contract language of the fragments ----

/// How a kernel binds a resource (all in group 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// One `@group(0) @binding(index) var name` of a kernel. Binding 0 is always the params uniform `p`; the host
/// passes the other buffers in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub index: u32,
    pub name: &'static str,
    pub access: Access,
}

/// A type in a fragment's function signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgslType {
    U32,
    F32,
    Bool,
    Vec2U32,
    Vec3U32,
    Vec4F32,
    /// The reductions' struct of built-ins (reduce_workgroup.wgsl, reduce_subgroup.wgsl).
    ReduceIds,
}

/// A function a fragment provides to the fragments it is assembled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: &'static str,
    pub args: &'static [WgslType],
    /// `None`: returns nothing.
    pub ret: Option<WgslType>,
}

/// One WGSL file (or inline piece) and its contract.
#[derive(Debug)]
pub struct Fragment {
    /// The file in src/ops/gpu/kernels/ (or a description of an inline piece).
    pub file: &'static str,
    pub source: &'static str,
    pub binds: &'static [Binding],
    pub provides: &'static [Function],
}

const fn bind(index: u32, name: &'static str, access: Access) -> Binding {
    Binding { index, name, access }
}
const P: Binding = bind(0, "p", Access::Uniform);
const fn read(index: u32, name: &'static str) -> Binding {
    bind(index, name, Access::Read)
}
const fn write(index: u32, name: &'static str) -> Binding {
    bind(index, name, Access::ReadWrite)
}
const fn func(name: &'static str, args: &'static [WgslType], ret: Option<WgslType>) -> Function {
    Function { name, args, ret }
}
