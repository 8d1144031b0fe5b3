// dst[dst_off + i] = f32(src element src_off + i), i < count, src holding f16 packed two per u32 (element 2j
// in the low half). Turns f16 weights into f32 activations for ops without an f16 path, and serves
// slice_rows/concat_rows of f16 tensors (whose rows need not start on a u32 boundary).

struct Params {
    count: u32,
    src_off: u32,
    dst_off: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i < p.count) {
        let e = p.src_off + i;
        let pair = unpack2x16float(src[e >> 1u]);
        dst[p.dst_off + i] = select(pair.x, pair.y, (e & 1u) == 1u);
    }
}
