// gemm_tile_64.wgsl in f16 arithmetic (adapters with `shader-f16`, GpuOptions::f16_math): the shared tiles
// hold f16 (half the workgroup memory and bandwidth) and each K-tile's 16 products are multiplied and summed
// as vec4<f16> FMAs — twice the f32 rate on GPUs with packed f16 — then added to an f32 total, so rounding
// in f16 stays within one K-tile: |error| ≤ (16 + 2)·2⁻¹¹·Σ|x·w| (the inputs' rounding to f16 and 16 FMAs),
// plus f32's share of the total. For values within f16's range (the decoders' activations, as diffusers runs
// them in fp16). The module opens with `enable f16;` (the host puts it first).

alias tile_t = f16;

const TILE: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> xs: array<array<f16, TILE>, TK>;
var<workgroup> ws: array<array<f16, TILE>, TK>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    var acc: array<vec4<f32>, 4>;
    // All of K, or this workgroup's split-K slice (gemm_params.wgsl).
    let ks = k_range(wg.z);
    for (var k0 = ks.x; k0 < ks.y; k0 += TK) {
        load_tiles(row0, col0, k0, li);
        workgroupBarrier();
        var part: array<vec4<f16>, 4>;
        for (var i = 0u; i < 4u; i++) {
            part[i] = vec4<f16>(0.0h);
        }
        for (var kk = 0u; kk < TK; kk++) {
            let b = vec4<f16>(ws[kk][lid.x], ws[kk][lid.x + 16u], ws[kk][lid.x + 32u], ws[kk][lid.x + 48u]);
            for (var i = 0u; i < 4u; i++) {
                part[i] = fma(vec4<f16>(xs[kk][lid.y + 16u * i]), b, part[i]);
            }
        }
        for (var i = 0u; i < 4u; i++) {
            acc[i] += vec4<f32>(part[i]);
        }
        workgroupBarrier();
    }
    // The slice whose partial sums store writes (split-K).
    k_slice_index = wg.z;
    for (var i = 0u; i < 4u; i++) {
        let gm = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gn = col0 + lid.x + 16u * j;
            if (gm < p.m && gn < p.n) {
                store(gm, gn, acc[i][j]);
            }
        }
    }
}
