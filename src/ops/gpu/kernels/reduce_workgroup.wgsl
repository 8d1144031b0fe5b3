// Workgroup-wide sum and maximum over the 256 invocations of a norm or softmax workgroup, portable: a tree in
// workgroup memory (8 halving steps, a barrier each). Every adapter runs this; reduce_subgroup.wgsl is the
// same pair of functions through subgroup operations where the adapter has them. Every invocation of the
// workgroup must call, with its value; all get the result.

// The built-ins the reduction needs, taken by the kernel's `main` as one argument (the subgroup version needs more).
struct ReduceIds {
    @builtin(local_invocation_index) li: u32,
}

const REDUCE_WG: u32 = 256u;
var<workgroup> red: array<f32, REDUCE_WG>;

fn workgroup_sum(v: f32, ids: ReduceIds) -> f32 {
    red[ids.li] = v;
    workgroupBarrier();
    for (var stride = REDUCE_WG / 2u; stride > 0u; stride /= 2u) {
        if (ids.li < stride) {
            red[ids.li] += red[ids.li + stride];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

fn workgroup_max(v: f32, ids: ReduceIds) -> f32 {
    red[ids.li] = v;
    workgroupBarrier();
    for (var stride = REDUCE_WG / 2u; stride > 0u; stride /= 2u) {
        if (ids.li < stride) {
            red[ids.li] = max(red[ids.li], red[ids.li + stride]);
        }
        workgroupBarrier();
    }
    let top = red[0];
    workgroupBarrier();
    return top;
}
