// Weight access for the tiled GEMM (gemm_params.wgsl), four f32 at a time (gemm_load_vec4.wgsl).
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;

fn load_w4(e: u32) -> vec4<f32> {
    return w[e >> 2u];
}
