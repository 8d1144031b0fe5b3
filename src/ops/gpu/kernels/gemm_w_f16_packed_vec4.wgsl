// Weight reader of the tiled GEMM (gemm_params.wgsl), four packed f16 at a time (gemm_load_vec4.wgsl):
// one 8-byte load, two unpack2x16float. No `shader-f16` needed.
@group(0) @binding(2) var<storage, read> w: array<vec2<u32>>;

fn load_w4(n: u32, k: u32) -> vec4<f32> {
    let q = w[(p.w_off + n * p.w_sn + k) >> 2u];
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}
