// Fills the GEMM's shared tiles (xs, ws of the tiling file, of its element type `tile_t`: f32, or f16 for the
// f16-math tilings) for k0 .. k0 + TK four consecutive k at a time, through load_x4 and load_w4 (one 16-byte
// load of x, one 16- or 8-byte load of W). Only chosen by the host
// when it is exact: dense x and linear-layout W (w_sk = 1) with k, the row strides and offsets multiples of
// 4, so a group of four never straddles a row end or a bounds check.
fn load_tiles(row0: u32, col0: u32, k0: u32, li: u32) {
    for (var i = 0u; i < TILE * TK / 1024u; i++) {
        let idx = li + 256u * i;
        let r = idx / (TK / 4u);
        let kq = (idx % (TK / 4u)) * 4u;
        let gk = k0 + kq;
        let gm = row0 + r;
        var xv = vec4<f32>();
        if (gm < p.m && gk < p.k) {
            xv = load_x4(gm, gk);
        }
        xs[kq][r] = tile_t(xv.x);
        xs[kq + 1u][r] = tile_t(xv.y);
        xs[kq + 2u][r] = tile_t(xv.z);
        xs[kq + 3u][r] = tile_t(xv.w);
        let gn = col0 + r;
        var wv = vec4<f32>();
        if (gn < p.n && gk < p.k) {
            wv = load_w4(gn, gk);
        }
        ws[kq][r] = tile_t(wv.x);
        ws[kq + 1u][r] = tile_t(wv.y);
        ws[kq + 2u][r] = tile_t(wv.z);
        ws[kq + 3u][r] = tile_t(wv.w);
    }
}
