// 64×64 output tile per workgroup of 16×16 threads, 4×4 outputs per thread (rows 4·ly .. 4·ly+3, columns
// 4·lx .. 4·lx+3), K in steps of 16 through two buffers of workgroup memory. Out-of-range loads read 0, so
// any M, N, K works. Used where the output has too few 128×128 tiles to fill a large GPU.
//
// `tile_t`, the shared tiles' element type and the arithmetic within a K-tile, comes first in the module:
// f32, or f16 on adapters with `shader-f16` (GpuOptions::f16_math; the module then opens with `enable f16;`).
// Either way each K-tile's 16 products are summed on their own (`part`), then added to an f32 total (`acc`):
// rounding grows with K/16 + 16 rather than K (long convolutions: K = 9·channels). In f16, half the
// workgroup memory and twice the FMA rate on GPUs with packed f16, with |error| ≤ (16 + 2)·2⁻¹¹·Σ|x·w| (the
// inputs' rounding to f16 and 16 FMAs) plus f32's share of the total, for values within f16's range (the
// decoders' activations, as diffusers runs them in fp16).

const TILE: u32 = 64u;
const TK: u32 = 16u;

// Two buffers of xs[k][r] = rows 4r .. 4r+3 and ws[k][c] = columns 4c .. 4c+3 at step k: a thread reads its
// four rows and four columns of a step as two vector loads (the threads of a row of the workgroup read
// consecutive vectors of ws and one, broadcast, of xs). Filled by fetch_tiles + stage_tiles (gemm_load.wgsl or
// gemm_load_vec4.wgsl) through put_x and put_w.
var<workgroup> xs: array<array<array<vec4<tile_t>, 16>, TK>, 2>;
var<workgroup> ws: array<array<array<vec4<tile_t>, 16>, TK>, 2>;

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
    // acc[i]: row 4·ly + i, columns 4·lx .. 4·lx+3.
    var acc: array<vec4<f32>, 4>;
    // All of K, or this workgroup's split-K slice (gemm_params.wgsl).
    let ks = k_range(wg.z);
    // Double-buffered: K-tile k0 + TK is read from memory while tile k0 is multiplied, then stored into the
    // other buffer, so one barrier per K-tile.
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
        var part: array<vec4<tile_t>, 4>;
        for (var i = 0u; i < 4u; i++) {
            part[i] = vec4<tile_t>();
        }
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[buf][kk][lid.y];
            let b = ws[buf][kk][lid.x];
            for (var i = 0u; i < 4u; i++) {
                part[i] = fma(vec4<tile_t>(a[i]), b, part[i]);
            }
        }
        for (var i = 0u; i < 4u; i++) {
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
    for (var i = 0u; i < 4u; i++) {
        let gm = row0 + 4u * lid.y + i;
        for (var j = 0u; j < 4u; j++) {
            let gn = col0 + 4u * lid.x + j;
            if (gm < p.m && gn < p.n) {
                store(gm, gn, acc[i][j]);
            }
        }
    }
}
