enable f16;
// Weight reader of the tiled GEMM (gemm_params.wgsl) on adapters with `shader-f16`: the
// f16 weights (as safetensors stores them) are read as WGSL `f16`, one load and one conversion per element
// instead of gemm_w_f16_packed.wgsl's u32 load + unpack2x16float + select. Accumulation stays f32.
@group(0) @binding(2) var<storage, read> w: array<f16>;

fn load_w(n: u32, k: u32) -> f32 {
    return f32(w[p.w_off + n * p.w_sn + k * p.w_sk]);
}
