// y[r, c] = table[ids[r], c]. The table may be f32, f16 packed two per u32 or int8 packed four per u32 with a
// scale per row (int8_fns.wgsl, prepended), per `table_type`, so an embedding table is read in place however
// it is stored; the output is always f32. A table split by rows
// (above the binding limit) is gathered one chunk per dispatch: this one holds rows first .. first + count
// and writes only the output rows whose id falls there.

struct Params {
    rows: u32,
    cols: u32,
    // 0: f32, 1: f16, 2: int8.
    table_type: u32,
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
// The int8 table's scales, one per row of the whole table (a dummy otherwise).
@group(0) @binding(4) var<storage, read> scales: array<f32>;

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
    if (p.table_type == 1u) {
        let pair = unpack2x16float(table[e >> 1u]);
        y[i] = select(pair.x, pair.y, (e & 1u) == 1u);
    } else if (p.table_type == 2u) {
        y[i] = int8_at(table[e >> 2u], e & 3u) * scales[id];
    } else {
        y[i] = bitcast<f32>(table[e]);
    }
}
