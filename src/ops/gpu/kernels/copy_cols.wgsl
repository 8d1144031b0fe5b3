// y[r, col0 + c] = x[r, c] for x [rows, cols], y [rows, total]: one part of a column concatenation
// (channel concat of feature maps), one dispatch per part.

struct Params {
    count: u32,
    cols: u32,
    total: u32,
    col0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i < p.count) {
        y[(i / p.cols) * p.total + p.col0 + i % p.cols] = x[i];
    }
}
