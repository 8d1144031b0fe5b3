// 128×128 output tile per workgroup of 16×16 threads, 8×8 outputs per thread (rows ly + 16i, cols lx + 16j),
// K in steps of 8 through workgroup memory (2 × 4 KiB). Twice the outputs per shared-memory read of the
// 64×64 tiling: 64 FMAs per 16 loads. Out-of-range loads read 0, so any M, N, K works.

// The shared tiles' element type (the loaders convert to it).
alias tile_t = f32;

const TILE: u32 = 128u;
const TK: u32 = 8u;

// xs[k][row] and ws[k][col], filled by load_tiles (gemm_load.wgsl or gemm_load_vec4.wgsl).
var<workgroup> xs: array<array<f32, TILE>, TK>;
var<workgroup> ws: array<array<f32, TILE>, TK>;

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
        for (var kk = 0u; kk < TK; kk++) {
            let b0 = vec4<f32>(ws[kk][lid.x], ws[kk][lid.x + 16u], ws[kk][lid.x + 32u], ws[kk][lid.x + 48u]);
            let b1 = vec4<f32>(ws[kk][lid.x + 64u], ws[kk][lid.x + 80u], ws[kk][lid.x + 96u], ws[kk][lid.x + 112u]);
            for (var i = 0u; i < 8u; i++) {
                let a = vec4<f32>(xs[kk][lid.y + 16u * i]);
                acc[2u * i] = fma(a, b0, acc[2u * i]);
                acc[2u * i + 1u] = fma(a, b1, acc[2u * i + 1u]);
            }
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
