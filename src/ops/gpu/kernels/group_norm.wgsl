// Group norm of one sample x [positions, channels] (channels-last): for group g (channels g·cg .. (g+1)·cg,
// cg = channels / groups) mean and biased variance over all positions × cg values, then
// y = x·scale + shift with scale = gamma[c] / sqrt(var + eps), shift = beta[c] − mean·scale: the form
// PyTorch's group norm applies (its rounding, which the decoders' goldens amplify a few hundred times).
// One workgroup per group; mean first, then the variance around it (two passes). The activation that follows
// the norm in the resnets (SiLU) is applied before the store (`act`, codes of activation_fns.wgsl, which
// precedes this file): one pass over the feature map instead of two. The sums through workgroup_sum
// (reduce_workgroup.wgsl, or reduce_subgroup.wgsl where the adapter has subgroups), which opens the module.

struct Params {
    positions: u32,
    channels: u32,
    group_channels: u32,
    eps: f32,
    act: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;

// Element i of the group: position i / cg, channel c0 + i % cg.
fn index_of(i: u32, c0: u32) -> u32 {
    return (i / p.group_channels) * p.channels + c0 + i % p.group_channels;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ids: ReduceIds) {
    let li = ids.li;
    let c0 = wg.x * p.group_channels;
    let count = p.positions * p.group_channels;
    var acc = 0.0;
    for (var i = li; i < count; i += WG) {
        acc += x[index_of(i, c0)];
    }
    let mean = workgroup_sum(acc, ids) / f32(count);
    acc = 0.0;
    for (var i = li; i < count; i += WG) {
        let d = x[index_of(i, c0)] - mean;
        acc += d * d;
    }
    let inv = inverseSqrt(workgroup_sum(acc, ids) / f32(count) + p.eps);
    for (var i = li; i < count; i += WG) {
        let e = index_of(i, c0);
        let c = c0 + i % p.group_channels;
        let scale = inv * gamma[c];
        y[e] = apply_activation(x[e] * scale + (beta[c] - mean * scale), p.act);
    }
}
