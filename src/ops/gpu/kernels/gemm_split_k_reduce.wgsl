// Split-K's second pass (ops/gemm.rs): the tiled GEMM wrote each K slice's partial sums of y [m, n] to
// partials [k_slices, m, n]; here one invocation per output element adds its k_slices partials in slice
// order — a fixed order, so the result is the same every run — and hands the total to the GEMM's own epilogue
// (gemm_epilogue.wgsl: bias, activation, residual, strided store) with the GEMM's params (k_slice = 0 here).
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let count = p.m * p.n;
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if (i >= count) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.k_slices; s++) {
        sum += partials[s * count + i];
    }
    store(i / p.n, i % p.n, sum);
}
