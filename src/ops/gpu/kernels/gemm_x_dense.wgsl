// Input access for the tiled GEMM (gemm_params.wgsl): a strided view of a row-major matrix,
// X(m, k) = x[x_off + m·x_stride + k]. In the element-wise loader's three steps (gemm_load.wgsl): a row's
// and a column's place, then the read — here the places are m and k themselves.
@group(0) @binding(1) var<storage, read> x: array<f32>;

fn x_row(m: u32) -> vec2<u32> {
    return vec2<u32>(p.x_off + m * p.x_stride, 0u);
}

fn x_col(k: u32) -> vec3<u32> {
    return vec3<u32>(k, 0u, 0u);
}

fn load_x_at(row: vec2<u32>, col: vec3<u32>) -> f32 {
    return x[row.x + col.x];
}

// X(m, k), for the GEMV's loader.
fn load_x(m: u32, k: u32) -> f32 {
    return load_x_at(x_row(m), x_col(k));
}
