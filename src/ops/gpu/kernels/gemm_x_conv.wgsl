// Input access for the tiled GEMM (gemm_params.wgsl) as an implicit im2col: conv2d as a matrix product
// without materialising the 9×-larger patch matrix. x is one channels-last image [conv_h·conv_w, conv_cin];
// row m is output pixel (m / conv_w, m % conv_w); column k is (channel, ky, kx) in PyTorch's weight order
// [cout, cin, kh, kw], stride 1, zero padding conv_ks / 2. In three steps, so that a loader can keep what does
// not change (gemm_load.wgsl: a thread's rows are fixed, and its elements of a K-tile share one k): x_row(m)
// (the output pixel) and x_col(k) (the tap) do the divisions, load_x_at(pixel, tap) the bounds check and read.
@group(0) @binding(1) var<storage, read> x: array<f32>;

// Output pixel (y, x) of row m.
fn x_row(m: u32) -> vec2<u32> {
    return vec2<u32>(m / p.conv_w, m % p.conv_w);
}

// Column k as (channel, ky, kx).
fn x_col(k: u32) -> vec3<u32> {
    let taps = p.conv_ks * p.conv_ks;
    let tap = k % taps;
    return vec3<u32>(k / taps, tap / p.conv_ks, tap % p.conv_ks);
}

// The input under tap (ci, ky, kx) of the kernel placed at `pixel`; 0 in the padding.
fn load_x_at(pixel: vec2<u32>, tap: vec3<u32>) -> f32 {
    let half = i32(p.conv_ks / 2u);
    let yy = i32(pixel.x) + i32(tap.y) - half;
    let xx = i32(pixel.y) + i32(tap.z) - half;
    if (yy < 0 || xx < 0 || yy >= i32(p.conv_h) || xx >= i32(p.conv_w)) {
        return 0.0;
    }
    return x[(u32(yy) * p.conv_w + u32(xx)) * p.conv_cin + tap.x];
}

// X(m, k), for the GEMV's loader.
fn load_x(m: u32, k: u32) -> f32 {
    return load_x_at(x_row(m), x_col(k));
}
