// y[r, c] = table[ids[r], c]. The table may be f32 or f16 packed two per u32 (flag `table_f16`), so an
// embedding table is read in place however it is stored; the output is always f32. A table split by rows
// (above the binding limit) is gathered one chunk per dispatch: this one holds rows first .. first + count
// and writes only the output rows whose id falls there.

struct Params {
    rows: u32,
    cols: u32,
    table_f16: u32,
    first: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
    let id = ids[i / p.cols];
    if (id < p.first || id - p.first >= p.count) {
        return;
    }
    let e = (id - p.first) * p.cols + i % p.cols;
    if (p.table_f16 != 0u) {
        let pair = unpack2x16float(table[e >> 1u]);
        y[i] = select(pair.x, pair.y, (e & 1u) == 1u);
    } else {
        y[i] = bitcast<f32>(table[e]);
    }
}
