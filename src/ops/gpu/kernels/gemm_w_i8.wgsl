// Weight reader of the tiled GEMM (gemm_params.wgsl): int8 weights quantised per row of the stored matrix
// (per output channel of a linear or conv weight) at load, four per u32 (int8_fns.wgsl), with one f32 scale
// per row in w_scales. Dequantised here, q · scale; accumulation stays f32. The scale row of element e is
// e / w_row_len, counted from w_scale_off (the first row of this buffer when the weight is split by rows).
// Both functions read the same `w`, so one file serves both load paths.
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scales: array<f32>;

// One element at any strides.
fn load_w(n: u32, k: u32) -> f32 {
    let e = p.w_off + n * p.w_sn + k * p.w_sk;
    return int8_at(w[e >> 2u], e & 3u) * w_scales[p.w_scale_off + e / p.w_row_len];
}

// Four at a time (gemm_load_vec4.wgsl): one u32 load, one scale. The host takes this path only where rows
// are a multiple of 4 long, so the four elements from a 4-aligned e share a word and a row.
fn load_w4(n: u32, k: u32) -> vec4<f32> {
    let e = p.w_off + n * p.w_sn + k;
    return int8x4(w[e >> 2u]) * w_scales[p.w_scale_off + e / p.w_row_len];
}
