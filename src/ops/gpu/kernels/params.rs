//! Every kernel's uniform parameters as a `#[repr(C)]` struct laid out exactly like the `Params` struct of
//! its WGSL file (same field names, order and types; the WGSL's explicit `_pad` fields are here too, so both
//! sides round to 16 bytes alike). `tests/kernel_contracts.rs` parses every kernel with naga and compares
//! each `Params` with its twin's [`ParamsLayout`], which the [`kernel_params!`] macro derives from the struct
//! itself — a field added on one side only fails that test.

use crate::ops::Activation;

/// The code of an activation in `Params.act` (activation_fns.wgsl's `apply_activation`).
pub fn activation_code(act: Activation) -> u32 {
    match act {
        Activation::Identity => 0,
        Activation::GeluErf => 1,
        Activation::QuickGelu => 2,
        Activation::Silu => 3,
    }
}

/// The scalar type of a params field (every field is 4 bytes: WGSL's uniform layout then equals `repr(C)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    U32,
    F32,
}

/// One field of a params struct: name, type and byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamField {
    pub name: &'static str,
    pub ty: ParamType,
    pub offset: usize,
}

/// A params struct as the host lays it out: its Rust name, size in bytes and fields in order.
#[derive(Debug)]
pub struct ParamsLayout {
    pub rust_name: &'static str,
    pub size: usize,
    pub fields: &'static [ParamField],
}

/// A kernel's uniform parameters: plain bytes, with their layout for the contract test.
pub trait KernelParams: bytemuck::Pod {
    const LAYOUT: ParamsLayout;
}

/// Field types a params struct may use.
pub trait ParamScalar {
    const TYPE: ParamType;
}
impl ParamScalar for u32 {
    const TYPE: ParamType = ParamType::U32;
}
impl ParamScalar for f32 {
    const TYPE: ParamType = ParamType::F32;
}

/// Defines a params struct (`Pod`, `Default`) and its [`KernelParams::LAYOUT`] from one field list, so the
/// layout the test checks can never drift from the struct the host uploads.
macro_rules! kernel_params {
    ($($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ident),* $(,)? })*) => {$(
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        impl KernelParams for $name {
            const LAYOUT: ParamsLayout = ParamsLayout {
                rust_name: stringify!($name),
                size: std::mem::size_of::<$name>(),
                fields: &[$(ParamField {
                    name: stringify!($field),
                    ty: <$ty as ParamScalar>::TYPE,
                    offset: std::mem::offset_of!($name, $field),
                }),*],
            };
        }
    )*};
}

kernel_params! {
    /// gemm_params.wgsl: `y[m, n] = act(Σ_k X(m, k)·W(n, k) + bias[bias_off + n])`, see `ops/gemm.rs`.
    GemmParams {
        m: u32, n: u32, k: u32,
        w_sn: u32, w_sk: u32, w_off: u32,
        has_bias: u32, act: u32,
        x_stride: u32, x_off: u32,
        out_stride: u32, out_off: u32,
        bias_off: u32,
        conv_h: u32, conv_w: u32, conv_cin: u32, conv_ks: u32,
        w_row_len: u32, w_scale_off: u32,
        has_residual: u32,
        k_slice: u32, k_slices: u32,
        _pad0: u32, _pad1: u32,
    }
    /// layer_norm.wgsl
    LayerNormParams { cols: u32, eps: f32, _pad0: u32, _pad1: u32 }
    /// flash_attention.wgsl
    AttentionParams { t: u32, s: u32, d: u32, width: u32, has_bias: u32, scale: f32, _pad0: u32, _pad1: u32 }
    /// fma_peak.wgsl, fma_peak_f16.wgsl
    FmaPeakParams { iters: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
    /// softmax_rows.wgsl
    SoftmaxRowsParams { rows: u32, cols: u32, has_bias: u32, bias_off: u32, scale: f32, _pad0: u32, _pad1: u32, _pad2: u32 }
    /// elementwise_pair.wgsl (add, mul)
    ElementwisePairParams { count: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
    /// activation.wgsl
    ActivationParams { count: u32, act: u32, _pad0: u32, _pad1: u32 }
    /// gather_rows.wgsl
    GatherRowsParams { rows: u32, cols: u32, table_type: u32, first: u32, count: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
    /// unpack_f16.wgsl
    UnpackF16Params { count: u32, src_off: u32, dst_off: u32, _pad: u32 }
    /// dequantize_i8.wgsl
    DequantizeI8Params { count: u32, row_len: u32, _pad0: u32, _pad1: u32 }
    /// dequantize_blocks.wgsl
    DequantizeBlocksParams { rows: u32, cols: u32, q4: u32, _pad0: u32 }
    /// image_patches.wgsl
    ImagePatchesParams { h: u32, w: u32, patch_size: u32, grid_w: u32, cols: u32, count: u32, _pad0: u32, _pad1: u32 }
    /// group_norm.wgsl
    GroupNormParams { positions: u32, channels: u32, group_channels: u32, eps: f32, act: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
    /// scale_shift.wgsl
    ScaleShiftParams { count: u32, cols: u32, _pad0: u32, _pad1: u32 }
    /// avg_pool_2x2.wgsl
    AvgPool2x2Params { count: u32, channels: u32, in_width: u32, out_width: u32 }
    /// resize_nearest.wgsl
    ResizeNearestParams { count: u32, channels: u32, in_height: u32, in_width: u32, out_height: u32, out_width: u32, _pad0: u32, _pad1: u32 }
    /// copy_cols.wgsl
    CopyColsParams { count: u32, cols: u32, total: u32, col0: u32 }
}
