// The tiled GEMM's epilogue (gemm_params.wgsl): bias, activation, residual and the strided store of one output
// element (rows/cols already bounds-checked), shared verbatim by the tilings and the split-K reduce, so a
// split product ends with exactly the arithmetic of an unsplit one. residual + value: the same f32 sum the
// separate add computes. Under split-K (p.k_slice ≠ 0) a tiling's store writes its slice's raw partial sum to
// y bound as scratch [k_slices, m, n] instead; the reduce runs with k_slice = 0.
fn store(gm: u32, gn: u32, acc: f32) {
    if (p.k_slice != 0u) {
        y[(k_slice_index * p.m + gm) * p.n + gn] = acc;
        return;
    }
    var v = acc;
    if (p.has_bias != 0u) {
        v += bias[p.bias_off + gn];
    }
    let at = p.out_off + gm * p.out_stride + gn;
    v = apply_activation(v, p.act);
    if (p.has_residual != 0u) {
        v = residual[at] + v;
    }
    y[at] = v;
}
