// Weight reader of the tiled GEMM (gemm_params.wgsl): f16 weights packed two per u32,
// element 2i in the low half (little-endian, as safetensors stores them). unpack2x16float is core WGSL, so
// this path needs no `shader-f16` feature and runs on every WebGPU adapter.
@group(0) @binding(2) var<storage, read> w: array<u32>;

fn load_w(n: u32, k: u32) -> f32 {
    let e = p.w_off + n * p.w_sn + k * p.w_sk;
    let pair = unpack2x16float(w[e >> 1u]);
    return select(pair.x, pair.y, (e & 1u) == 1u);
}
