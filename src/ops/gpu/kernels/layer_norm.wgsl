// Layer norm of each row of x [rows, cols]: (x − mean) / sqrt(var + eps) · gamma + beta, with the two-pass
// (centred) variance the CPU backend uses. One workgroup per row, tree reductions in workgroup memory.

struct Params {
    cols: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn reduce_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red[li] += red[li + stride];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = wg.x * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += x[base + c];
    }
    let mean = reduce_sum(li, s) / n;
    var sq = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        let d = x[base + c] - mean;
        sq += d * d;
    }
    let denom = sqrt(reduce_sum(li, sq) / n + p.eps);
    for (var c = li; c < p.cols; c += WG) {
        y[base + c] = (x[base + c] - mean) / denom * gamma[c] + beta[c];
    }
}
