// gemm_tile_gemv.wgsl's share of the sums for one output column n, one element at a time through load_x and
// load_w (any strides, the conv gather too): k = lane, lane + 32, …; each weight read once for all M rows.
fn gemv_accumulate(n: u32, lane: u32) {
    let rows = min(p.m, GEMV_ROWS);
    for (var k = lane; k < p.k; k += GEMV_LANES) {
        let wv = load_w(n, k);
        for (var m = 0u; m < rows; m++) {
            acc[m] = fma(load_x(m, k), wv, acc[m]);
        }
    }
}
