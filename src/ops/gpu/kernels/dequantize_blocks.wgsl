// y[r, c] = table[ids[r], c] for a table in ggml blocks (blocks_fns.wgsl; `q4`: Q4_0, else Q8_0): an
// embedding lookup, or with ids 0..rows the whole tensor as f32, for the ops that read no blocks (all but
// the GEMM).

struct Params {
    rows: u32,
    cols: u32,
    q4: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= p.rows * p.cols) {
        return;
    }
    let q4 = p.q4 == 1u;
    let at = block_bytes(ids[i / p.cols] * p.cols + i % p.cols, p.cols, q4);
    y[i] = block_q(table[at.y >> 2u], at.y, at.z, q4) * half_at(table[at.x >> 2u], at.x);
}
