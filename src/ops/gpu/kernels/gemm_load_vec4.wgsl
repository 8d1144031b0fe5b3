// Moves the GEMM's operands into its shared tiles (two buffers in the tiling file, written through its
// put_x and put_w, which convert to its element type) four consecutive k at a time, through load_x4 and load_w4
// (one 16-byte load of x, one 16- or 8-byte load of W). Only chosen by the host when it is exact: dense x and
// linear-layout W (w_sk = 1) with k, the row strides and offsets multiples of 4, so a group of four never
// straddles a row end or a bounds check. In two halves for double buffering, as gemm_load.wgsl: fetch_tiles
// (memory → registers), stage_tiles (registers → shared buffer `buf`).

// This thread's share of one K-tile: TILE·TK / 1024 groups of four k of each operand.
var<private> staged_x: array<vec4<f32>, TILE * TK / 1024u>;
var<private> staged_w: array<vec4<f32>, TILE * TK / 1024u>;

fn fetch_tiles(row0: u32, col0: u32, k0: u32, li: u32) {
    for (var i = 0u; i < TILE * TK / 1024u; i++) {
        let idx = li + 256u * i;
        let r = idx / (TK / 4u);
        let gk = k0 + (idx % (TK / 4u)) * 4u;
        let gm = row0 + r;
        var xv = vec4<f32>();
        if (gm < p.m && gk < p.k) {
            xv = load_x4(gm, gk);
        }
        staged_x[i] = xv;
        let gn = col0 + r;
        var wv = vec4<f32>();
        if (gn < p.n && gk < p.k) {
            wv = load_w4(gn, gk);
        }
        staged_w[i] = wv;
    }
}

fn stage_tiles(buf: u32, li: u32) {
    for (var i = 0u; i < TILE * TK / 1024u; i++) {
        let idx = li + 256u * i;
        let r = idx / (TK / 4u);
        let kq = (idx % (TK / 4u)) * 4u;
        let xv = staged_x[i];
        put_x(buf, kq, r, xv.x);
        put_x(buf, kq + 1u, r, xv.y);
        put_x(buf, kq + 2u, r, xv.z);
        put_x(buf, kq + 3u, r, xv.w);
        let wv = staged_w[i];
        put_w(buf, kq, r, wv.x);
        put_w(buf, kq + 1u, r, wv.y);
        put_w(buf, kq + 2u, r, wv.z);
        put_w(buf, kq + 3u, r, wv.w);
    }
}
