// Moves the GEMM's operands into its shared tiles (two buffers in the tiling file, written through its
// put_x and put_w, which convert to its element type) one element at a time, through the input reader's
// x_row / x_col / load_x_at and load_w: any strides, offsets and sizes (out-of-range elements read 0), the
// conv's im2col too. 256 is a multiple of TK, so a thread's TILE·TK / 256 elements of a K-tile share one k
// (x_col once per K-tile) and lie in rows that never change (x_row once, at the first K-tile): the conv's
// divisions stay out of the inner loads. Consecutive threads read consecutive k of a row, contiguous for
// row-major x and linear-layout W. In two halves, so that a tiling can double-buffer: fetch_tiles reads this
// thread's share of K-tile k0 .. k0 + TK from memory into registers (staged_x, staged_w), stage_tiles stores
// them into shared buffer `buf` — the tiling fetches the next K-tile before it multiplies the current one,
// and stores it after.

// This thread's share of one K-tile: TILE·TK / 256 elements of each operand, four to a vec4.
var<private> staged_x: array<vec4<f32>, TILE * TK / 1024u>;
var<private> staged_w: array<vec4<f32>, TILE * TK / 1024u>;
// Where this thread's rows are (x_row), and the tile row that was computed for (none yet: not a multiple of
// any TILE).
var<private> rows: array<vec2<u32>, TILE * TK / 256u>;
var<private> rows_of: u32 = 0xffffffffu;

fn fetch_tiles(row0: u32, col0: u32, k0: u32, li: u32) {
    if (rows_of != row0) {
        for (var i = 0u; i < TILE * TK / 256u; i++) {
            rows[i] = x_row(row0 + (li + 256u * i) / TK);
        }
        rows_of = row0;
    }
    let gk = k0 + li % TK;
    let col = x_col(gk);
    for (var i = 0u; i < TILE * TK / 256u; i++) {
        let r = (li + 256u * i) / TK;
        let gm = row0 + r;
        var xv = 0.0;
        if (gm < p.m && gk < p.k) {
            xv = load_x_at(rows[i], col);
        }
        staged_x[i / 4u][i % 4u] = xv;
        let gn = col0 + r;
        var wv = 0.0;
        if (gn < p.n && gk < p.k) {
            wv = load_w(gn, gk);
        }
        staged_w[i / 4u][i % 4u] = wv;
    }
}

fn stage_tiles(buf: u32, li: u32) {
    for (var i = 0u; i < TILE * TK / 256u; i++) {
        let r = (li + 256u * i) / TK;
        let kk = li % TK;
        put_x(buf, kk, r, staged_x[i / 4u][i % 4u]);
        put_w(buf, kk, r, staged_w[i / 4u][i % 4u]);
    }
}
