// reduce_workgroup.wgsl's workgroup_sum and workgroup_max through subgroup operations (adapters with the
// `subgroups` feature; the host falls back to the portable file otherwise, and GpuOptions::use_subgroups can
// force it): subgroupAdd / subgroupMax within each subgroup, each subgroup's total into its own slot, then every
// invocation adds (or maxes) the slots in slot order — the same operations in the same order everywhere, so the
// whole workgroup gets one bit-identical result. Two barriers instead of nine. Correct for any subgroup size,
// full subgroups or not (one slot per invocation at worst), and for any assignment of invocations to
// subgroups: it uses only subgroup_id and num_subgroups, never a layout of local indices.
// No `enable subgroups;`: naga 30 (wgpu 30) rejects the standard directive and enables the built-ins through the
// device's SUBGROUP feature instead; the registry marks the kernels that need it (Kernel::needs_subgroups).

struct ReduceIds {
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) group: u32,
    @builtin(num_subgroups) groups: u32,
}

// One slot per subgroup: as many as invocations in the worst case (1 KiB); 32 on lavapipe (size 8).
var<workgroup> subgroup_totals: array<f32, 256>;

// Publishes this subgroup's total in its slot, after any earlier reduction's readers are done with the slots.
fn publish_subgroup_total(total: f32, ids: ReduceIds) {
    workgroupBarrier();
    if (ids.lane == 0u) {
        subgroup_totals[ids.group] = total;
    }
    workgroupBarrier();
}

fn workgroup_sum(v: f32, ids: ReduceIds) -> f32 {
    publish_subgroup_total(subgroupAdd(v), ids);
    var acc = subgroup_totals[0];
    for (var i = 1u; i < ids.groups; i++) {
        acc += subgroup_totals[i];
    }
    return acc;
}

fn workgroup_max(v: f32, ids: ReduceIds) -> f32 {
    publish_subgroup_total(subgroupMax(v), ids);
    var acc = subgroup_totals[0];
    for (var i = 1u; i < ids.groups; i++) {
        acc = max(acc, subgroup_totals[i]);
    }
    return acc;
}
