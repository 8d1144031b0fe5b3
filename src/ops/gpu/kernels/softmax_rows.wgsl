// In place, per row r of s [rows, cols]: s[r, j] = softmax_j(scale · s[r, j] + bias[bias_off + r·cols + j]).
// The middle step of the long-sequence attention (scores by the tiled GEMM, this, then P·V by the GEMM).
// One workgroup per row; the maximum is subtracted before exp, so nothing overflows. Preceded by
// activation_fns.wgsl (exp_f32) and a reduction (reduce_workgroup.wgsl, or reduce_subgroup.wgsl where the
// adapter has subgroups: workgroup_max, workgroup_sum).

struct Params {
    rows: u32,
    cols: u32,
    has_bias: u32,
    bias_off: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> s: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        ids: ReduceIds) {
    let li = ids.li;
    let r = wg.y * nwg.x + wg.x;
    if (r >= p.rows) {
        return;
    }
    let row = r * p.cols;
    // −3e38: WGSL rejects literals at the f32 extremes.
    var m = -3.0e38;
    for (var j = li; j < p.cols; j += WG) {
        var v = s[row + j] * p.scale;
        if (p.has_bias != 0u) {
            v += bias[p.bias_off + row + j];
        }
        s[row + j] = v;
        m = max(m, v);
    }
    let row_max = workgroup_max(m, ids);
    var sum = 0.0;
    for (var j = li; j < p.cols; j += WG) {
        sum += exp_f32(s[row + j] - row_max);
    }
    let total = workgroup_sum(sum, ids);
    for (var j = li; j < p.cols; j += WG) {
        s[row + j] = exp_f32(s[row + j] - row_max) / total;
    }
}
