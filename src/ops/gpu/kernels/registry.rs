//! The kernel variants and the WGSL fragments each one is assembled from (WGSL has no includes), with every
//! fragment's contract as data: the bindings it declares and the functions it provides to the fragments it
//! is assembled with. `tests/kernel_contracts.rs` parses every variant with naga (no device needed) and checks
//! those contracts and each `Params` struct against its Rust twin (params.rs).
//!
//! The tiled GEMM is the one family with variants: a weight reader (how `w` is stored) × an input reader
//! (dense, dense four-at-a-time, implicit im2col) × a tiling. A weight reader is a [`WeightReader`]: the
//! fragment(s) that declare `w` at binding 2 and provide `load_w(n, k) -> f32` (one element at any strides)
//! and `load_w4(n, k) -> vec4<f32>` (k .. k+3 of output row n: k a multiple of 4, linear layout). A reader whose
//! two functions can share one declaration of `w` is one file (int8); f32 and f16 have a second file for the
//! four-at-a-time path because it binds `w` with a wider element type.

use super::params::{
    ActivationParams, AttentionParams, AvgPool2x2Params, CopyColsParams, DequantizeBlocksParams, DequantizeI8Params,
    ElementwisePairParams, FmaPeakParams, GatherRowsParams, GemmParams, GroupNormParams, ImagePatchesParams,
    KernelParams, LayerNormParams, ParamsLayout, ResizeNearestParams, ScaleShiftParams, SoftmaxRowsParams,
    UnpackF16Params,
};
use super::WgslType::{Bool, ReduceIds, Vec2U32, Vec3U32, Vec4F32, F32, U32};
use super::{func, read, write, Binding, Fragment, Function, P};

/// A fragment from its file, with its contract.
macro_rules! fragment {
    ($file:literal, binds: [$($b:expr),*], provides: [$($f:expr),*]) => {
        Fragment { file: $file, source: include_str!($file), binds: &[$($b),*], provides: &[$($f),*] }
    };
}

// ---- Shared pieces ----
const ACTIVATION_FNS: Fragment = fragment!("activation_fns.wgsl", binds: [], provides: [
    func("erf_f32", &[F32], Some(F32)),
    func("exp_f32", &[F32], Some(F32)),
    func("sigmoid_f32", &[F32], Some(F32)),
    func("apply_activation", &[F32, U32], Some(F32))
]);
const INT8_FNS: Fragment = fragment!("int8_fns.wgsl", binds: [], provides: [
    func("int8_at", &[U32, U32], Some(F32)),
    func("int8x4", &[U32], Some(Vec4F32))
]);

const BLOCKS_FNS: Fragment = fragment!("blocks_fns.wgsl", binds: [], provides: [
    func("block_bytes", &[U32, U32, Bool], Some(Vec3U32)),
    func("half_at", &[U32, U32], Some(F32)),
    func("word_at", &[U32, U32, U32], Some(U32)),
    func("block_q", &[U32, U32, U32, Bool], Some(F32)),
    func("block_q4", &[U32, U32, Bool], Some(Vec4F32))
]);

// ---- The tiled GEMM ----
const GEMM_PARAMS: Fragment =
    fragment!("gemm_params.wgsl", binds: [P], provides: [func("k_range", &[U32], Some(Vec2U32))]);
const GEMM_OUTPUTS: Fragment =
    fragment!("gemm_outputs.wgsl", binds: [read(3, "bias"), write(4, "y"), read(5, "residual")], provides: []);
const GEMM_EPILOGUE: Fragment =
    fragment!("gemm_epilogue.wgsl", binds: [], provides: [func("store", &[U32, U32, F32], None)]);
const GEMM_SPLIT_K_REDUCE: Fragment = fragment!("gemm_split_k_reduce.wgsl",
    binds: [read(1, "partials"), read(2, "bias"), write(3, "y"), read(4, "residual")], provides: []);
/// What the element-wise loaders read x through (gemm_load.wgsl, gemv_load.wgsl).
const X_ELEMENTS: &[Function] = &[
    func("x_row", &[U32], Some(Vec2U32)),
    func("x_col", &[U32], Some(Vec3U32)),
    func("load_x_at", &[Vec2U32, Vec3U32], Some(F32)),
    func("load_x", &[U32, U32], Some(F32)),
];
const GEMM_X_DENSE: Fragment = Fragment {
    file: "gemm_x_dense.wgsl",
    source: include_str!("gemm_x_dense.wgsl"),
    binds: &[read(1, "x")],
    provides: X_ELEMENTS,
};
const GEMM_X_DENSE_VEC4: Fragment = fragment!("gemm_x_dense_vec4.wgsl", binds: [read(1, "x")],
    provides: [func("load_x4", &[U32, U32], Some(Vec4F32))]);
const GEMM_X_CONV: Fragment = Fragment {
    file: "gemm_x_conv.wgsl",
    source: include_str!("gemm_x_conv.wgsl"),
    binds: &[read(1, "x")],
    provides: X_ELEMENTS,
};
const FETCH_TILES: Function = func("fetch_tiles", &[U32, U32, U32, U32], None);
const STAGE_TILES: Function = func("stage_tiles", &[U32, U32], None);
const GEMM_LOAD: Fragment = fragment!("gemm_load.wgsl", binds: [], provides: [FETCH_TILES, STAGE_TILES]);
const GEMM_LOAD_VEC4: Fragment = fragment!("gemm_load_vec4.wgsl", binds: [], provides: [FETCH_TILES, STAGE_TILES]);
/// A tiling's stores into its shared tiles: (buffer, k in the K-tile, row or column, value).
const PUT_X: Function = func("put_x", &[U32, U32, U32, F32], None);
const PUT_W: Function = func("put_w", &[U32, U32, U32, F32], None);
const GEMM_TILE_64: Fragment = fragment!("gemm_tile_64.wgsl", binds: [], provides: [PUT_X, PUT_W]);
const GEMM_TILE_128: Fragment = fragment!("gemm_tile_128.wgsl", binds: [], provides: [PUT_X, PUT_W]);
const GEMV_ACCUMULATE: Function = func("gemv_accumulate", &[U32, U32], None);
const GEMV_LOAD: Fragment = fragment!("gemv_load.wgsl", binds: [], provides: [GEMV_ACCUMULATE]);
const GEMV_LOAD_VEC4: Fragment = fragment!("gemv_load_vec4.wgsl", binds: [], provides: [GEMV_ACCUMULATE]);
const GEMM_TILE_GEMV: Fragment = fragment!("gemm_tile_gemv.wgsl", binds: [], provides: []);
const GEMM_TILE_GEMV_SUBGROUP: Fragment = fragment!("gemm_tile_gemv_subgroup.wgsl", binds: [], provides: []);
/// The tilings' element type and arithmetic within a K-tile (gemm_tile_64.wgsl), first in the module.
const TILE_F32: Fragment =
    Fragment { file: "(inline) tile_t = f32", source: "alias tile_t = f32;\n", binds: &[], provides: &[] };
const TILE_F16: Fragment =
    Fragment { file: "(inline) tile_t = f16", source: "alias tile_t = f16;\n", binds: &[], provides: &[] };
/// Opens a module whose tiling computes in f16 when its weight reader does not already.
const ENABLE_F16: Fragment =
    Fragment { file: "(inline) enable f16", source: "enable f16;\n", binds: &[], provides: &[] };

const LOAD_W: Function = func("load_w", &[U32, U32], Some(F32));
const LOAD_W4: Function = func("load_w4", &[U32, U32], Some(Vec4F32));
const W: Binding = read(2, "w");

/// How the GEMM reads one storage type of its right operand (module docs).
#[derive(Debug)]
pub struct WeightReader {
    /// Declares `w` and provides `load_w`.
    pub scalar: &'static Fragment,
    /// Declares `w` and provides `load_w4` (may be the same fragment as `scalar`).
    pub vec4: &'static Fragment,
    /// Pieces the reader's functions call.
    pub helpers: &'static [&'static Fragment],
}

const READ_F32: WeightReader = WeightReader {
    scalar: &fragment!("gemm_w_f32.wgsl", binds: [W], provides: [LOAD_W]),
    vec4: &fragment!("gemm_w_f32_vec4.wgsl", binds: [W], provides: [LOAD_W4]),
    helpers: &[],
};
const READ_F16_PACKED: WeightReader = WeightReader {
    scalar: &fragment!("gemm_w_f16_packed.wgsl", binds: [W], provides: [LOAD_W]),
    vec4: &fragment!("gemm_w_f16_packed_vec4.wgsl", binds: [W], provides: [LOAD_W4]),
    helpers: &[],
};
const READ_F16_NATIVE: WeightReader = WeightReader {
    scalar: &fragment!("gemm_w_f16.wgsl", binds: [W], provides: [LOAD_W]),
    vec4: &fragment!("gemm_w_f16_vec4.wgsl", binds: [W], provides: [LOAD_W4]),
    helpers: &[],
};
const GEMM_W_I8: Fragment = fragment!("gemm_w_i8.wgsl", binds: [W, read(6, "w_scales")], provides: [LOAD_W, LOAD_W4]);
const READ_I8: WeightReader = WeightReader { scalar: &GEMM_W_I8, vec4: &GEMM_W_I8, helpers: &[&INT8_FNS] };
const GEMM_W_BLOCKS: Fragment = fragment!("gemm_w_blocks.wgsl", binds: [W], provides: [LOAD_W, LOAD_W4]);
/// Which block format gemm_w_blocks.wgsl reads.
const BLOCK_Q8_0: Fragment = Fragment {
    file: "(inline) BLOCK_Q4 = false",
    source: "const BLOCK_Q4: bool = false;\n",
    binds: &[],
    provides: &[],
};
const BLOCK_Q4_0: Fragment =
    Fragment { file: "(inline) BLOCK_Q4 = true", source: "const BLOCK_Q4: bool = true;\n", binds: &[], provides: &[] };
const READ_Q8_0: WeightReader =
    WeightReader { scalar: &GEMM_W_BLOCKS, vec4: &GEMM_W_BLOCKS, helpers: &[&BLOCK_Q8_0, &INT8_FNS, &BLOCKS_FNS] };
const READ_Q4_0: WeightReader =
    WeightReader { scalar: &GEMM_W_BLOCKS, vec4: &GEMM_W_BLOCKS, helpers: &[&BLOCK_Q4_0, &INT8_FNS, &BLOCKS_FNS] };

/// How the tiled GEMM reads its right operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmWeight {
    F32,
    /// f16 packed two per u32, unpacked with `unpack2x16float` (every adapter).
    F16Packed,
    /// f16 read as WGSL `f16` (adapters with `shader-f16`).
    F16Native,
    /// int8 four per u32 with per-row scales, dequantised in the load.
    Int8,
    /// ggml Q8_0 blocks as the file stores them, dequantised in the load.
    Q8_0,
    /// ggml Q4_0 blocks as the file stores them, dequantised in the load.
    Q4_0,
}

impl GemmWeight {
    pub const ALL: [GemmWeight; 6] = [
        GemmWeight::F32,
        GemmWeight::F16Packed,
        GemmWeight::F16Native,
        GemmWeight::Int8,
        GemmWeight::Q8_0,
        GemmWeight::Q4_0,
    ];

    pub fn reader(self) -> &'static WeightReader {
        match self {
            GemmWeight::F32 => &READ_F32,
            GemmWeight::F16Packed => &READ_F16_PACKED,
            GemmWeight::F16Native => &READ_F16_NATIVE,
            GemmWeight::Int8 => &READ_I8,
            GemmWeight::Q8_0 => &READ_Q8_0,
            GemmWeight::Q4_0 => &READ_Q4_0,
        }
    }
}

/// How the tiled GEMM reads its left operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmInput {
    /// A strided view of a row-major matrix.
    Dense,
    /// The same, four consecutive k at a time (and the weight likewise): only where k, strides and offsets
    /// are multiples of 4 and the weight is linear-layout.
    DenseVec4,
    /// Implicit im2col of a channels-last image (conv2d).
    Conv,
}

impl GemmInput {
    pub const ALL: [GemmInput; 3] = [GemmInput::Dense, GemmInput::DenseVec4, GemmInput::Conv];
}

/// The GEMM's output tile per workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmTile {
    /// 64×64, 4×4 per thread: small outputs.
    T64,
    /// 128×128, 8×8 per thread: both output dimensions ≥ 128.
    T128,
    /// At most 8 rows (M ≤ 8), 8 columns per workgroup, K split over 32 invocations per column.
    Gemv,
    /// Gemv with the K-split shares added through subgroup operations (the SUBGROUP feature).
    GemvSubgroup,
    /// T64 and T128 in f16 arithmetic (`shader-f16`, GpuOptions::f16_math): f16 tiles and FMAs per K-tile,
    /// f32 totals.
    T64F16,
    T128F16,
}

impl GemmTile {
    pub const ALL: [GemmTile; 6] =
        [GemmTile::T64, GemmTile::T128, GemmTile::Gemv, GemmTile::GemvSubgroup, GemmTile::T64F16, GemmTile::T128F16];

    /// Output (rows, columns) per workgroup.
    pub fn size(self) -> (usize, usize) {
        match self {
            GemmTile::T64 | GemmTile::T64F16 => (64, 64),
            GemmTile::T128 | GemmTile::T128F16 => (128, 128),
            GemmTile::Gemv | GemmTile::GemvSubgroup => (8, 8),
        }
    }

    /// The same tiling in f16 arithmetic (the GEMV has none: it is bound by reading the weights).
    pub fn with_f16_math(self) -> GemmTile {
        match self {
            GemmTile::T64 => GemmTile::T64F16,
            GemmTile::T128 => GemmTile::T128F16,
            other => other,
        }
    }

    /// The GEMV kernels (at most 8 rows; K split inside the workgroup).
    pub fn is_gemv(self) -> bool {
        matches!(self, GemmTile::Gemv | GemmTile::GemvSubgroup)
    }

    fn f16_math(self) -> bool {
        matches!(self, GemmTile::T64F16 | GemmTile::T128F16)
    }
}

// ---- The other kernels: one main file each, plus shared pieces ----
const LAYER_NORM: Fragment = fragment!("layer_norm.wgsl",
    binds: [P, read(1, "x"), read(2, "gamma"), read(3, "beta"), write(4, "y")], provides: []);
const GROUP_NORM: Fragment = fragment!("group_norm.wgsl",
    binds: [P, read(1, "x"), read(2, "gamma"), read(3, "beta"), write(4, "y")], provides: []);
const FLASH_ATTENTION: Fragment = fragment!("flash_attention.wgsl",
    binds: [P, read(1, "q"), read(2, "k"), read(3, "v"), read(4, "bias"), write(5, "out")], provides: []);
const FMA_PEAK: Fragment = fragment!("fma_peak.wgsl", binds: [P, write(1, "out")], provides: []);
const FMA_PEAK_F16: Fragment = fragment!("fma_peak_f16.wgsl", binds: [P, write(1, "out")], provides: []);
const SOFTMAX_ROWS: Fragment = fragment!("softmax_rows.wgsl", binds: [P, read(1, "bias"), write(2, "s")], provides: []);
const WORKGROUP_SUM: Function = func("workgroup_sum", &[F32, ReduceIds], Some(F32));
const WORKGROUP_MAX: Function = func("workgroup_max", &[F32, ReduceIds], Some(F32));
const REDUCE_WORKGROUP: Fragment =
    fragment!("reduce_workgroup.wgsl", binds: [], provides: [WORKGROUP_SUM, WORKGROUP_MAX]);
const REDUCE_SUBGROUP: Fragment =
    fragment!("reduce_subgroup.wgsl", binds: [], provides: [WORKGROUP_SUM, WORKGROUP_MAX]);

/// How the norms and the softmax reduce across their workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// A tree in workgroup memory (every adapter).
    Workgroup,
    /// Subgroup operations, then one slot per subgroup (adapters with the `subgroups` feature).
    Subgroup,
}

impl Reduction {
    pub const ALL: [Reduction; 2] = [Reduction::Workgroup, Reduction::Subgroup];

    fn fragment(self) -> &'static Fragment {
        match self {
            Reduction::Workgroup => &REDUCE_WORKGROUP,
            Reduction::Subgroup => &REDUCE_SUBGROUP,
        }
    }
}
const COMBINE: Function = func("combine", &[F32, F32], Some(F32));
const ADD_COMBINE: Fragment = Fragment {
    file: "(inline) combine = x + y",
    source: "fn combine(x: f32, y: f32) -> f32 { return x + y; }\n",
    binds: &[],
    provides: &[COMBINE],
};
const MUL_COMBINE: Fragment = Fragment {
    file: "(inline) combine = x · y",
    source: "fn combine(x: f32, y: f32) -> f32 { return x * y; }\n",
    binds: &[],
    provides: &[COMBINE],
};
const ELEMENTWISE_PAIR: Fragment = fragment!("elementwise_pair.wgsl",
    binds: [P, read(1, "a"), read(2, "b"), write(3, "c")], provides: []);
const ACTIVATION: Fragment = fragment!("activation.wgsl", binds: [P, read(1, "x"), write(2, "y")], provides: []);
const SCALE_SHIFT: Fragment = fragment!("scale_shift.wgsl",
    binds: [P, read(1, "x"), read(2, "scale"), read(3, "shift"), write(4, "y")], provides: []);
const UNPACK_F16: Fragment = fragment!("unpack_f16.wgsl", binds: [P, read(1, "src"), write(2, "dst")], provides: []);
const DEQUANTIZE_I8: Fragment = fragment!("dequantize_i8.wgsl",
    binds: [P, read(1, "q"), read(2, "scales"), write(3, "dst")], provides: []);
const DEQUANTIZE_BLOCKS: Fragment = fragment!("dequantize_blocks.wgsl",
    binds: [P, read(1, "table"), read(2, "ids"), write(3, "y")], provides: []);
const GATHER_ROWS: Fragment = fragment!("gather_rows.wgsl",
    binds: [P, read(1, "table"), read(2, "ids"), write(3, "y"), read(4, "scales")], provides: []);
const COPY_COLS: Fragment = fragment!("copy_cols.wgsl", binds: [P, read(1, "x"), write(2, "y")], provides: []);
const IMAGE_PATCHES: Fragment =
    fragment!("image_patches.wgsl", binds: [P, read(1, "image"), write(2, "y")], provides: []);
const AVG_POOL_2X2: Fragment = fragment!("avg_pool_2x2.wgsl", binds: [P, read(1, "x"), write(2, "y")], provides: []);
const RESIZE_NEAREST: Fragment =
    fragment!("resize_nearest.wgsl", binds: [P, read(1, "x"), write(2, "y")], provides: []);

/// The compute kernels; the GEMM in all its variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The tiled GEMM (gemm_params.wgsl) for one way of reading the weight, one way of reading the input and
    /// one tiling.
    Gemm(GemmWeight, GemmInput, GemmTile),
    /// Split-K's second pass: adds the tiled GEMM's per-slice partial sums in order, then its epilogue.
    GemmSplitKReduce,
    LayerNorm(Reduction),
    Attention,
    Add,
    Activation,
    GatherRows,
    UnpackF16,
    DequantizeI8,
    DequantizeBlocks,
    ImagePatches,
    SoftmaxRows(Reduction),
    GroupNorm(Reduction),
    Mul,
    ScaleShift,
    AvgPool2x2,
    ResizeNearest,
    CopyCols,
    /// The FMA-throughput micro-kernel of the bench (f32, or f16 arithmetic when true).
    FmaPeak(bool),
}

impl Kernel {
    /// Every variant the host can dispatch.
    pub fn all() -> Vec<Kernel> {
        let mut all = vec![
            Kernel::GemmSplitKReduce,
            Kernel::Attention,
            Kernel::Add,
            Kernel::Activation,
            Kernel::GatherRows,
            Kernel::UnpackF16,
            Kernel::DequantizeI8,
            Kernel::DequantizeBlocks,
            Kernel::ImagePatches,
            Kernel::Mul,
            Kernel::ScaleShift,
            Kernel::AvgPool2x2,
            Kernel::ResizeNearest,
            Kernel::CopyCols,
            Kernel::FmaPeak(false),
            Kernel::FmaPeak(true),
        ];
        for r in Reduction::ALL {
            all.extend([Kernel::LayerNorm(r), Kernel::SoftmaxRows(r), Kernel::GroupNorm(r)]);
        }
        for w in GemmWeight::ALL {
            for i in GemmInput::ALL {
                for t in GemmTile::ALL {
                    all.push(Kernel::Gemm(w, i, t));
                }
            }
        }
        all
    }

    /// The label wgpu reports in errors.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Gemm(..) => "gemm",
            Kernel::GemmSplitKReduce => "gemm_split_k_reduce",
            Kernel::LayerNorm(_) => "layer_norm",
            Kernel::Attention => "attention",
            Kernel::Add => "add",
            Kernel::Activation => "activation",
            Kernel::GatherRows => "gather_rows",
            Kernel::UnpackF16 => "unpack_f16",
            Kernel::DequantizeI8 => "dequantize_i8",
            Kernel::DequantizeBlocks => "dequantize_blocks",
            Kernel::ImagePatches => "image_patches",
            Kernel::SoftmaxRows(_) => "softmax_rows",
            Kernel::GroupNorm(_) => "group_norm",
            Kernel::Mul => "mul",
            Kernel::ScaleShift => "scale_shift",
            Kernel::AvgPool2x2 => "avg_pool_2x2",
            Kernel::ResizeNearest => "resize_nearest",
            Kernel::CopyCols => "copy_cols",
            Kernel::FmaPeak(false) => "fma_peak",
            Kernel::FmaPeak(true) => "fma_peak_f16",
        }
    }

    /// The fragments, in the order they are concatenated (an `enable f16;` file first: it must open the module).
    pub fn fragments(self) -> Vec<&'static Fragment> {
        match self {
            Kernel::Gemm(weight, input, tile) => {
                let reader = weight.reader();
                let vec4 = input == GemmInput::DenseVec4;
                let first = if vec4 { reader.vec4 } else { reader.scalar };
                let mut parts = Vec::new();
                if tile.f16_math() && !first.source.starts_with("enable f16;") {
                    parts.push(&ENABLE_F16);
                }
                parts.push(first);
                parts.extend(reader.helpers);
                parts.extend([&ACTIVATION_FNS, &GEMM_PARAMS, &GEMM_OUTPUTS, &GEMM_EPILOGUE]);
                parts.push(match input {
                    GemmInput::Dense => &GEMM_X_DENSE,
                    GemmInput::DenseVec4 => &GEMM_X_DENSE_VEC4,
                    GemmInput::Conv => &GEMM_X_CONV,
                });
                parts.push(match (tile.is_gemv(), vec4) {
                    (true, false) => &GEMV_LOAD,
                    (true, true) => &GEMV_LOAD_VEC4,
                    (false, false) => &GEMM_LOAD,
                    (false, true) => &GEMM_LOAD_VEC4,
                });
                if !tile.is_gemv() {
                    parts.push(if tile.f16_math() { &TILE_F16 } else { &TILE_F32 });
                }
                parts.push(match tile {
                    GemmTile::T64 | GemmTile::T64F16 => &GEMM_TILE_64,
                    GemmTile::T128 | GemmTile::T128F16 => &GEMM_TILE_128,
                    GemmTile::Gemv => &GEMM_TILE_GEMV,
                    GemmTile::GemvSubgroup => &GEMM_TILE_GEMV_SUBGROUP,
                });
                parts
            }
            Kernel::GemmSplitKReduce => vec![&ACTIVATION_FNS, &GEMM_PARAMS, &GEMM_EPILOGUE, &GEMM_SPLIT_K_REDUCE],
            // The reduction first, where the standard's `enable subgroups;` will have to go.
            Kernel::LayerNorm(r) => vec![r.fragment(), &LAYER_NORM],
            Kernel::Attention => vec![&ACTIVATION_FNS, &FLASH_ATTENTION],
            Kernel::Add => vec![&ADD_COMBINE, &ELEMENTWISE_PAIR],
            Kernel::Activation => vec![&ACTIVATION_FNS, &ACTIVATION],
            Kernel::GatherRows => vec![&INT8_FNS, &GATHER_ROWS],
            Kernel::UnpackF16 => vec![&UNPACK_F16],
            Kernel::DequantizeI8 => vec![&INT8_FNS, &DEQUANTIZE_I8],
            Kernel::DequantizeBlocks => vec![&INT8_FNS, &BLOCKS_FNS, &DEQUANTIZE_BLOCKS],
            Kernel::ImagePatches => vec![&IMAGE_PATCHES],
            Kernel::SoftmaxRows(r) => vec![r.fragment(), &ACTIVATION_FNS, &SOFTMAX_ROWS],
            Kernel::GroupNorm(r) => vec![r.fragment(), &ACTIVATION_FNS, &GROUP_NORM],
            Kernel::Mul => vec![&MUL_COMBINE, &ELEMENTWISE_PAIR],
            Kernel::ScaleShift => vec![&SCALE_SHIFT],
            Kernel::AvgPool2x2 => vec![&AVG_POOL_2X2],
            Kernel::ResizeNearest => vec![&RESIZE_NEAREST],
            Kernel::CopyCols => vec![&COPY_COLS],
            Kernel::FmaPeak(false) => vec![&FMA_PEAK],
            Kernel::FmaPeak(true) => vec![&FMA_PEAK_F16],
        }
    }

    /// The WGSL module.
    pub fn source(self) -> String {
        self.fragments().iter().map(|f| f.source).collect()
    }

    /// All bindings of the assembled module, by index.
    pub fn bindings(self) -> Vec<Binding> {
        let mut all: Vec<Binding> = self.fragments().iter().flat_map(|f| f.binds.iter().copied()).collect();
        all.sort_by_key(|b| b.index);
        all
    }

    /// Whether the module needs `shader-f16`: one of its files opens with `enable f16;`.
    pub fn needs_shader_f16(self) -> bool {
        self.fragments().iter().any(|f| f.source.starts_with("enable f16;"))
    }

    /// Whether the module needs the `subgroups` feature: it is assembled with a file that uses subgroup
    /// operations (reduce_subgroup.wgsl, gemm_tile_gemv_subgroup.wgsl).
    pub fn needs_subgroups(self) -> bool {
        let uses = [REDUCE_SUBGROUP.file, GEMM_TILE_GEMV_SUBGROUP.file];
        self.fragments().iter().any(|f| uses.contains(&f.file))
    }

    /// The layout of the kernel's `Params` (its twin in params.rs).
    pub fn params(self) -> &'static ParamsLayout {
        match self {
            Kernel::Gemm(..) | Kernel::GemmSplitKReduce => &GemmParams::LAYOUT,
            Kernel::LayerNorm(_) => &LayerNormParams::LAYOUT,
            Kernel::Attention => &AttentionParams::LAYOUT,
            Kernel::FmaPeak(_) => &FmaPeakParams::LAYOUT,
            Kernel::Add | Kernel::Mul => &ElementwisePairParams::LAYOUT,
            Kernel::Activation => &ActivationParams::LAYOUT,
            Kernel::GatherRows => &GatherRowsParams::LAYOUT,
            Kernel::UnpackF16 => &UnpackF16Params::LAYOUT,
            Kernel::DequantizeI8 => &DequantizeI8Params::LAYOUT,
            Kernel::DequantizeBlocks => &DequantizeBlocksParams::LAYOUT,
            Kernel::ImagePatches => &ImagePatchesParams::LAYOUT,
            Kernel::SoftmaxRows(_) => &SoftmaxRowsParams::LAYOUT,
            Kernel::GroupNorm(_) => &GroupNormParams::LAYOUT,
            Kernel::ScaleShift => &ScaleShiftParams::LAYOUT,
            Kernel::AvgPool2x2 => &AvgPool2x2Params::LAYOUT,
            Kernel::ResizeNearest => &ResizeNearestParams::LAYOUT,
            Kernel::CopyCols => &CopyColsParams::LAYOUT,
        }
    }
}
