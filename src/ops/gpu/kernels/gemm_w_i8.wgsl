// Weight access for the tiled GEMM (gemm_params.wgsl): int8 weights quantised per row of the stored matrix
// (per output channel of a linear or conv weight) at load, four per u32 (int8_fns.wgsl), with one f32 scale
// per row in w_scales. Dequantised here, q · scale; accumulation stays f32. The row of element e is
// e / w_row_len, counted from w_scale_off (the first row of this buffer when the weight is split by rows).
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(5) var<storage, read> w_scales: array<f32>;

fn load_w(e: u32) -> f32 {
    return int8_at(w[e >> 2u], e & 3u) * w_scales[p.w_scale_off + e / p.w_row_len];
}
