// Input access for the tiled GEMM (gemm_params.wgsl) four elements at a time (gemm_load_vec4.wgsl):
// X(m, k..k+3) = x[x_off + m·x_stride + k ..], aligned to 4 by the host's choice of this path.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;

fn load_x4(m: u32, k: u32) -> vec4<f32> {
    return x[(p.x_off + m * p.x_stride + k) >> 2u];
}
