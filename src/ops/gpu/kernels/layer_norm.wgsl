// Layer norm of each row of x [rows, cols]: (x − mean) / sqrt(var + eps) · gamma + beta, with the two-pass
// (centred) variance the CPU backend uses. One workgroup per row; the sums through workgroup_sum
// (reduce_workgroup.wgsl, or reduce_subgroup.wgsl where the adapter has subgroups), which precedes this file.

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

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ids: ReduceIds) {
    let li = ids.li;
    let base = wg.x * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += x[base + c];
    }
    let mean = workgroup_sum(s, ids) / n;
    var sq = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        let d = x[base + c] - mean;
        sq += d * d;
    }
    let denom = sqrt(workgroup_sum(sq, ids) / n + p.eps);
    for (var c = li; c < p.cols; c += WG) {
        y[base + c] = (x[base + c] - mean) / denom * gamma[c] + beta[c];
    }
}
