// Input access for the tiled GEMM (gemm_params.wgsl): a strided view of a row-major matrix,
// X(m, k) = x[x_off + m·x_stride + k].
@group(0) @binding(1) var<storage, read> x: array<f32>;

fn load_x(m: u32, k: u32) -> f32 {
    return x[p.x_off + m * p.x_stride + k];
}
