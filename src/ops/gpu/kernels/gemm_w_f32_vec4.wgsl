// Weight reader of the tiled GEMM (gemm_params.wgsl), four f32 at a time (gemm_load_vec4.wgsl): W(n, k..k+3)
// in one 16-byte load.
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;

fn load_w4(n: u32, k: u32) -> vec4<f32> {
    return w[(p.w_off + n * p.w_sn + k) >> 2u];
}
