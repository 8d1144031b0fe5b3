// y[r, c] = x[r, c] · (1 + scale[c]) + shift[c]: a resnet's time conditioning (diffusers' scale_shift),
// one scale and shift per channel broadcast over all positions.

struct Params {
    count: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> shift: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i < p.count) {
        let c = i % p.cols;
        y[i] = x[i] * (1.0 + scale[c]) + shift[c];
    }
}
