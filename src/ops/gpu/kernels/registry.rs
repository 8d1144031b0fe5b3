//! The kernel variants and how each one's WGSL is assembled from its files (WGSL has no includes, so shared
//! pieces are prepended).

/// The compute kernels, one WGSL file each (plus shared pieces prepended, WGSL having no includes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::ops::gpu) enum Kernel {
    /// The tiled GEMM (gemm_params.wgsl) for one way of reading the weight, one way of reading the input and
    /// one tiling.
    Gemm(GemmWeight, GemmInput, GemmTile),
    LayerNorm,
    Attention,
    Add,
    Activation,
    GatherRows,
    UnpackF16,
    DequantizeI8,
    ImagePatches,
    SoftmaxRows,
    GroupNorm,
    Mul,
    ScaleShift,
    AvgPool2x2,
    ResizeNearest,
    CopyCols,
}

/// How the tiled GEMM reads its right operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::ops::gpu) enum GemmWeight {
    F32,
    /// f16 packed two per u32, unpacked with `unpack2x16float` (every adapter).
    F16Packed,
    /// f16 read as WGSL `f16` (adapters with `shader-f16`).
    F16Native,
    /// int8 four per u32 with per-row scales, dequantised in the load.
    Int8,
}

/// The GEMM's output tile per workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::ops::gpu) enum GemmTile {
    /// 64×64, 4×4 per thread: small outputs.
    T64,
    /// 128×128, 8×8 per thread: both output dimensions ≥ 128.
    T128,
}

/// How the tiled GEMM reads its left operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::ops::gpu) enum GemmInput {
    /// A strided view of a row-major matrix.
    Dense,
    /// The same, four consecutive k at a time (and the weight likewise): only where k, strides and offsets
    /// are multiples of 4 and the weight is linear-layout.
    DenseVec4,
    /// Implicit im2col of a channels-last image (conv2d).
    Conv,
}

const ACTIVATION_FNS: &str = include_str!("activation_fns.wgsl");
const GEMM_PARAMS: &str = include_str!("gemm_params.wgsl");
const INT8_FNS: &str = include_str!("int8_fns.wgsl");
/// `c = combine(a, b)` over two same-shape tensors: add and mul prepend their `combine`.
const ELEMENTWISE_PAIR: &str = include_str!("elementwise_pair.wgsl");

impl Kernel {
    pub(in crate::ops::gpu) fn name(self) -> &'static str {
        match self {
            Kernel::Gemm(..) => "gemm",
            Kernel::LayerNorm => "layer_norm",
            Kernel::Attention => "attention",
            Kernel::Add => "add",
            Kernel::Activation => "activation",
            Kernel::GatherRows => "gather_rows",
            Kernel::UnpackF16 => "unpack_f16",
            Kernel::DequantizeI8 => "dequantize_i8",
            Kernel::ImagePatches => "image_patches",
            Kernel::SoftmaxRows => "softmax_rows",
            Kernel::GroupNorm => "group_norm",
            Kernel::Mul => "mul",
            Kernel::ScaleShift => "scale_shift",
            Kernel::AvgPool2x2 => "avg_pool_2x2",
            Kernel::ResizeNearest => "resize_nearest",
            Kernel::CopyCols => "copy_cols",
        }
    }

    pub(in crate::ops::gpu) fn source(self) -> String {
        match self {
            Kernel::Gemm(weight_kind, input, tile) => {
                let vec4 = input == GemmInput::DenseVec4;
                // The f16 files start with `enable f16;`, which must come first in a module.
                let weight = match (weight_kind, vec4) {
                    (GemmWeight::F32, false) => include_str!("gemm_w_f32.wgsl"),
                    (GemmWeight::F32, true) => include_str!("gemm_w_f32_vec4.wgsl"),
                    (GemmWeight::F16Packed, false) => include_str!("gemm_w_f16_packed.wgsl"),
                    (GemmWeight::F16Packed, true) => include_str!("gemm_w_f16_packed_vec4.wgsl"),
                    (GemmWeight::F16Native, false) => include_str!("gemm_w_f16.wgsl"),
                    (GemmWeight::F16Native, true) => include_str!("gemm_w_f16_vec4.wgsl"),
                    (GemmWeight::Int8, false) => include_str!("gemm_w_i8.wgsl"),
                    (GemmWeight::Int8, true) => include_str!("gemm_w_i8_vec4.wgsl"),
                };
                let weight_fns = if weight_kind == GemmWeight::Int8 { INT8_FNS } else { "" };
                let input = match input {
                    GemmInput::Dense => include_str!("gemm_x_dense.wgsl"),
                    GemmInput::DenseVec4 => include_str!("gemm_x_dense_vec4.wgsl"),
                    GemmInput::Conv => include_str!("gemm_x_conv.wgsl"),
                };
                let load = if vec4 { include_str!("gemm_load_vec4.wgsl") } else { include_str!("gemm_load.wgsl") };
                let tile = match tile {
                    GemmTile::T64 => include_str!("gemm_tile_64.wgsl"),
                    GemmTile::T128 => include_str!("gemm_tile_128.wgsl"),
                };
                [weight, weight_fns, ACTIVATION_FNS, GEMM_PARAMS, input, load, tile].concat()
            }
            Kernel::Activation => [ACTIVATION_FNS, include_str!("activation.wgsl")].concat(),
            Kernel::LayerNorm => include_str!("layer_norm.wgsl").into(),
            Kernel::Attention => [ACTIVATION_FNS, include_str!("attention.wgsl")].concat(),
            Kernel::Add => ["fn combine(x: f32, y: f32) -> f32 { return x + y; }\n", ELEMENTWISE_PAIR].concat(),
            Kernel::GatherRows => [INT8_FNS, include_str!("gather_rows.wgsl")].concat(),
            Kernel::UnpackF16 => include_str!("unpack_f16.wgsl").into(),
            Kernel::DequantizeI8 => [INT8_FNS, include_str!("dequantize_i8.wgsl")].concat(),
            Kernel::ImagePatches => include_str!("image_patches.wgsl").into(),
            Kernel::SoftmaxRows => [ACTIVATION_FNS, include_str!("softmax_rows.wgsl")].concat(),
            Kernel::GroupNorm => include_str!("group_norm.wgsl").into(),
            Kernel::Mul => ["fn combine(x: f32, y: f32) -> f32 { return x * y; }\n", ELEMENTWISE_PAIR].concat(),
            Kernel::ScaleShift => include_str!("scale_shift.wgsl").into(),
            Kernel::AvgPool2x2 => include_str!("avg_pool_2x2.wgsl").into(),
            Kernel::ResizeNearest => include_str!("resize_nearest.wgsl").into(),
            Kernel::CopyCols => include_str!("copy_cols.wgsl").into(),
        }
    }
}

