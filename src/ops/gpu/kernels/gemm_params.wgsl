// The tiled GEMM behind linear, matmul, conv2d and the long-sequence attention: its parameters, shared by
// every tiling (gemm_tile_*.wgsl, which follow this file) and by the split-K reduce (gemm_split_k_reduce.wgsl).
//   y[m, n] = act(Σ_k X(m, k) · W(n, k) + bias[bias_off + n]) (+ residual[m, n], at y's own index),
//   W(n, k) = w[w_off + n·w_sn + k·w_sk]; y written at out_off + m·out_stride + n.
// linear: w [n, k] → (w_sn, w_sk) = (k, 1); matmul: b [k, n] → (1, n). Offsets and strides let one dispatch
// write a column block of a larger output (a weight split by rows, one attention head).
// The fragments assembled with this one (their contracts are data in registry.rs, checked by
// tests/kernel_contracts.rs):
// - an input reader binds x (1) and provides X(m, k) one element at a time — x_row(m), x_col(k) and
//   load_x_at(row, col), so the loader can keep a row's and a column's place, and load_x(m, k) (gemm_x_dense.wgsl:
//   x[x_off + m·x_stride + k], a strided view; gemm_x_conv.wgsl: implicit im2col of a channels-last image) —
//   or load_x4(m, k) -> vec4<f32> (gemm_x_dense_vec4.wgsl);
// - a weight reader binds w (2, plus its own extras such as int8 scales at 6) and provides
//   load_w(n, k) -> f32 and/or load_w4(n, k) -> vec4<f32>, W(n, k .. k+3) of one output row (gemm_w_*.wgsl);
// - a loader provides fetch_tiles (one K-tile from memory into registers) and stage_tiles (registers into one
//   of the tiling's two shared buffers): gemm_load.wgsl element-wise, gemm_load_vec4.wgsl four k at a time;
// - a tiling provides main: it takes its K range from k_range (below), double-buffers its K-tiles through
//   fetch_tiles and stage_tiles, sets k_slice_index
//   and, per output, calls store (gemm_epilogue.wgsl); gemm_outputs.wgsl binds bias, y and residual.
// Split-K (k_slice ≠ 0, ops/gemm.rs picks it): workgroup z computes only k in
// [z·k_slice, (z+1)·k_slice) and store writes its raw partial sums to y bound as scratch [k_slices, m, n];
// gemm_split_k_reduce.wgsl then adds the slices in order and applies the epilogue. k_slice is a multiple of
// every tiling's TK, so a K-tile never straddles two slices (the loaders' `gk < p.k` check stays exact).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    w_sn: u32,
    w_sk: u32,
    w_off: u32,
    has_bias: u32,
    act: u32,
    x_stride: u32,
    x_off: u32,
    out_stride: u32,
    out_off: u32,
    bias_off: u32,
    conv_h: u32,
    conv_w: u32,
    conv_cin: u32,
    conv_ks: u32,
    // int8 weights (gemm_w_i8.wgsl): elements per scale row, and the first row's index in w_scales. Block
    // weights (gemm_w_blocks.wgsl): w_row_len is the row length (k).
    w_row_len: u32,
    w_scale_off: u32,
    // Add residual (laid out as y) after the activation: the transformer's and the resnets' skip connection
    // in the epilogue instead of a pass of its own.
    has_residual: u32,
    // Split-K: the K length of one slice (0: not split) and the number of slices.
    k_slice: u32,
    k_slices: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// The split-K slice this workgroup computes (workgroup_id.z), set by the tiling before it stores; read by store.
var<private> k_slice_index: u32;

// The K range [x, y) of slice `slice` (workgroup_id.z): all of K when the product is not split.
fn k_range(slice: u32) -> vec2<u32> {
    if (p.k_slice == 0u) {
        return vec2<u32>(0u, p.k);
    }
    let k0 = slice * p.k_slice;
    return vec2<u32>(k0, min(k0 + p.k_slice, p.k));
}
