// Non-overlapping p×p patches of an image [c, h, w] as rows [(h/p)·(w/p), c·p·p], in stride-p convolution
// order, each row flattened (channel, y, x) like a conv weight. One thread per output element.

struct Params {
    h: u32,
    w: u32,
    patch_size: u32,
    grid_w: u32,
    cols: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> image: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.count) {
        return;
    }
    let row = i / p.cols;
    let col = i % p.cols;
    let pp = p.patch_size * p.patch_size;
    let ch = col / pp;
    let dy = (col % pp) / p.patch_size;
    let dx = col % p.patch_size;
    let gy = row / p.grid_w;
    let gx = row % p.grid_w;
    y[i] = image[(ch * p.h + gy * p.patch_size + dy) * p.w + gx * p.patch_size + dx];
}
