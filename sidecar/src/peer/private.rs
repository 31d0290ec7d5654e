//! Sidecar-private buffers that slot bytes are copied into (and stream chunks are read into
//! before they are copied to a slot): what the sidecar hashes, checks and stores is only ever
//! one of these, never the agent's memory (SPEC §12, copy once, then trust).
//!
//! Pooled: a backup copies every byte through one of these, and with glibc's mmap threshold
//! at 8 MiB (see `main.rs`) a fresh 16 MiB buffer per slot would be a fresh mapping and a page
//! fault per 4 KiB (~0.5 GB/s here) — slower than the pipeline. A pool hands the same buffers
//! round and keeps at most `max_idle_bytes` of them idle. A buffer keeps the bytes it was
//! once zeroed to, so taking it again costs nothing for lengths it already had.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A pool of private buffers, shared by every session of the process.
#[derive(Debug)]
pub struct PrivatePool {
    /// Idle buffers, each `len()` bytes initialised; the most recently returned last.
    idle: Mutex<Vec<Vec<u8>>>,
    max_idle_bytes: usize,
}

impl PrivatePool {
    pub fn new(max_idle_bytes: usize) -> Arc<Self> {
        Arc::new(Self { idle: Mutex::new(Vec::new()), max_idle_bytes })
    }

    /// A buffer of exactly `len` bytes (contents unspecified: old bytes of this process, or
    /// zeros).
    pub fn take(self: &Arc<Self>, len: usize) -> PrivateBuf {
        let recycled = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            // The most recent buffer that is long enough, else the longest (grown below).
            let pick = idle.iter().rposition(|b| b.len() >= len).or_else(|| (0..idle.len()).max_by_key(|&i| idle[i].len()));
            pick.map(|i| idle.swap_remove(i))
        };
        let mut buf = recycled.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        PrivateBuf { buf, len, pool: self.clone() }
    }

    fn put(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let held: usize = idle.iter().map(Vec::len).sum();
        if held + buf.len() <= self.max_idle_bytes {
            idle.push(buf);
        }
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).iter().map(Vec::len).sum()
    }
}

/// A private buffer of `len` bytes from a [`PrivatePool`]; goes back to it when dropped.
pub struct PrivateBuf {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<PrivatePool>,
}

impl PrivateBuf {
    /// The first `len` bytes only, as `Bytes` (the buffer returns to the pool when the last
    /// clone is dropped). `len` is clamped to the buffer.
    pub fn into_bytes(mut self, len: usize) -> Bytes {
        self.len = self.len.min(len);
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PrivateBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsMut<[u8]> for PrivateBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl Drop for PrivateBuf {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

impl std::fmt::Debug for PrivateBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_round_and_idle_memory_is_bounded() {
        let pool = PrivatePool::new(3 << 20);
        let mut a = pool.take(1 << 20);
        a.as_mut().fill(7);
        let addr = a.as_ref().as_ptr();
        drop(a);
        assert_eq!(pool.idle_bytes(), 1 << 20);
        let b = pool.take(1000);
        assert_eq!((b.as_ref().as_ptr(), b.as_ref().len()), (addr, 1000), "the same buffer, cut to length");
        let bytes = b.into_bytes(10);
        assert_eq!(&bytes[..], &[7; 10]);
        assert_eq!(pool.idle_bytes(), 0);
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 1 << 20, "back when the Bytes drops");
        // Grown when too short; past the idle bound a returned buffer is freed.
        let (c, d, e) = (pool.take(2 << 20), pool.take(2 << 20), pool.take(16));
        assert_eq!(c.as_ref().len(), 2 << 20);
        drop(c);
        drop(d);
        drop(e);
        assert!(pool.idle_bytes() <= 3 << 20);
    }
}
