//! Ring storage over loom's model atomics and cells (only under `--cfg loom`), so the loom
//! tests check the very `Producer`/`Consumer` code the sidecar runs, including data races on
//! entries.

use std::sync::Arc;

use loom::cell::UnsafeCell;

use crate::ring::RingStorage;
use crate::sync::AtomicU64;

struct Inner<const N: usize> {
    tail: AtomicU64,
    head: AtomicU64,
    entries: Box<[UnsafeCell<[u8; N]>]>,
}

#[derive(Clone)]
pub struct LoomRing<const N: usize>(Arc<Inner<N>>);

impl<const N: usize> LoomRing<N> {
    pub fn new(capacity: u32) -> Self {
        assert!(capacity.is_power_of_two());
        let entries = (0..capacity).map(|_| UnsafeCell::new([0u8; N])).collect();
        Self(Arc::new(Inner { tail: AtomicU64::new(0), head: AtomicU64::new(0), entries }))
    }
}

// SAFETY: fixed atomics and a fixed-length entry array owned by the Arc.
unsafe impl<const N: usize> RingStorage<N> for LoomRing<N> {
    fn tail(&self) -> &AtomicU64 {
        &self.0.tail
    }
    fn head(&self) -> &AtomicU64 {
        &self.0.head
    }
    fn capacity(&self) -> u32 {
        self.0.entries.len() as u32
    }
    unsafe fn write(&self, index: usize, entry: &[u8; N]) {
        // SAFETY: the caller owns the entry; loom checks that claim.
        self.0.entries[index].with_mut(|p| unsafe { *p = *entry })
    }
    unsafe fn read(&self, index: usize) -> [u8; N] {
        // SAFETY: the caller consumes a published entry; loom checks that claim.
        self.0.entries[index].with(|p| unsafe { *p })
    }
}
