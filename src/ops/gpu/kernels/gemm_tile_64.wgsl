// 64×64 output tile per workgroup of 16×16 threads, 4×4 outputs per thread (rows ly + 16i, cols lx + 16j so
// that reads of the shared tiles are consecutive across threads), K in steps of 16 through workgroup memory.
// Out-of-range loads read 0, so any M, N, K works. Used where an output dimension is small (M or N < 128).

// The shared tiles' element type (the loaders convert to it).
alias tile_t = f32;

const TILE: u32 = 64u;
const TK: u32 = 16u;

// xs[k][row] and ws[k][col], filled by load_tiles (gemm_load.wgsl or gemm_load_vec4.wgsl).
var<workgroup> xs: array<array<f32, TILE>, TK>;
var<workgroup> ws: array<array<f32, TILE>, TK>;

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
        // Two-level sum: each K-tile's 16 products are summed on their own, then added to the total, so
        // rounding error grows with K/16 + 16 rather than K (long convolutions: K = 9·channels).
        // Zeroed explicitly: SwiftShader (Chrome) kept a loop-local array's values across iterations.
        var part: array<vec4<f32>, 4>;
        for (var i = 0u; i < 4u; i++) {
            part[i] = vec4<f32>(0.0);
        }
        for (var kk = 0u; kk < TK; kk++) {
            let b = vec4<f32>(ws[kk][lid.x], ws[kk][lid.x + 16u], ws[kk][lid.x + 32u], ws[kk][lid.x + 48u]);
            for (var i = 0u; i < 4u; i++) {
                part[i] = fma(vec4<f32>(xs[kk][lid.y + 16u * i]), b, part[i]);
            }
        }
        for (var i = 0u; i < 4u; i++) {
            acc[i] += part[i];
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
