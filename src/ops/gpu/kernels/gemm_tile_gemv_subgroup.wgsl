// gemm_tile_gemv.wgsl with the 32 shares of each (row, column) added through subgroup operations (adapters with
// the SUBGROUP feature; the host takes the portable file otherwise or when GpuOptions::use_subgroups is off).
// A subgroup that lies within one column's 32 lanes — consecutive local indices from a multiple of its size,
// which is how adapters lay subgroups out in practice but no API promises — adds its lanes' shares with
// subgroupAdd and its first lane stores the total (its other lanes store 0); any other subgroup stores its raw
// shares, as the portable kernel does. So each column's 32 slots always add up to its sum, whatever the layout
// or size, and where every lane of a column fitted, the final sum reads only the subgroup totals.

const GEMV_ROWS: u32 = 8u;
const GEMV_LANES: u32 = 32u;
const GEMV_COLS: u32 = 8u;

var<private> acc: array<f32, GEMV_ROWS>;
// shares[column · 8 + row][lane]: 8 KiB.
var<workgroup> shares: array<array<f32, GEMV_LANES>, 64>;
// Nonzero for a column some of whose lanes stored raw shares (workgroup memory starts zeroed).
var<workgroup> raw_lanes: array<atomic<u32>, GEMV_COLS>;

// One dimension (subgroup ids are only defined for 1-D workgroups): invocation li is lane li % 32 of column
// li / 32, the portable kernel's (32, 8) layout.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_id) sg: u32) {
    let lane = li % GEMV_LANES;
    let col = li / GEMV_LANES;
    let n = wg.x * GEMV_COLS + col;
    for (var m = 0u; m < GEMV_ROWS; m++) {
        acc[m] = 0.0;
    }
    if (n < p.n) {
        gemv_accumulate(n, lane);
    }
    // li = lane + 32·col, so a subgroup of consecutive indices from sg·sg_size, no wider than 32 (sizes are
    // powers of two), lies within one column.
    let within_column = subgroupAll(sg_size <= GEMV_LANES && li == sg * sg_size + sg_lane);
    if (!within_column) {
        atomicStore(&raw_lanes[col], 1u);
    }
    for (var m = 0u; m < GEMV_ROWS; m++) {
        let total = subgroupAdd(acc[m]);
        shares[col * GEMV_ROWS + m][lane] = select(acc[m], select(0.0, total, sg_lane == 0u), within_column);
    }
    workgroupBarrier();
    // Lane m < 8 of each column adds up row m's slots in lane order: every lane's, or (all of the column's
    // subgroups fitted) only the subgroup totals, at lanes 0, sg_size, … — the skipped slots hold 0.
    if (lane < GEMV_ROWS && lane < p.m && n < p.n) {
        let step = select(1u, sg_size, atomicLoad(&raw_lanes[col]) == 0u);
        var sum = 0.0;
        for (var i = 0u; i < GEMV_LANES; i += step) {
            sum += shares[col * GEMV_ROWS + lane][i];
        }
        store(lane, n, sum);
    }
}
