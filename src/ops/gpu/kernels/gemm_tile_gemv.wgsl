// The GEMM for at most 8 rows of x (the host picks it when M ≤ 8: time embeddings, pooled projections, one
// token): a 64×64 tile would compute 64 rows to keep 8 or fewer. Here a workgroup owns 8 output columns; the 32
// invocations of a column split K between them (consecutive invocations read consecutive k of the weight
// row: coalesced) and each sums its share for all M rows at once (gemv_accumulate, gemv_load*.wgsl), so every
// weight is read once. The 32 shares of each (row, column) are then added in workgroup memory and stored
// through the epilogue. Rounding grows with K/32 + 32 rather than K, like the tiles' two-level sum.

const GEMV_ROWS: u32 = 8u;
const GEMV_LANES: u32 = 32u;
const GEMV_COLS: u32 = 8u;

// This invocation's share of each row's sum, filled by gemv_accumulate.
var<private> acc: array<f32, GEMV_ROWS>;
// shares[column · 8 + row][lane]: 8 KiB.
var<workgroup> shares: array<array<f32, GEMV_LANES>, 64>;

@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let lane = lid.x;
    let col = lid.y;
    let n = wg.x * GEMV_COLS + col;
    for (var m = 0u; m < GEMV_ROWS; m++) {
        acc[m] = 0.0;
    }
    if (n < p.n) {
        gemv_accumulate(n, lane);
    }
    for (var m = 0u; m < GEMV_ROWS; m++) {
        shares[col * GEMV_ROWS + m][lane] = acc[m];
    }
    workgroupBarrier();
    // Lane m < 8 of each column adds up row m's shares, in lane order.
    if (lane < GEMV_ROWS && lane < p.m && n < p.n) {
        var sum = 0.0;
        for (var i = 0u; i < GEMV_LANES; i++) {
            sum += shares[col * GEMV_ROWS + lane][i];
        }
        store(lane, n, sum);
    }
}
