//! Views of a mapped segment: [`Segment`] (header fields, rings, slot addresses) and
//! [`ShmRing`], the [`RingStorage`] over a ring region. Who maps the memory is the caller's
//! business (the sidecar maps a sealed memfd, tests use [`HeapRegion`]); it is handed in as a
//! [`Mapping`] and kept alive by every view made from it.

use core::ptr::NonNull;
use std::sync::Arc;

use crate::layout::{header, ring, Layout, LayoutError, SessionState, ENTRY_SIZE, GRANT_ENTRY_SIZE, HEADER_SIZE, PAGE_SIZE};
use crate::ring::{Consumer, Producer, RingStorage};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// A mapped region of memory.
///
/// # Safety
/// `base()` is page-aligned and `len()` bytes from it stay mapped read/write, at the same
/// address, for as long as the value lives.
#[allow(clippy::len_without_is_empty)]
pub unsafe trait Mapping: Send + Sync + 'static {
    fn base(&self) -> NonNull<u8>;
    fn len(&self) -> usize;
}

/// Page-aligned zeroed heap memory standing in for a segment (tests, benches, tools).
pub struct HeapRegion {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

impl HeapRegion {
    pub fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(PAGE_SIZE), PAGE_SIZE).expect("region size overflows");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, layout }
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: the allocation is owned and only reached through atomics or the ring/slot protocol.
unsafe impl Send for HeapRegion {}
// SAFETY: as above.
unsafe impl Sync for HeapRegion {}

// SAFETY: page-aligned by construction, and freed only on drop.
unsafe impl Mapping for HeapRegion {
    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

/// One ring region inside a mapping.
#[derive(Clone)]
pub struct ShmRing<const N: usize> {
    _map: Arc<dyn Mapping>,
    region: NonNull<u8>,
    capacity: u32,
}

// SAFETY: the pointers reach memory kept alive by `_map`; all shared access is atomic or
// governed by the SPSC protocol, and each half (Producer/Consumer) is owned by one thread.
unsafe impl<const N: usize> Send for ShmRing<N> {}

impl<const N: usize> ShmRing<N> {
    /// A ring at `offset` in `map`. Checks alignment and bounds.
    pub fn new(map: Arc<dyn Mapping>, offset: usize, capacity: u32) -> Result<Self, LayoutError> {
        let size = crate::layout::ring_region_size(capacity, N) as usize;
        if !capacity.is_power_of_two() || offset % PAGE_SIZE != 0 || offset.checked_add(size).map_or(true, |end| end > map.len()) {
            return Err(LayoutError::TooLarge);
        }
        // SAFETY: `offset + size <= len`, so the result stays inside the mapping.
        let region = unsafe { map.base().add(offset) };
        Ok(Self { _map: map, region, capacity })
    }

    /// A standalone ring on the heap (tests and benches).
    pub fn on_heap(capacity: u32) -> Self {
        let size = crate::layout::ring_region_size(capacity, N) as usize;
        Self::new(Arc::new(HeapRegion::new(size)), 0, capacity).expect("valid heap ring")
    }

    fn entry_ptr(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.capacity as usize);
        // SAFETY: index < capacity, so the entry lies inside the region checked in `new`.
        unsafe { self.region.as_ptr().add(ring::ENTRIES + index * N) }
    }
}

// SAFETY: tail/head are fixed offsets in a region kept alive by `_map`; entries are bounded
// by `capacity`, which never changes.
unsafe impl<const N: usize> RingStorage<N> for ShmRing<N> {
    fn tail(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of a page-aligned region: 8-aligned, in bounds, only ever accessed
        // atomically by either process.
        unsafe { &*self.region.as_ptr().add(ring::TAIL).cast::<AtomicU64>() }
    }
    fn head(&self) -> &AtomicU64 {
        // SAFETY: offset 128 of a page-aligned region: as for `tail`.
        unsafe { &*self.region.as_ptr().add(ring::HEAD).cast::<AtomicU64>() }
    }
    fn capacity(&self) -> u32 {
        self.capacity
    }
    unsafe fn write(&self, index: usize, entry: &[u8; N]) {
        // SAFETY: the caller guarantees exclusive ownership of this in-bounds entry.
        unsafe { core::ptr::copy_nonoverlapping(entry.as_ptr(), self.entry_ptr(index), N) }
    }
    unsafe fn read(&self, index: usize) -> [u8; N] {
        // Volatile so the compiler reads shared memory exactly once into our private copy
        // (SPEC §9: no double fetch); all later checks use the copy. Wide loads keep it as
        // cheap as a memcpy (word-sized volatile loads measured 2x slower in benches/ring.rs).
        const { assert!(N % 16 == 0 || N == 8, "entries are 8 bytes or whole 16-byte lanes") };
        let src = self.entry_ptr(index);
        let mut out = [0u8; N];
        if N == 8 {
            // SAFETY: in bounds; entries start 8-aligned (region page-aligned, offsets multiples of 8).
            let word = unsafe { src.cast::<u64>().read_volatile() };
            out.copy_from_slice(&word.to_ne_bytes()[..N]);
            return out;
        }
        for (i, lane) in out.chunks_exact_mut(16).enumerate() {
            // SAFETY: in bounds (i < N/16); 16-aligned because N is a multiple of 16 and
            // entries start at a 256-byte offset in a page-aligned region.
            let v = unsafe { read_lane_volatile(src.add(i * 16)) };
            lane.copy_from_slice(&v);
        }
        out
    }
}

/// One volatile 16-byte load (a single SSE2 `movdqa` on x86_64).
///
/// # Safety
/// `src` is valid for 16 bytes and 16-aligned.
#[inline(always)]
unsafe fn read_lane_volatile(src: *const u8) -> [u8; 16] {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::__m128i;
        // SAFETY: the caller guarantees 16 valid, 16-aligned bytes; SSE2 is in the x86_64 baseline.
        let v = unsafe { src.cast::<__m128i>().read_volatile() };
        // SAFETY: __m128i and [u8; 16] have the same size and no invalid bit patterns.
        unsafe { core::mem::transmute::<__m128i, [u8; 16]>(v) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as above.
        unsafe { src.cast::<u128>().read_volatile() }.to_ne_bytes()
    }
}

pub type SqProducer = Producer<ShmRing<ENTRY_SIZE>, ENTRY_SIZE>;
pub type SqConsumer = Consumer<ShmRing<ENTRY_SIZE>, ENTRY_SIZE>;
pub type CqProducer = Producer<ShmRing<ENTRY_SIZE>, ENTRY_SIZE>;
pub type CqConsumer = Consumer<ShmRing<ENTRY_SIZE>, ENTRY_SIZE>;
pub type GqProducer = Producer<ShmRing<GRANT_ENTRY_SIZE>, GRANT_ENTRY_SIZE>;
pub type GqConsumer = Consumer<ShmRing<GRANT_ENTRY_SIZE>, GRANT_ENTRY_SIZE>;

/// A whole segment laid out per [`Layout`]. Cheap to clone; keeps the mapping alive.
#[derive(Clone)]
pub struct Segment {
    map: Arc<dyn Mapping>,
    layout: Layout,
}

impl Segment {
    /// Checks that `map` is large enough for `layout`.
    pub fn new(map: Arc<dyn Mapping>, layout: Layout) -> Result<Self, LayoutError> {
        if (map.len() as u64) < layout.segment_size {
            return Err(LayoutError::TooLarge);
        }
        Ok(Self { map, layout })
    }

    /// Sidecar side: writes the static header into a fresh (zeroed) segment, with `state`
    /// INIT. Must run before the agent maps the segment; publish with [`Self::set_state`].
    pub fn write_header(&self, generation: u64) {
        let mut hdr = [0u8; header::STATIC_END];
        self.layout.encode_header(generation, &mut hdr);
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked by Layout), and no other
        // process has it mapped yet, so nothing reads these bytes concurrently.
        unsafe { core::ptr::copy_nonoverlapping(hdr.as_ptr(), self.map.base().as_ptr(), hdr.len()) }
    }

    /// Agent side (and tests): parses the header of a mapped segment. Read the `state` with
    /// Acquire first ([`Self::read_state`] on a provisional segment) so the fields are visible.
    pub fn read_header(map: &Arc<dyn Mapping>) -> Result<(Layout, u64), LayoutError> {
        if map.len() < HEADER_SIZE {
            return Err(LayoutError::HeaderMismatch("segment_size"));
        }
        let mut hdr = [0u8; header::STATIC_END];
        // SAFETY: in bounds (checked above); a copy, so later changes cannot race our checks.
        unsafe { core::ptr::copy_nonoverlapping(map.base().as_ptr(), hdr.as_mut_ptr(), hdr.len()) };
        let mut full = [0u8; HEADER_SIZE];
        full[..hdr.len()].copy_from_slice(&hdr);
        Layout::decode_header(&full)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset % 4 == 0 && offset < HEADER_SIZE);
        // SAFETY: a header offset < HEADER_SIZE <= len, 4-aligned; these words are only
        // accessed atomically by either side.
        unsafe { &*self.map.base().as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset < HEADER_SIZE);
        // SAFETY: as for `u32_at`, 8-aligned.
        unsafe { &*self.map.base().as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Publishes the session state. [STATE] Release: pairs with `read_state`'s Acquire, so an
    /// agent that sees READY sees the whole header and zeroed rings.
    pub fn set_state(&self, state: SessionState) {
        self.u32_at(header::STATE).store(state as u32, Ordering::Release);
    }

    /// [STATE] Acquire: pairs with `set_state`'s Release.
    pub fn read_state(&self) -> Option<SessionState> {
        SessionState::from_u32(self.u32_at(header::STATE).load(Ordering::Acquire))
    }

    /// Bumped Relaxed by the sidecar; readers only compare values.
    pub fn heartbeat(&self) -> &AtomicU64 {
        self.u64_at(header::SIDECAR_HEARTBEAT)
    }

    pub fn sidecar_need_wakeup(&self) -> &AtomicU32 {
        self.u32_at(header::SIDECAR_NEED_WAKEUP)
    }

    pub fn agent_need_wakeup(&self) -> &AtomicU32 {
        self.u32_at(header::AGENT_NEED_WAKEUP)
    }

    fn ring<const N: usize>(&self, offset: u64, capacity: u32) -> ShmRing<N> {
        ShmRing::new(self.map.clone(), offset as usize, capacity).expect("layout was validated against the mapping")
    }

    pub fn sq(&self) -> ShmRing<ENTRY_SIZE> {
        self.ring(self.layout.sq_offset, self.layout.params.sq_capacity)
    }

    pub fn cq(&self) -> ShmRing<ENTRY_SIZE> {
        self.ring(self.layout.cq_offset, self.layout.params.cq_capacity)
    }

    pub fn gq(&self) -> ShmRing<GRANT_ENTRY_SIZE> {
        self.ring(self.layout.gq_offset, self.layout.gq_capacity)
    }

    /// Address of slot `id`'s first byte, or `None` if `id >= slot_count`. The slot spans
    /// `slot_size` bytes. Touching its bytes is governed by slot ownership (SPEC §9).
    pub fn slot_ptr(&self, id: u32) -> Option<NonNull<u8>> {
        let off = self.layout.slot_offset_of(id)?;
        // SAFETY: `Segment::new` checked `segment_size <= len`, and a valid slot lies inside.
        Some(unsafe { self.map.base().add(off as usize) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Params;

    #[test]
    fn segment_views_agree_with_the_layout() {
        let layout = Layout::new(Params::new(8, 16, 3, 4096).unwrap()).unwrap();
        let map: Arc<dyn Mapping> = Arc::new(HeapRegion::new(layout.segment_size as usize));
        let seg = Segment::new(map.clone(), layout).unwrap();
        seg.write_header(42);
        assert_eq!(seg.read_state(), Some(SessionState::Init));
        seg.set_state(SessionState::Ready);
        assert_eq!(Segment::read_header(&map).unwrap(), (layout, 42));
        let base = map.base().as_ptr() as usize;
        assert_eq!(seg.slot_ptr(2).unwrap().as_ptr() as usize - base, layout.slot_offset as usize + 2 * 4096);
        assert!(seg.slot_ptr(3).is_none());
        assert_eq!(seg.sq().tail() as *const _ as usize - base, layout.sq_offset as usize);
        assert_eq!(seg.cq().head() as *const _ as usize - base, layout.cq_offset as usize + 128);
        assert_eq!(seg.agent_need_wakeup() as *const _ as usize - base, header::AGENT_NEED_WAKEUP);
        let too_small: Arc<dyn Mapping> = Arc::new(HeapRegion::new(4096));
        assert!(Segment::new(too_small, layout).is_err());
    }
}
