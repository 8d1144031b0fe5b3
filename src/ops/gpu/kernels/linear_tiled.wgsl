// The tiled GEMM behind linear, matmul, conv2d and the long-sequence attention:
//   y[m, n] = act(Σ_k X(m, k) · W(n, k) + bias[bias_off + n]),
//   W(n, k) = w[w_off + n·w_sn + k·w_sk]; y written at out_off + m·out_stride + n.
// linear: w [n, k] → (w_sn, w_sk) = (k, 1); matmul: b [k, n] → (1, n). X(m, k) comes from `load_x`:
// gemm_x_dense.wgsl (x[x_off + m·x_stride + k], a strided view: one head's columns, a block of rows) or
// gemm_x_conv.wgsl (implicit im2col of a channels-last image). `w` and `load_w` come from linear_f32.wgsl,
// linear_f16.wgsl or linear_f16_native.wgsl. Offsets and strides let one dispatch write a column block of
// a larger output (a weight split by rows, one attention head).
//
// 64×64 output tile per workgroup of 16×16 threads, 4×4 outputs per thread (rows ly + 16i, cols lx + 16j so
// that reads of the shared tiles are consecutive across threads), K in steps of 16 through workgroup memory.
// Out-of-range loads read 0, so any M, N, K works.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    w_sn: u32,
    w_sk: u32,
    w_off: u32,
    has_bias: u32,
    act: u32,
    x_stride: u32,
    x_off: u32,
    out_stride: u32,
    out_off: u32,
    bias_off: u32,
    conv_h: u32,
    conv_w: u32,
    conv_cin: u32,
    conv_ks: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> xs: array<array<f32, 64>, 16>;
var<workgroup> ws: array<array<f32, 64>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 256 threads load 64×16 of x and 64×16 of W, 4 elements each.
        for (var i = 0u; i < 4u; i++) {
            let idx = li + 256u * i;
            let r = idx / TK;
            let kk = idx % TK;
            let gk = k0 + kk;
            let gm = row0 + r;
            var xv = 0.0;
            if (gm < p.m && gk < p.k) {
                xv = load_x(gm, gk);
            }
            xs[kk][r] = xv;
            let gn = col0 + r;
            var wv = 0.0;
            if (gn < p.n && gk < p.k) {
                wv = load_w(p.w_off + gn * p.w_sn + gk * p.w_sk);
            }
            ws[kk][r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let b = vec4<f32>(ws[kk][lid.x], ws[kk][lid.x + 16u], ws[kk][lid.x + 32u], ws[kk][lid.x + 48u]);
            for (var i = 0u; i < 4u; i++) {
                acc[i] = fma(vec4<f32>(xs[kk][lid.y + 16u * i]), b, acc[i]);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let gm = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gn = col0 + lid.x + 16u * j;
            if (gm < p.m && gn < p.n) {
                var v = acc[i][j];
                if (p.has_bias != 0u) {
                    v += bias[p.bias_off + gn];
                }
                y[p.out_off + gm * p.out_stride + gn] = apply_activation(v, p.act);
            }
        }
    }
}
