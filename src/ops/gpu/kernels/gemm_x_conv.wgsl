// Input access for the tiled GEMM (gemm_params.wgsl) as an implicit im2col: conv2d as a matrix product
// without materialising the 9×-larger patch matrix. x is one channels-last image [conv_h·conv_w, conv_cin];
// row m is output pixel (m / conv_w, m % conv_w); column k is (channel, ky, kx) in PyTorch's weight order
// [cout, cin, kh, kw], stride 1, zero padding conv_ks / 2.
@group(0) @binding(1) var<storage, read> x: array<f32>;

fn load_x(m: u32, k: u32) -> f32 {
    let taps = p.conv_ks * p.conv_ks;
    let ci = k / taps;
    let tap = k % taps;
    let half = i32(p.conv_ks / 2u);
    let yy = i32(m / p.conv_w) + i32(tap / p.conv_ks) - half;
    let xx = i32(m % p.conv_w) + i32(tap % p.conv_ks) - half;
    if (yy < 0 || xx < 0 || yy >= i32(p.conv_h) || xx >= i32(p.conv_w)) {
        return 0.0;
    }
    return x[(u32(yy) * p.conv_w + u32(xx)) * p.conv_cin + ci];
}
