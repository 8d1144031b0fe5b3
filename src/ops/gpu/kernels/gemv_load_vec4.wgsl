// gemm_tile_gemv.wgsl's share of the sums for one output column n, four consecutive k at a time through load_x4
// and load_w4: k = 4·lane, 4·lane + 128, … Only chosen by the host when exact (as gemm_load_vec4.wgsl): k, the
// row strides and offsets multiples of 4, linear-layout W.
fn gemv_accumulate(n: u32, lane: u32) {
    let rows = min(p.m, GEMV_ROWS);
    for (var k = 4u * lane; k < p.k; k += 4u * GEMV_LANES) {
        let wv = load_w4(n, k);
        for (var m = 0u; m < rows; m++) {
            let xv = load_x4(m, k);
            acc[m] = fma(xv.x, wv.x, fma(xv.y, wv.y, fma(xv.z, wv.z, fma(xv.w, wv.w, acc[m]))));
        }
    }
}
