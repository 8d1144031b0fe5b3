// Nearest-neighbour resize of a channels-last image [h·w, c] → [oh·ow, c], source pixel
// (⌊oy·h/oh⌋, ⌊ox·w/ow⌋) as PyTorch's mode="nearest" (integer arithmetic: exact for the integer ratios
// the decoders use, ×2 upsampling and latents resized to a feature map's size).

struct Params {
    count: u32,
    channels: u32,
    in_height: u32,
    in_width: u32,
    out_height: u32,
    out_width: u32,
    _pad0: u32,
    _pad1: u32,
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
    let sy = (pix / p.out_width) * p.in_height / p.out_height;
    let sx = (pix % p.out_width) * p.in_width / p.out_width;
    y[i] = x[(sy * p.in_width + sx) * p.channels + c];
}
