enable f16;
// Weight reader of the tiled GEMM (gemm_params.wgsl) on adapters with `shader-f16`, four f16 at a time
// (gemm_load_vec4.wgsl): one 8-byte load converted to f32.
@group(0) @binding(2) var<storage, read> w: array<vec4<f16>>;

fn load_w4(n: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(w[(p.w_off + n * p.w_sn + k) >> 2u]);
}
