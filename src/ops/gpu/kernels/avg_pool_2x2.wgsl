// 2×2 average pool, stride 2, of a channels-last image [h·w, c] → [(h/2)·(w/2), c].

struct Params {
    count: u32,
    channels: u32,
    in_width: u32,
    out_width: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.count) {
        return;
    }
    let c = i % p.channels;
    let pix = i / p.channels;
    let top = (2u * (pix / p.out_width) * p.in_width + 2u * (pix % p.out_width)) * p.channels + c;
    let below = top + p.in_width * p.channels;
    y[i] = (x[top] + x[top + p.channels] + x[below] + x[below + p.channels]) * 0.25;
}
