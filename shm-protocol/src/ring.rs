//! SPSC ring halves (SPEC.md §4) and the NEED_WAKEUP handshake (§6).
//!
//! The halves are generic over [`RingStorage`], so the same code runs over a region of the
//! shared segment ([`crate::shm::ShmRing`]) and, under `--cfg loom`, over loom's model atomics
//! and cells (`tests/loom.rs`). Each half keeps its own position privately and never re-reads
//! it from shared memory: a hostile peer that scribbles on our position only confuses itself.
//!
//! Ordering pairs (each labelled on both sides):
//! - [PUBLISH] producer `tail.store(Release)` in `publish` ↔ consumer `tail.load(Acquire)` in
//!   `refresh_tail`: entries written before the store are visible after the load.
//! - [RELEASE] consumer `head.store(Release)` in `release` ↔ producer `head.load(Acquire)` in
//!   `refresh_head`: the consumer's reads of an entry happen before the producer reuses it.
//! - [WAKEUP] the Dekker pair of SPEC §6: producer `publish_and_check_wakeup` (store tail;
//!   fence SeqCst; load flag) ↔ consumer `prepare_sleep` (store flag; fence SeqCst; load tail).

use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// Memory behind one ring: its two positions and `capacity` entries of `N` bytes.
///
/// # Safety
/// Implementors guarantee that `tail` and `head` return the same atomics for the life of the
/// storage, that `capacity` is a constant power of two, and that `write`/`read` at an index
/// `< capacity` touch only that entry's `N` bytes.
pub unsafe trait RingStorage<const N: usize> {
    fn tail(&self) -> &AtomicU64;
    fn head(&self) -> &AtomicU64;
    fn capacity(&self) -> u32;
    /// # Safety
    /// `index < capacity`, and the caller is the producer and owns that entry (it lies in
    /// `[head, head + capacity)` minus `[head, tail)`), so no consumer reads it concurrently.
    unsafe fn write(&self, index: usize, entry: &[u8; N]);
    /// # Safety
    /// `index < capacity`, and the caller is the consumer of a published entry (acquired
    /// through `tail`), which the producer does not touch until `head` passes it.
    unsafe fn read(&self, index: usize) -> [u8; N];
}

/// Ring failures. `Corrupt` means the peer broke the position invariants of SPEC §4: the
/// session must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    Full,
    Corrupt { head: u64, tail: u64 },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full => f.write_str("ring full"),
            Self::Corrupt { head, tail } => write!(f, "ring positions corrupt: head {head}, tail {tail}"),
        }
    }
}

impl std::error::Error for RingError {}

/// `tail - head` is in `0..=capacity` (wrapping u64 arithmetic).
fn in_window(head: u64, tail: u64, capacity: u32) -> bool {
    tail.wrapping_sub(head) <= u64::from(capacity)
}

pub struct Producer<S, const N: usize> {
    ring: S,
    mask: u64,
    tail: u64,
    published: u64,
    cached_head: u64,
}

impl<S: RingStorage<N>, const N: usize> Producer<S, N> {
    /// Attaches to a ring whose positions are both at `start` (0 for a fresh segment).
    pub fn new(ring: S, start: u64) -> Self {
        debug_assert!(ring.capacity().is_power_of_two());
        let mask = u64::from(ring.capacity()) - 1;
        Self { ring, mask, tail: start, published: start, cached_head: start }
    }

    pub fn capacity(&self) -> u32 {
        self.ring.capacity()
    }

    /// Free entries, re-reading the consumer's `head` only when the cached copy says full.
    pub fn free(&mut self) -> Result<u32, RingError> {
        let cap = u64::from(self.ring.capacity());
        if self.tail - self.cached_head == cap {
            self.refresh_head()?;
        }
        Ok((cap - (self.tail - self.cached_head)) as u32)
    }

    fn refresh_head(&mut self) -> Result<(), RingError> {
        // [RELEASE] Acquire: pairs with the consumer's Release store of `head` in `release`.
        let head = self.ring.head().load(Ordering::Acquire);
        if !in_window(head, self.tail, self.ring.capacity()) {
            return Err(RingError::Corrupt { head, tail: self.tail });
        }
        self.cached_head = head;
        Ok(())
    }

    /// Writes one entry without publishing it. Call [`Self::publish`] after a batch.
    pub fn try_push(&mut self, entry: &[u8; N]) -> Result<(), RingError> {
        if self.free()? == 0 {
            return Err(RingError::Full);
        }
        let index = (self.tail & self.mask) as usize;
        // SAFETY: `index <= mask < capacity`; `free() > 0` means the entry at `tail` is outside
        // `[head, tail)`, so the consumer has released it and will not read it until published.
        unsafe { self.ring.write(index, entry) };
        self.tail += 1;
        debug_assert!(self.tail - self.cached_head <= u64::from(self.ring.capacity()));
        Ok(())
    }

    /// Entries written but not yet published.
    pub fn unpublished(&self) -> u64 {
        self.tail - self.published
    }

    /// Makes every written entry visible to the consumer. Returns whether anything was new.
    pub fn publish(&mut self) -> bool {
        if self.tail == self.published {
            return false;
        }
        // [PUBLISH] Release: pairs with the consumer's Acquire load of `tail` in `refresh_tail`.
        self.ring.tail().store(self.tail, Ordering::Release);
        self.published = self.tail;
        true
    }

    /// Publishes, then tells whether the consumer asked to be woken (SPEC §6 P1–P3). The
    /// caller rings the doorbell when this returns true.
    pub fn publish_and_check_wakeup(&mut self, need_wakeup: &AtomicU32) -> bool {
        if !self.publish() {
            return false;
        }
        // [WAKEUP] SeqCst fence between the tail store and the flag load; pairs with the
        // consumer's fence in `prepare_sleep`. Without it the load could pass the store.
        fence(Ordering::SeqCst);
        need_wakeup.load(Ordering::SeqCst) != 0
    }
}

pub struct Consumer<S, const N: usize> {
    ring: S,
    mask: u64,
    head: u64,
    released: u64,
    cached_tail: u64,
}

impl<S: RingStorage<N>, const N: usize> Consumer<S, N> {
    pub fn new(ring: S, start: u64) -> Self {
        debug_assert!(ring.capacity().is_power_of_two());
        let mask = u64::from(ring.capacity()) - 1;
        Self { ring, mask, head: start, released: start, cached_tail: start }
    }

    pub fn capacity(&self) -> u32 {
        self.ring.capacity()
    }

    fn check_tail(&self, tail: u64) -> Result<u64, RingError> {
        // Called only when `cached_tail == head`, so a decreasing tail leaves the window too.
        if in_window(self.head, tail, self.ring.capacity()) {
            Ok(tail)
        } else {
            Err(RingError::Corrupt { head: self.head, tail })
        }
    }

    fn refresh_tail(&mut self) -> Result<(), RingError> {
        // [PUBLISH] Acquire: pairs with the producer's Release store of `tail` in `publish`.
        let tail = self.ring.tail().load(Ordering::Acquire);
        self.cached_tail = self.check_tail(tail)?;
        Ok(())
    }

    /// Published entries not yet consumed, re-reading `tail` only when the cache says empty.
    pub fn available(&mut self) -> Result<u32, RingError> {
        if self.cached_tail == self.head {
            self.refresh_tail()?;
        }
        Ok((self.cached_tail - self.head) as u32)
    }

    /// Copies the next entry out of the ring, or `None` when empty. The entry stays reserved
    /// for us until [`Self::release`].
    pub fn try_pop(&mut self) -> Result<Option<[u8; N]>, RingError> {
        if self.available()? == 0 {
            return Ok(None);
        }
        let index = (self.head & self.mask) as usize;
        // SAFETY: `index < capacity`; the entry at `head` lies in `[head, tail)` acquired in
        // `refresh_tail`, and the producer will not rewrite it before `release` moves `head` on.
        let entry = unsafe { self.ring.read(index) };
        self.head += 1;
        Ok(Some(entry))
    }

    /// Hands consumed entries back to the producer.
    pub fn release(&mut self) {
        if self.head != self.released {
            // [RELEASE] Release: pairs with the producer's Acquire load of `head` in `refresh_head`.
            self.ring.head().store(self.head, Ordering::Release);
            self.released = self.head;
        }
    }

    /// SPEC §6 C1–C4. Releases consumed entries, sets `need_wakeup`, and re-checks the tail.
    /// Returns `Ok(true)` if the caller may now sleep on its doorbell, `Ok(false)` if entries
    /// arrived meanwhile (the flag is cleared again and the caller goes on consuming).
    pub fn prepare_sleep(&mut self, need_wakeup: &AtomicU32) -> Result<bool, RingError> {
        self.release();
        if self.cached_tail != self.head {
            return Ok(false);
        }
        need_wakeup.store(1, Ordering::SeqCst);
        // [WAKEUP] SeqCst fence between the flag store and the tail load; pairs with the
        // producer's fence in `publish_and_check_wakeup`.
        fence(Ordering::SeqCst);
        let tail = self.check_tail(self.ring.tail().load(Ordering::SeqCst))?;
        if tail != self.head {
            self.cached_tail = tail;
            need_wakeup.store(0, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    /// SPEC §6 C6: after waking (or timing out), stop asking for doorbells while we consume.
    pub fn woke(&mut self, need_wakeup: &AtomicU32) {
        need_wakeup.store(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shm::ShmRing;

    fn pair(cap: u32) -> (Producer<ShmRing<8>, 8>, Consumer<ShmRing<8>, 8>) {
        let ring = ShmRing::<8>::on_heap(cap);
        (Producer::new(ring.clone(), 0), Consumer::new(ring, 0))
    }

    #[test]
    fn fifo_full_empty_and_wrap() {
        let (mut p, mut c) = pair(4);
        for round in 0..10u64 {
            for i in 0..4 {
                p.try_push(&(round * 4 + i).to_le_bytes()).unwrap();
            }
            assert_eq!(p.try_push(&[0; 8]), Err(RingError::Full));
            assert_eq!(c.available().unwrap(), 0, "nothing visible before publish");
            assert!(p.publish());
            for i in 0..4 {
                assert_eq!(c.try_pop().unwrap(), Some((round * 4 + i).to_le_bytes()));
            }
            assert_eq!(c.try_pop().unwrap(), None);
            assert_eq!(p.try_push(&[0; 8]), Err(RingError::Full), "still full until released");
            c.release();
        }
    }

    #[test]
    fn corrupt_positions_are_detected() {
        let ring = ShmRing::<8>::on_heap(4);
        let mut c = Consumer::new(ring.clone(), 0);
        ring.tail().store(5, Ordering::Relaxed);
        assert_eq!(c.available(), Err(RingError::Corrupt { head: 0, tail: 5 }));
        ring.tail().store(u64::MAX, Ordering::Relaxed);
        assert!(matches!(c.try_pop(), Err(RingError::Corrupt { .. })));
        let mut p = Producer::new(ring.clone(), 0);
        for _ in 0..4 {
            p.try_push(&[1; 8]).unwrap();
        }
        ring.head().store(9, Ordering::Relaxed);
        assert_eq!(p.try_push(&[1; 8]), Err(RingError::Corrupt { head: 9, tail: 4 }));
    }

    #[test]
    fn wakeup_handshake_single_thread() {
        let (mut p, mut c) = pair(4);
        let flag = AtomicU32::new(0);
        assert!(c.prepare_sleep(&flag).unwrap());
        assert_eq!(flag.load(Ordering::Relaxed), 1);
        p.try_push(&[7; 8]).unwrap();
        assert!(p.publish_and_check_wakeup(&flag), "a sleeping consumer must be rung");
        c.woke(&flag);
        assert!(!c.prepare_sleep(&flag).unwrap(), "pending entry: must not sleep");
        assert_eq!(flag.load(Ordering::Relaxed), 0);
        assert_eq!(c.try_pop().unwrap(), Some([7; 8]));
        p.try_push(&[8; 8]).unwrap();
        assert!(!p.publish_and_check_wakeup(&flag), "an awake consumer is not rung");
        assert!(!p.publish_and_check_wakeup(&flag), "nothing new: no ring");
    }
}
