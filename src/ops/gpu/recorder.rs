//! Recording work: the one pending command encoder every op records into, and the caches that make a
//! dispatch cheap to record — compiled pipelines per kernel variant, uniform buffers per parameter content,
//! and bind groups per kernel variant and the buffers it binds (so a repeated forward — a decoder's steps —
//! creates none: the pool hands its activations the same buffers again).
//!
//! Ordering: an encoder is always submitted while the `pending` lock is held, so work recorded later
//! (possibly into a pooled buffer freed meanwhile) can never reach the queue before it. Nothing here waits on
//! the device; `read_f32` (upload.rs) is where a forward is submitted and awaited.

use super::kernels::{Kernel, KernelParams};
use super::pool::{lock, new_buffer_id, BufferId, PooledBuffer};
use super::GpuBackend;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Workgroup size of the 1-D elementwise kernels (`@workgroup_size(256)`).
pub(super) const ELEMENTWISE_WG: usize = 256;
/// Submit the pending encoder after this many recorded ops, so a long forward does not build one huge
/// command buffer before the first read.
const FLUSH_EVERY: usize = 512;
/// The bind-group cache starts over when it holds this many: a bound on host and driver memory far above
/// what one forward needs, so a repeated forward always finds its bind groups.
const MAX_BIND_GROUPS: usize = 16384;

/// Recorded work, submitted in order. Consecutive dispatches share one compute pass (`pass`, open on
/// `encoder`): WebGPU makes each dispatch its own usage scope, so ordering through storage buffers holds
/// inside a pass, and a forward costs one begin/end pair instead of one per op (each a call across the wasm
/// boundary in the browser). The pass is ended before anything else is recorded (a copy) or submitted.
#[derive(Default)]
struct Pending {
    /// Dropped (ended) before `encoder` is used otherwise: `forget_lifetime` leaves the borrow to us.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    ops: usize,
    /// Compute passes begun so far (reported by `bind_group_stats`).
    passes: u64,
}

impl Pending {
    /// The encoder, after ending an open pass; created on demand.
    fn encoder(&mut self, new: impl FnOnce() -> wgpu::CommandEncoder) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(new)
    }

    /// The finished command buffer of everything recorded, if anything was.
    fn finish(&mut self) -> Option<wgpu::CommandBuffer> {
        self.pass = None;
        self.ops = 0;
        self.encoder.take().map(|e| e.finish())
    }
}

/// The pending encoder and the caches behind [`GpuBackend::dispatch`]; one per device.
#[derive(Default)]
pub(super) struct Recorder {
    pending: Mutex<Pending>,
    pipelines: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
    /// Uniform buffers by content: params are immutable, so equal params share one buffer forever.
    uniforms: Mutex<HashMap<Vec<u8>, (BufferId, wgpu::Buffer)>>,
    /// Shared with every owned buffer, which removes its bind groups when it is freed.
    pub(super) bind_groups: Arc<Mutex<BindGroupCache>>,
}

/// A bind group's identity: the pipeline (auto layouts are per pipeline) and the buffers at bindings 0.. (the
/// uniform first), each bound whole.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BindKey {
    kernel: Kernel,
    buffers: Vec<BufferId>,
}

/// Bind groups by [`BindKey`]. Pooled and uniform buffers live as long as the device, so their bind groups
/// stay valid; an owned buffer (a weight, an input) calls [`BindGroupCache::forget_buffer`] when freed.
#[derive(Default)]
pub(super) struct BindGroupCache {
    groups: HashMap<BindKey, wgpu::BindGroup>,
    /// The keys that bind each owned buffer.
    by_owned_buffer: HashMap<BufferId, HashSet<BindKey>>,
    stats: BindGroupStats,
}

/// Counters of the bind-group cache, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindGroupStats {
    /// Dispatches recorded.
    pub dispatches: u64,
    /// Bind groups created for them (the rest were found in the cache).
    pub created: u64,
    /// Bind groups held now.
    pub cached: usize,
    /// Compute passes begun for the dispatches (consecutive dispatches share one).
    pub compute_passes: u64,
}

impl BindGroupCache {
    fn insert(&mut self, key: BindKey, group: wgpu::BindGroup, owned: impl Iterator<Item = BufferId>) {
        if self.groups.len() >= MAX_BIND_GROUPS {
            self.groups.clear();
            self.by_owned_buffer.clear();
        }
        for id in owned {
            self.by_owned_buffer.entry(id).or_default().insert(key.clone());
        }
        self.groups.insert(key, group);
    }

    /// Drops every bind group that binds buffer `id` (being freed), so none keeps it alive.
    pub(super) fn forget_buffer(&mut self, id: BufferId) {
        for key in self.by_owned_buffer.remove(&id).unwrap_or_default() {
            self.groups.remove(&key);
            for other in &key.buffers {
                if let Some(keys) = self.by_owned_buffer.get_mut(other) {
                    keys.remove(&key);
                }
            }
        }
    }
}

impl GpuBackend {
    /// Number of distinct uniform-parameter buffers created so far (bounded by the distinct op shapes).
    pub fn uniform_buffers(&self) -> usize {
        lock(&self.inner.recorder.uniforms).len()
    }

    /// Dispatches recorded, bind groups created for them and bind groups cached now.
    pub fn bind_group_stats(&self) -> BindGroupStats {
        let compute_passes = lock(&self.inner.recorder.pending).passes;
        let cache = lock(&self.inner.recorder.bind_groups);
        BindGroupStats { cached: cache.groups.len(), compute_passes, ..cache.stats }
    }

    /// Submits all recorded work without waiting for it.
    pub fn flush(&self) {
        let mut pending = lock(&self.inner.recorder.pending);
        if let Some(commands) = pending.finish() {
            self.inner.queue.submit(Some(commands));
        }
    }

    fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lambda-eclipse") })
    }

    /// Runs `f` (a copy) on the pending encoder, after ending an open compute pass.
    pub(super) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut pending = lock(&self.inner.recorder.pending);
        f(pending.encoder(|| self.new_encoder()));
        self.count_op(&mut pending);
    }

    /// Submits everything recorded every `FLUSH_EVERY` ops.
    fn count_op(&self, pending: &mut Pending) {
        pending.ops += 1;
        if pending.ops >= FLUSH_EVERY {
            if let Some(commands) = pending.finish() {
                self.inner.queue.submit(Some(commands));
            }
        }
    }

    /// Records `f` (a copy into a readback buffer) after everything pending and submits it all now.
    pub(super) fn record_and_submit(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut pending = lock(&self.inner.recorder.pending);
        f(pending.encoder(|| self.new_encoder()));
        if let Some(commands) = pending.finish() {
            self.inner.queue.submit(Some(commands));
        }
    }

    fn pipeline(&self, kernel: Kernel) -> wgpu::ComputePipeline {
        let mut cache = lock(&self.inner.recorder.pipelines);
        cache
            .entry(kernel)
            .or_insert_with(|| {
                let device = &self.inner.device;
                // Without naga's loop bounding: it adds a 64-bit iteration counter to every loop, so the
                // driver cannot see a loop's trip count, does not unroll it, and keeps the arrays a loop
                // indexes (a thread's GEMM outputs) in local memory instead of registers — on an H200
                // through Vulkan the tiled GEMMs ran at 2–3 % of the FMA peak with it (wgpu #7698). Bounds
                // checks stay on. In the browser WebGPU compiles the WGSL itself and this is the plain call.
                let mut checks = wgpu::ShaderRuntimeChecks::checked();
                checks.force_loop_bounding = false;
                let descriptor = wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.name()),
                    source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
                };
                // SAFETY: loop bounding may only be dropped for shaders without infinite loops. Every loop in
                // the kernels is a counted `for` over a bound taken from its params or a constant, its counter
                // stepped up towards that bound (tests/kernel_contracts.rs checks the form of every loop).
                let module = unsafe { device.create_shader_module_trusted(descriptor, checks) };
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.name()),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .clone()
    }

    fn uniform(&self, bytes: &[u8]) -> (BufferId, wgpu::Buffer) {
        let mut cache = lock(&self.inner.recorder.uniforms);
        if let Some(b) = cache.get(bytes) {
            return b.clone();
        }
        let buffer = self.inner.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("lambda-eclipse params"),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let entry = (new_buffer_id(), buffer);
        cache.insert(bytes.to_vec(), entry.clone());
        entry
    }

    /// The bind group of `kernel` with `uniform` at binding 0 and `buffers` at 1.., from the cache or new.
    fn bind_group(
        &self,
        kernel: Kernel,
        pipeline: &wgpu::ComputePipeline,
        uniform: (BufferId, &wgpu::Buffer),
        buffers: &[&PooledBuffer],
    ) -> wgpu::BindGroup {
        let key = BindKey { kernel, buffers: std::iter::once(uniform.0).chain(buffers.iter().map(|b| b.id)).collect() };
        let mut cache = lock(&self.inner.recorder.bind_groups);
        cache.stats.dispatches += 1;
        if let Some(group) = cache.groups.get(&key) {
            return group.clone();
        }
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.1.as_entire_binding() }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.buffer.as_entire_binding() });
        }
        let group = self.inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        cache.stats.created += 1;
        cache.insert(key, group.clone(), buffers.iter().filter(|b| b.is_owned()).map(|b| b.id));
        group
    }

    /// Records one dispatch: binding 0 is `params`, bindings 1.. are `buffers` in order (the kernel's
    /// bindings as registry.rs lists them).
    pub(super) fn dispatch<P: KernelParams>(
        &self,
        kernel: Kernel,
        params: &P,
        buffers: &[&PooledBuffer],
        groups: [u32; 3],
    ) {
        debug_assert_eq!(P::LAYOUT.rust_name, kernel.params().rust_name, "{kernel:?} takes other params");
        debug_assert_eq!(buffers.len() + 1, kernel.bindings().len(), "{kernel:?} binds another number of buffers");
        let pipeline = self.pipeline(kernel);
        let (uniform_id, uniform) = self.uniform(bytemuck::bytes_of(params));
        let bind_group = self.bind_group(kernel, &pipeline, (uniform_id, &uniform), buffers);
        let mut pending = lock(&self.inner.recorder.pending);
        if pending.pass.is_none() {
            let encoder = pending.encoder(|| self.new_encoder());
            let pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("lambda-eclipse ops"),
                timestamp_writes: None,
            });
            pending.pass = Some(pass.forget_lifetime());
            pending.passes += 1;
        }
        let pass = pending.pass.as_mut().expect("a compute pass was just opened");
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.count_op(&mut pending);
        if let Some(profile) = &self.inner.profile {
            // This dispatch alone (everything before it has been waited for): submit (under the lock, as
            // every submit: see the module's ordering note), wait, add its time.
            let start = crate::timing::now_ms();
            self.inner.queue.submit(pending.finish());
            drop(pending);
            let _ = self.inner.device.poll(wgpu::PollType::wait_indefinitely());
            let ms = crate::timing::now_ms() - start;
            let mut profile = lock(profile);
            let entry = profile.entry(format!("{kernel:?}")).or_default();
            entry.0 += 1;
            entry.1 += ms;
        }
    }

    /// Workgroup grid for a 1-D kernel over `n` elements (256 per group), folded into y past the 65535 limit.
    pub(super) fn groups_1d(&self, n: usize) -> [u32; 3] {
        let groups = n.div_ceil(ELEMENTWISE_WG).max(1);
        let max = self.inner.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            [max as u32, groups.div_ceil(max) as u32, 1]
        }
    }
}
