//! Device buffers behind [`super::GpuTensor`]: activations come from a pool keyed by byte size and go back to
//! it when their last tensor handle drops; weights own their buffer outright.
//!
//! Reuse is safe without fences because every use of a buffer is recorded into the one pending command
//! encoder (or an earlier submission) in program order: a buffer freed by a dropped tensor can only be
//! written by work recorded after all the work that read it. That is also why uploads never use
//! `Queue::write_buffer` on pooled buffers (it would run before the pending encoder); see `GpuBackend::upload`.
//!
//! Every buffer has a [`BufferId`] for as long as it exists (a pooled buffer keeps its id across reuses), which
//! the bind-group cache (recorder.rs) keys on. An owned buffer tells that cache when it is freed, so no cached
//! bind group keeps a dropped weight alive.

use super::recorder::BindGroupCache;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Identifies a device buffer while it exists; never reused (a freed buffer's address could be).
pub(super) type BufferId = u64;

pub(super) fn new_buffer_id() -> BufferId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Default)]
pub(super) struct Pool {
    /// Free buffers by size, by id. Taking the oldest (lowest id) makes the assignment of buffers a function
    /// of the sequence of takes and frees alone: a repeated forward gets exactly the buffers the previous one
    /// got (the extra buffers free at its start are all younger than any it would take), so it finds all its
    /// bind groups cached.
    free: HashMap<u64, BTreeMap<BufferId, wgpu::Buffer>>,
    /// Buffers ever created by the pool (free or in use) and their bytes.
    created: usize,
    created_bytes: u64,
}

/// Counters for memory reports and for tests that check buffers are reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Activation buffers the pool has ever allocated (in use + free).
    pub buffers: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// How many of them are free right now.
    pub free: usize,
}

/// Where a buffer goes when its [`PooledBuffer`] drops.
enum Home {
    /// Back to the pool (activations): it lives on, and so may the bind groups that use it.
    Pool(Arc<Mutex<Pool>>),
    /// Freed (weights, inputs): first the bind groups that use it are dropped from the cache.
    Owned(Arc<Mutex<BindGroupCache>>),
}

/// A device buffer that returns to its pool (if it has one) when dropped.
pub(super) struct PooledBuffer {
    pub buffer: wgpu::Buffer,
    pub id: BufferId,
    home: Home,
}

impl PooledBuffer {
    /// A buffer that is not pooled (weights): freed when the last tensor using it drops.
    pub fn owned(buffer: wgpu::Buffer, bind_groups: &Arc<Mutex<BindGroupCache>>) -> Self {
        PooledBuffer { buffer, id: new_buffer_id(), home: Home::Owned(bind_groups.clone()) }
    }

    /// Whether the buffer is freed when dropped (rather than returned to the pool).
    pub fn is_owned(&self) -> bool {
        matches!(self.home, Home::Owned(_))
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        match &self.home {
            Home::Pool(pool) => {
                lock(pool).free.entry(self.buffer.size()).or_default().insert(self.id, self.buffer.clone());
            }
            Home::Owned(bind_groups) => lock(bind_groups).forget_buffer(self.id),
        }
    }
}

/// Takes a free buffer of exactly `size` bytes from the pool or creates one.
pub(super) fn take(pool: &Arc<Mutex<Pool>>, device: &wgpu::Device, size: u64) -> PooledBuffer {
    let mut guard = lock(pool);
    let (id, buffer) = match guard.free.get_mut(&size).and_then(BTreeMap::pop_first) {
        Some(b) => b,
        None => {
            guard.created += 1;
            guard.created_bytes += size;
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("lambda-eclipse activation"),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            (new_buffer_id(), buffer)
        }
    };
    PooledBuffer { buffer, id, home: Home::Pool(pool.clone()) }
}

pub(super) fn stats(pool: &Mutex<Pool>) -> PoolStats {
    let guard = lock(pool);
    PoolStats { buffers: guard.created, bytes: guard.created_bytes, free: guard.free.values().map(BTreeMap::len).sum() }
}

/// Locks ignoring poisoning: the pool's maps stay consistent even if a holder panicked.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
