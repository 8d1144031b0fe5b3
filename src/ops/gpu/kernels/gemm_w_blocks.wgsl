// Weight reader of the tiled GEMM (gemm_params.wgsl): ggml Q8_0 or Q4_0 blocks as the GGUF file stores them
// (blocks_fns.wgsl), row by row of the [n, k] matrix; p.w_row_len is k; BLOCK_Q4 (a one-line fragment the
// registry prepends) picks the format. Dequantised here, q · d; the accumulation stays f32. One file serves
// both load paths and both formats.
@group(0) @binding(2) var<storage, read> w: array<u32>;

// One element at any strides.
fn load_w(n: u32, k: u32) -> f32 {
    let at = block_bytes(p.w_off + n * p.w_sn + k * p.w_sk, p.w_row_len, BLOCK_Q4);
    return block_q(w[at.y >> 2u], at.y, at.z, BLOCK_Q4) * half_at(w[at.x >> 2u], at.x);
}

// Four at a time (gemm_load_vec4.wgsl): k a multiple of 4 and rows whole blocks, so the four share a block
// and their bytes start at an even byte.
fn load_w4(n: u32, k: u32) -> vec4<f32> {
    let at = block_bytes(p.w_off + n * p.w_sn + k, p.w_row_len, BLOCK_Q4);
    let i = at.y >> 2u;
    return block_q4(word_at(w[i], w[i + 1u], at.y), at.z, BLOCK_Q4) * half_at(w[at.x >> 2u], at.x);
}
