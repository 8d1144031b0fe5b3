// Weight access for the tiled GEMM (gemm_params.wgsl): f32 weights (or an f32 activation as right operand).
@group(0) @binding(2) var<storage, read> w: array<f32>;

fn load_w(e: u32) -> f32 {
    return w[e];
}
