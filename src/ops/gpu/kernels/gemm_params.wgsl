// The tiled GEMM behind linear, matmul, conv2d and the long-sequence attention: parameters, bindings and
// the epilogue shared by its two tilings (gemm_tile_64.wgsl, gemm_tile_128.wgsl), which follow this file.
//   y[m, n] = act(Σ_k X(m, k) · W(n, k) + bias[bias_off + n]) (+ residual[m, n], at y's own index),
//   W(n, k) = w[w_off + n·w_sn + k·w_sk]; y written at out_off + m·out_stride + n.
// linear: w [n, k] → (w_sn, w_sk) = (k, 1); matmul: b [k, n] → (1, n). Offsets and strides let one dispatch
// write a column block of a larger output (a weight split by rows, one attention head).
// The fragments assembled with this one (their contracts are data in registry.rs, checked by
// tests/kernel_contracts.rs):
// - an input reader binds x (1) and provides load_x(m, k) -> f32 (gemm_x_dense.wgsl: x[x_off + m·x_stride + k],
//   a strided view; gemm_x_conv.wgsl: implicit im2col of a channels-last image) or load_x4(m, k) -> vec4<f32>
//   (gemm_x_dense_vec4.wgsl);
// - a weight reader binds w (2, plus its own extras such as int8 scales at 6) and provides
//   load_w(n, k) -> f32 and/or load_w4(n, k) -> vec4<f32>, W(n, k .. k+3) of one output row (gemm_w_*.wgsl);
// - a loader provides load_tiles (gemm_load.wgsl element-wise, gemm_load_vec4.wgsl four k at a time);
// - a tiling provides main and calls load_tiles and store (below).

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;

// Bias, activation, residual and the strided store of one output element (rows/cols already bounds-checked).
// residual + value: the same f32 sum the separate add computes.
fn store(gm: u32, gn: u32, acc: f32) {
    var v = acc;
    if (p.has_bias != 0u) {
        v += bias[p.bias_off + gn];
    }
    let at = p.out_off + gm * p.out_stride + gn;
    v = apply_activation(v, p.act);
    if (p.has_residual != 0u) {
        v = residual[at] + v;
    }
    y[at] = v;
}
