//! Device buffers behind [`super::GpuTensor`]: activations come from a pool keyed by byte size and go back to
//! it when their last tensor handle drops; weights own their buffer outright.
//!
//! Reuse is safe without fences because every use of a buffer is recorded into the one pending command
//! encoder (or an earlier submission) in program order: a buffer freed by a dropped tensor can only be
//! written by work recorded after all the work that read it. That is also why uploads never use
//! `Queue::write_buffer` on pooled buffers (it would run before the pending encoder); see `GpuBackend::upload`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(super) struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
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

/// A device buffer that returns to its pool (if it has one) when dropped.
pub(super) struct PooledBuffer {
    pub buffer: wgpu::Buffer,
    home: Option<Arc<Mutex<Pool>>>,
}

impl PooledBuffer {
    /// A buffer that is not pooled (weights): freed when the last tensor using it drops.
    pub fn owned(buffer: wgpu::Buffer) -> Self {
        PooledBuffer { buffer, home: None }
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(pool) = &self.home {
            lock(pool).free.entry(self.buffer.size()).or_default().push(self.buffer.clone());
        }
    }
}

/// Takes a free buffer of exactly `size` bytes from the pool or creates one.
pub(super) fn take(pool: &Arc<Mutex<Pool>>, device: &wgpu::Device, size: u64) -> PooledBuffer {
    let mut guard = lock(pool);
    let buffer = match guard.free.get_mut(&size).and_then(Vec::pop) {
        Some(b) => b,
        None => {
            guard.created += 1;
            guard.created_bytes += size;
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("lambda-eclipse activation"),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        }
    };
    PooledBuffer { buffer, home: Some(pool.clone()) }
}

pub(super) fn stats(pool: &Mutex<Pool>) -> PoolStats {
    let guard = lock(pool);
    PoolStats { buffers: guard.created, bytes: guard.created_bytes, free: guard.free.values().map(Vec::len).sum() }
}

/// Locks ignoring poisoning: the pool's maps stay consistent even if a holder panicked.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
