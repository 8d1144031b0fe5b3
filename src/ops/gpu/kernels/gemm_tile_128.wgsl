// 128×128 output tile per workgroup of 16×16 threads, 8×8 outputs per thread, K in steps of 8 through two
// buffers of workgroup memory: 64 FMAs per four vector loads of the shared tiles, twice the 64×64 tiling's
// ratio. A thread's rows are 4·ly .. 4·ly+3 and 64 + 4·ly .. 64 + 4·ly+3, its columns likewise in lx, so the
// threads of a row of the workgroup read consecutive vectors. Out-of-range loads read 0, so any M, N, K works.
// `tile_t` (f32, or f16 with `shader-f16`) and the two-level sum as in gemm_tile_64.wgsl: each K-tile's 8
// products in `tile_t`, then an f32 total; in f16 |error| ≤ (8 + 2)·2⁻¹¹·Σ|x·w| plus f32's share.

const TILE: u32 = 128u;
const TK: u32 = 8u;

// Two buffers of xs[k][r] = rows 4r .. 4r+3 and ws[k][c] = columns 4c .. 4c+3 at step k (gemm_tile_64.wgsl).
var<workgroup> xs: array<array<array<vec4<tile_t>, 32>, TK>, 2>;
var<workgroup> ws: array<array<array<vec4<tile_t>, 32>, TK>, 2>;

fn put_x(buf: u32, kk: u32, r: u32, v: f32) {
    xs[buf][kk][r / 4u][r % 4u] = tile_t(v);
}

fn put_w(buf: u32, kk: u32, c: u32, v: f32) {
    ws[buf][kk][c / 4u][c % 4u] = tile_t(v);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    // acc[2i + h]: row r(i) (4·ly + i, then 64 + 4·ly + i − 4 for i ≥ 4), columns 4·lx + 64h .. + 3.
    var acc: array<vec4<f32>, 16>;
    // All of K, or this workgroup's split-K slice (gemm_params.wgsl).
    let ks = k_range(wg.z);
    // Double-buffered as gemm_tile_64.wgsl: one barrier per K-tile.
    fetch_tiles(row0, col0, ks.x, li);
    stage_tiles(0u, li);
    workgroupBarrier();
    var buf = 0u;
    for (var k0 = ks.x; k0 < ks.y; k0 += TK) {
        let more = k0 + TK < ks.y;
        if (more) {
            fetch_tiles(row0, col0, k0 + TK, li);
        }
        // Zeroed explicitly: SwiftShader (Chrome) kept a loop-local array's values across iterations.
        var part: array<vec4<tile_t>, 16>;
        for (var i = 0u; i < 16u; i++) {
            part[i] = vec4<tile_t>();
        }
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = xs[buf][kk][lid.y];
            let a1 = xs[buf][kk][lid.y + 16u];
            let b0 = ws[buf][kk][lid.x];
            let b1 = ws[buf][kk][lid.x + 16u];
            for (var i = 0u; i < 4u; i++) {
                part[2u * i] = fma(vec4<tile_t>(a0[i]), b0, part[2u * i]);
                part[2u * i + 1u] = fma(vec4<tile_t>(a0[i]), b1, part[2u * i + 1u]);
                part[8u + 2u * i] = fma(vec4<tile_t>(a1[i]), b0, part[8u + 2u * i]);
                part[9u + 2u * i] = fma(vec4<tile_t>(a1[i]), b1, part[9u + 2u * i]);
            }
        }
        for (var i = 0u; i < 16u; i++) {
            acc[i] += vec4<f32>(part[i]);
        }
        if (more) {
            stage_tiles(1u - buf, li);
        }
        workgroupBarrier();
        buf = 1u - buf;
    }
    // The slice whose partial sums store writes (split-K).
    k_slice_index = wg.z;
    for (var i = 0u; i < 8u; i++) {
        let gm = row0 + 64u * (i / 4u) + 4u * lid.y + i % 4u;
        for (var j = 0u; j < 8u; j++) {
            let gn = col0 + 64u * (j / 4u) + 4u * lid.x + j % 4u;
            if (gm < p.m && gn < p.n) {
                store(gm, gn, acc[2u * i + j / 4u][j % 4u]);
            }
        }
    }
}
