// Fills the GEMM's shared tiles (xs, ws of the tiling file, of its element type `tile_t`: f32, or f16 for the
// f16-math tilings) for k0 .. k0 + TK one element at a time, through load_x and load_w: any strides, offsets
// and sizes (out-of-range elements read 0). Consecutive threads read consecutive k of a row, contiguous for
// row-major x and linear-layout W.
fn load_tiles(row0: u32, col0: u32, k0: u32, li: u32) {
    for (var i = 0u; i < TILE * TK / 256u; i++) {
        let idx = li + 256u * i;
        let r = idx / TK;
        let kk = idx % TK;
        let gk = k0 + kk;
        let gm = row0 + r;
        var xv = 0.0;
        if (gm < p.m && gk < p.k) {
            xv = load_x(gm, gk);
        }
        xs[kk][r] = tile_t(xv);
        let gn = col0 + r;
        var wv = 0.0;
        if (gn < p.n && gk < p.k) {
            wv = load_w(gn, gk);
        }
        ws[kk][r] = tile_t(wv);
    }
}
