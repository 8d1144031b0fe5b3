// dst[i] = q[i] · scales[i / row_len], i < count: an int8 weight quantised per row (four per u32,
// int8_fns.wgsl) as an f32 activation, for the ops that have no int8 path (all but the GEMM).

struct Params {
    count: u32,
    row_len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i < p.count) {
        dst[i] = int8_at(q[i >> 2u], i & 3u) * scales[i / p.row_len];
    }
}
