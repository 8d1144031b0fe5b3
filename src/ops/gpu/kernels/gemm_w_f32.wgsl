// Weight reader of the tiled GEMM (gemm_params.wgsl): f32 weights (or an f32 activation as right operand).
// W(n, k) at any strides.
@group(0) @binding(2) var<storage, read> w: array<f32>;

fn load_w(n: u32, k: u32) -> f32 {
    return w[p.w_off + n * p.w_sn + k * p.w_sk];
}
