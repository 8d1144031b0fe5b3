// The tiled GEMM's bias, output and residual (gemm_params.wgsl). Apart from its params so that the split-K
// reduce (gemm_split_k_reduce.wgsl), whose partial sums take binding 1, can declare the same three names at
// its own binding numbers and share the epilogue (gemm_epilogue.wgsl).
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
