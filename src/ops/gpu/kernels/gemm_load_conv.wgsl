// gemm_load.wgsl for the implicit im2col (gemm_x_conv.wgsl), with the divisions taken out of the inner
// loads: 256 is a multiple of TK, so a thread's TILE·TK / 256 elements of a K-tile share one k (decomposed
// once per K-tile by conv_tap) and lie in rows that never change (their pixels computed once, at the first
// K-tile). Weights one element at a time through load_w. The same fetch_tiles / stage_tiles halves.

var<private> staged_x: array<vec4<f32>, TILE * TK / 1024u>;
var<private> staged_w: array<vec4<f32>, TILE * TK / 1024u>;
// The output pixels of this thread's rows, and the tile row they were computed for (none yet: not a multiple
// of any TILE).
var<private> pixels: array<vec2<u32>, TILE * TK / 256u>;
var<private> pixels_of: u32 = 0xffffffffu;

fn fetch_tiles(row0: u32, col0: u32, k0: u32, li: u32) {
    if (pixels_of != row0) {
        for (var i = 0u; i < TILE * TK / 256u; i++) {
            pixels[i] = conv_pixel(row0 + (li + 256u * i) / TK);
        }
        pixels_of = row0;
    }
    let gk = k0 + li % TK;
    let tap = conv_tap(gk);
    for (var i = 0u; i < TILE * TK / 256u; i++) {
        let r = (li + 256u * i) / TK;
        let gm = row0 + r;
        var xv = 0.0;
        if (gm < p.m && gk < p.k) {
            xv = load_conv(pixels[i], tap);
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
