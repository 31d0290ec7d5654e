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

/// `new` lies in `[from, to]`, going forward from `from` with wrapping u64 arithmetic: a
/// position the peer publishes never moves backwards and never passes the bound our own side
/// sets (our `tail` for a head, our `head + capacity` for a tail). Everything here is checked
/// in release builds and on every load: the peer may be hostile (SPEC §4, §12), and its
/// numbers are used for nothing but this comparison until they pass it.
fn moves_forward_within(from: u64, new: u64, to: u64) -> bool {
    new.wrapping_sub(from) <= to.wrapping_sub(from)
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
        if self.tail.wrapping_sub(self.cached_head) == cap {
            self.refresh_head()?;
        }
        // `cached_head` only ever holds a head that passed `refresh_head`: within `[.., tail]`
        // and at most `capacity` behind it, so this cannot underflow.
        Ok((cap - self.tail.wrapping_sub(self.cached_head)) as u32)
    }

    fn refresh_head(&mut self) -> Result<(), RingError> {
        // [RELEASE] Acquire: pairs with the consumer's Release store of `head` in `release`.
        let head = self.ring.head().load(Ordering::Acquire);
        // The consumer's head only moves forward, and never past what we published... or
        // wrote: it may not be beyond our `tail`.
        if !moves_forward_within(self.cached_head, head, self.tail) || !in_window(head, self.tail, self.ring.capacity()) {
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
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Entries written but not yet published.
    pub fn unpublished(&self) -> u64 {
        self.tail.wrapping_sub(self.published)
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
        // The producer's tail only moves forward from what we saw last, and at most `capacity`
        // ahead of our head (it cannot have written entries we have not released).
        let limit = self.head.wrapping_add(u64::from(self.ring.capacity()));
        if moves_forward_within(self.cached_tail, tail, limit) && in_window(self.head, tail, self.ring.capacity()) {
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
        // `cached_tail` passed `check_tail`: at most `capacity` ahead of `head`.
        Ok(self.cached_tail.wrapping_sub(self.head) as u32)
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
        self.head = self.head.wrapping_add(1);
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

    /// What a hostile peer can do to the position it owns, each on a fresh ring: every one is
    /// `Corrupt` (a fatal session error), never a panic, an overflow or a wrong count — in
    /// debug builds (overflow checks on) as in release.
    #[test]
    fn heads_that_jump_backwards_or_beyond_are_corrupt() {
        // Producer: 6 entries written on a ring of 4 whose consumer released 2 (head 2): full.
        let setup = || {
            let ring = ShmRing::<8>::on_heap(4);
            let mut p = Producer::new(ring.clone(), 0);
            for _ in 0..4 {
                p.try_push(&[1; 8]).unwrap();
            }
            p.publish();
            ring.head().store(2, Ordering::Relaxed);
            p.try_push(&[2; 8]).unwrap(); // re-reads head 2
            p.try_push(&[2; 8]).unwrap();
            assert_eq!(p.free(), Ok(0));
            (ring, p)
        };
        for good in [2, 3, 6] {
            let (ring, mut p) = setup();
            ring.head().store(good, Ordering::Relaxed);
            assert_eq!(p.free(), Ok((good - 2) as u32), "head {good} refused");
        }
        // Backwards (1, 0, far back), past the tail (7, 2^40), and the values just below zero
        // whose wrapping distance to the tail is within capacity (they used to overflow
        // `tail - head` in debug builds).
        for bad in [1, 0, u64::MAX, u64::MAX - 1, 7, 1 << 40, 6u64.wrapping_sub(3).wrapping_sub(1 << 63)] {
            let (ring, mut p) = setup();
            ring.head().store(bad, Ordering::Relaxed);
            assert!(matches!(p.free(), Err(RingError::Corrupt { .. })), "head {bad} accepted");
            assert!(matches!(p.try_push(&[3; 8]), Err(RingError::Corrupt { .. })));
        }
        // A fresh producer (tail 3, head 0) whose consumer writes a head "before zero".
        let ring = ShmRing::<8>::on_heap(4);
        let mut p = Producer::new(ring.clone(), 0);
        for _ in 0..4 {
            p.try_push(&[1; 8]).unwrap();
        }
        ring.head().store(u64::MAX, Ordering::Relaxed); // tail - head = 5 (wrapping): beyond
        assert!(matches!(p.free(), Err(RingError::Corrupt { .. })));
    }

    #[test]
    fn tails_that_jump_backwards_or_beyond_capacity_are_corrupt() {
        for bad in [5u64, 9, u64::MAX, u64::MAX - 1, 1 << 63] {
            let ring = ShmRing::<8>::on_heap(4);
            let mut c = Consumer::new(ring.clone(), 0);
            ring.tail().store(bad, Ordering::Relaxed);
            assert!(matches!(c.available(), Err(RingError::Corrupt { .. })), "tail {bad} accepted");
        }
        // Forward, consumed, then backwards.
        let ring = ShmRing::<8>::on_heap(4);
        let mut c = Consumer::new(ring.clone(), 0);
        ring.tail().store(3, Ordering::Relaxed);
        for _ in 0..3 {
            assert!(c.try_pop().unwrap().is_some());
        }
        ring.tail().store(2, Ordering::Relaxed);
        assert!(matches!(c.try_pop(), Err(RingError::Corrupt { head: 3, tail: 2 })));
        let flag = AtomicU32::new(0);
        assert!(matches!(c.prepare_sleep(&flag), Err(RingError::Corrupt { .. })));
        // A ring that starts near the top of u64 wraps without a panic.
        let ring = ShmRing::<8>::on_heap(4);
        let start = u64::MAX - 1;
        let (mut p, mut c) = (Producer::new(ring.clone(), start), Consumer::new(ring.clone(), start));
        ring.tail().store(start, Ordering::Relaxed);
        ring.head().store(start, Ordering::Relaxed);
        for i in 0..10u64 {
            p.try_push(&i.to_le_bytes()).unwrap();
            p.publish();
            assert_eq!(c.try_pop().unwrap(), Some(i.to_le_bytes()));
            c.release();
        }
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
