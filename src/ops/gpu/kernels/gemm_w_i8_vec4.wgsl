// Weight access for the tiled GEMM (gemm_params.wgsl), four int8 at a time (gemm_load_vec4.wgsl): one u32
// load, one scale. The host takes this path only where rows are a multiple of 4 long, so the four elements
// from a 4-aligned e share a word and a row. Storage and scales as in gemm_w_i8.wgsl.
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(5) var<storage, read> w_scales: array<f32>;

fn load_w4(e: u32) -> vec4<f32> {
    return int8x4(w[e >> 2u]) * w_scales[p.w_scale_off + e / p.w_row_len];
}
