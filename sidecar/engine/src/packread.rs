//! Pack windows: many small blobs of a pack fetched with one ranged read (issue #15, restore).
//!
//! A restore asks for blobs one at a time (a file's chunks, in file order, files in tree order),
//! and a backup wrote them to packs in about that order. Reading each small blob with its own
//! ranged read costs a store round trip per blob — for file:// an open, a trailer read and a
//! `pread` through the blocking pool; for S3 a GET — which dominates restoring many small files.
//! So a small blob (≤ [`SMALL_BLOB`]) is read through a *window*: the aligned [`WINDOW`]-sized
//! stretch of its pack around it, read once with one ranged read and shared (zero-copy `Bytes`
//! slices) by every blob in it. Consecutive small files then cost one read per window: each pack
//! is read about once, in pack order, with reads covering many blobs; authentication,
//! decompression and the id check still run per blob on the CPU workers, in parallel.
//!
//! Bounded: at most [`MAX_WINDOWS`] windows are kept (oldest dropped first; a dropped window
//! still being sliced lives until its last slice is gone), so ≤ 16 MiB per repository. Large
//! blobs are read as before (their read already amortises the round trip), and so is a blob
//! that straddles a window's edge. Concurrent readers of one window wait for the one read.
//!
//! Trust: offsets and sizes come from the (authenticated) index; a window is an unverified
//! ranged read exactly like the per-blob read it replaces (each blob is authenticated after
//! slicing). A window that cannot be read (e.g. an index claiming a larger pack than the store
//! has) falls back to the blob's own ranged read, so windows never fail a read that would
//! otherwise succeed.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::id::PackId;

/// Size of a window (aligned within its pack).
pub const WINDOW: u64 = 2 << 20;
/// Blobs up to this envelope length are read through windows.
pub const SMALL_BLOB: u32 = 256 << 10;
/// Windows kept at once per repository.
pub const MAX_WINDOWS: usize = 8;

/// One stretch of a pack, read once.
#[derive(Debug)]
pub struct Window {
    pack: PackId,
    range: Range<u64>,
    data: OnceCell<Bytes>,
}

impl Window {
    /// The pack bytes `range` covers.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The window's bytes, read with `read` by the first caller (others wait for it).
    pub async fn bytes<F, Fut, E>(&self, read: F) -> Result<Bytes, E>
    where
        F: FnOnce(Range<u64>) -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, E>>,
    {
        self.data.get_or_try_init(|| read(self.range.clone())).await.cloned()
    }

    /// The slice of `data` (this window's bytes) holding pack bytes `blob`.
    pub fn slice(&self, data: &Bytes, blob: Range<u64>) -> Option<Bytes> {
        let from = usize::try_from(blob.start.checked_sub(self.range.start)?).ok()?;
        let to = usize::try_from(blob.end.checked_sub(self.range.start)?).ok()?;
        (to <= data.len() && from <= to).then(|| data.slice(from..to))
    }
}

/// The windows of one repository.
#[derive(Debug, Default)]
pub struct PackWindows {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Newest last.
    windows: VecDeque<Arc<Window>>,
    /// Data size of each pack seen (from the index).
    sizes: HashMap<PackId, u64>,
}

impl PackWindows {
    /// The window holding pack bytes `blob` of `pack`, made if needed; `None` when the blob is
    /// large, straddles a window edge, or lies outside the pack's known size. `sizes` lists
    /// every pack's data size (the index's; asked only for a pack not seen before).
    pub fn window_for<I>(&self, pack: PackId, blob: Range<u64>, sizes: impl FnOnce() -> I) -> Option<Arc<Window>>
    where
        I: IntoIterator<Item = (PackId, u64)>,
    {
        if blob.end <= blob.start || blob.end - blob.start > u64::from(SMALL_BLOB) {
            return None;
        }
        let mut s = self.state.lock().expect("pack windows lock");
        if let Some(w) = s.windows.iter().rev().find(|w| w.pack == pack && w.range.start <= blob.start && blob.end <= w.range.end) {
            return Some(w.clone());
        }
        if !s.sizes.contains_key(&pack) {
            s.sizes.extend(sizes());
        }
        let size = *s.sizes.get(&pack)?;
        let start = blob.start - blob.start % WINDOW;
        let end = (start + WINDOW).min(size);
        if blob.end > end {
            return None;
        }
        let w = Arc::new(Window { pack, range: start..end, data: OnceCell::new() });
        if s.windows.len() >= MAX_WINDOWS {
            s.windows.pop_front();
        }
        s.windows.push_back(w.clone());
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn pack(n: u8) -> PackId {
        Id([n; 32])
    }

    #[test]
    fn small_blobs_of_one_stretch_share_a_window() {
        let w = PackWindows::default();
        let sizes = || vec![(pack(1), 5 * WINDOW + 100)];
        let a = w.window_for(pack(1), 10..20, sizes).unwrap();
        let b = w.window_for(pack(1), 1000..5000, sizes).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.range(), 0..WINDOW);
        // The next stretch, and the short last one (clamped to the pack's size).
        assert_eq!(w.window_for(pack(1), WINDOW + 5..WINDOW + 9, sizes).unwrap().range(), WINDOW..2 * WINDOW);
        assert_eq!(w.window_for(pack(1), 5 * WINDOW..5 * WINDOW + 50, sizes).unwrap().range(), 5 * WINDOW..5 * WINDOW + 100);
    }

    #[test]
    fn large_straddling_and_unknown_blobs_are_read_on_their_own() {
        let w = PackWindows::default();
        let sizes = || vec![(pack(1), 4 * WINDOW)];
        assert!(w.window_for(pack(1), 0..u64::from(SMALL_BLOB) + 1, sizes).is_none(), "large");
        assert!(w.window_for(pack(1), WINDOW - 10..WINDOW + 10, sizes).is_none(), "straddles");
        assert!(w.window_for(pack(2), 0..10, sizes).is_none(), "pack not in the index");
        assert!(w.window_for(pack(1), 4 * WINDOW - 5..4 * WINDOW + 5, sizes).is_none(), "past the pack's end");
        assert!(w.window_for(pack(1), 7..7, sizes).is_none(), "empty");
    }

    #[test]
    fn windows_are_bounded() {
        let w = PackWindows::default();
        let sizes = || vec![(pack(1), 100 * WINDOW)];
        let first = w.window_for(pack(1), 0..10, sizes).unwrap();
        for k in 1..=MAX_WINDOWS as u64 {
            w.window_for(pack(1), k * WINDOW..k * WINDOW + 10, sizes).unwrap();
        }
        assert_eq!(w.state.lock().unwrap().windows.len(), MAX_WINDOWS);
        let again = w.window_for(pack(1), 0..10, sizes).unwrap();
        assert!(!Arc::ptr_eq(&first, &again), "the oldest was dropped and is made anew");
    }

    #[tokio::test]
    async fn one_read_per_window_and_slices_of_it() {
        let w = PackWindows::default();
        let sizes = || vec![(pack(1), 1000)];
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let data: Bytes = (0..1000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        let read = |r: Range<u64>| {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let d = data.slice(r.start as usize..r.end as usize);
            async move { Ok::<_, ()>(d) }
        };
        for blob in [10..20u64, 500..600, 990..1000] {
            let win = w.window_for(pack(1), blob.clone(), sizes).unwrap();
            let bytes = win.bytes(read).await.unwrap();
            assert_eq!(win.slice(&bytes, blob.clone()).unwrap(), data.slice(blob.start as usize..blob.end as usize));
        }
        assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
