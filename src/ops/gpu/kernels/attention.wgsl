// Multi-head attention, one workgroup per (query row i, head h). Preceded by activation_fns.wgsl (exp_f32):
//   out[i, h·d + c] = Σ_j softmax_j(scale · q_i·k_j + bias[i, j]) · v[j, h·d + c]
// q [t, width], k and v [s, width], width = heads·d, bias [t, s] shared by all heads (optional).
// The query row and the row of scores live in workgroup memory (d ≤ 256, s ≤ 1024: checked on the host).

struct Params {
    s: u32,
    d: u32,
    width: u32,
    has_bias: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 128u;
const MAX_D: u32 = 256u;
const MAX_S: u32 = 1024u;

var<workgroup> qs: array<f32, MAX_D>;
var<workgroup> scores: array<f32, MAX_S>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = wg.x;
    let head = wg.y * p.d;
    for (var c = li; c < p.d; c += WG) {
        qs[c] = q[i * p.width + head + c];
    }
    workgroupBarrier();

    // Scores and their maximum (−3e38: WGSL rejects literals at the f32 extremes).
    var m = -3.0e38;
    for (var j = li; j < p.s; j += WG) {
        let kr = j * p.width + head;
        var dot = 0.0;
        for (var c = 0u; c < p.d; c++) {
            dot = fma(qs[c], k[kr + c], dot);
        }
        var sc = dot * p.scale;
        if (p.has_bias != 0u) {
            sc += bias[i * p.s + j];
        }
        scores[j] = sc;
        m = max(m, sc);
    }
    red[li] = m;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red[li] = max(red[li], red[li + stride]);
        }
        workgroupBarrier();
    }
    let row_max = red[0];
    workgroupBarrier();

    var sum = 0.0;
    for (var j = li; j < p.s; j += WG) {
        let e = exp_f32(scores[j] - row_max);
        scores[j] = e;
        sum += e;
    }
    red[li] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red[li] += red[li + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];

    // Every thread's exp(scores) is visible after the reduction barriers above.
    // Summed 32 keys at a time, then the partial sums: rounding grows with s/32 + 32 rather than s.
    for (var c = li; c < p.d; c += WG) {
        var acc = 0.0;
        for (var j0 = 0u; j0 < p.s; j0 += 32u) {
            var part = 0.0;
            for (var j = j0; j < min(j0 + 32u, p.s); j++) {
                part = fma(scores[j], v[j * p.width + head + c], part);
            }
            acc += part;
        }
        out[i * p.width + head + c] = acc * inv;
    }
}
