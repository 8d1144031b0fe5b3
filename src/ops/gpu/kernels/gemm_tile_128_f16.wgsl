// gemm_tile_128.wgsl in f16 arithmetic (adapters with `shader-f16`, GpuOptions::f16_math): f16 shared tiles,
// each K-tile's 8 products as vec4<f16> FMAs, then added to an f32 total: |error| ≤ (8 + 2)·2⁻¹¹·Σ|x·w| plus
// f32's share (see gemm_tile_64_f16.wgsl). The module opens with `enable f16;` (the host puts it first).

alias tile_t = f16;

const TILE: u32 = 128u;
const TK: u32 = 8u;

var<workgroup> xs: array<array<f16, TILE>, TK>;
var<workgroup> ws: array<array<f16, TILE>, TK>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    // acc[2i] holds row ly + 16i, cols lx + 16j for j < 4; acc[2i + 1] for 4 ≤ j < 8.
    var acc: array<vec4<f32>, 16>;
    // All of K, or this workgroup's split-K slice (gemm_params.wgsl).
    let ks = k_range(wg.z);
    for (var k0 = ks.x; k0 < ks.y; k0 += TK) {
        load_tiles(row0, col0, k0, li);
        workgroupBarrier();
        var part: array<vec4<f16>, 16>;
        for (var i = 0u; i < 16u; i++) {
            part[i] = vec4<f16>(0.0h);
        }
        for (var kk = 0u; kk < TK; kk++) {
            let b0 = vec4<f16>(ws[kk][lid.x], ws[kk][lid.x + 16u], ws[kk][lid.x + 32u], ws[kk][lid.x + 48u]);
            let b1 = vec4<f16>(ws[kk][lid.x + 64u], ws[kk][lid.x + 80u], ws[kk][lid.x + 96u], ws[kk][lid.x + 112u]);
            for (var i = 0u; i < 8u; i++) {
                let a = vec4<f16>(xs[kk][lid.y + 16u * i]);
                part[2u * i] = fma(a, b0, part[2u * i]);
                part[2u * i + 1u] = fma(a, b1, part[2u * i + 1u]);
            }
        }
        for (var i = 0u; i < 16u; i++) {
            acc[i] += vec4<f32>(part[i]);
        }
        workgroupBarrier();
    }
    // The slice whose partial sums store writes (split-K).
    k_slice_index = wg.z;
    for (var i = 0u; i < 8u; i++) {
        let gm = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 8u; j++) {
            let gn = col0 + lid.x + 16u * j;
            if (gm < p.m && gn < p.n) {
                store(gm, gn, acc[2u * i + j / 4u][j % 4u]);
            }
        }
    }
}
