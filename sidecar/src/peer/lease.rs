//! Slot memory handed to the store layer (SPEC §7.2 "Consumed slots", OPEN_READ streams).
//!
//! [`SlotLease`] owns one IN_FLIGHT slot range on behalf of the store: uploads wrap it with
//! `Bytes::from_owner`, so object_store reads the agent's bytes where they are (no copy), and
//! read streams fill it in place (`AsMut<[u8]>`). Dropping the lease — whenever and on whatever
//! thread the last `Bytes` clone goes — hands the slot-table token back through `on_drop`
//! (the dispatcher's return channel and doorbell), and the dispatcher moves the slot to FREE.
//! A lease that should go back to the agent instead (a filled stream chunk) is disarmed with
//! [`SlotLease::into_lease`].
//!
//! Also here: copying a small argument (a key, a LIST request) out of a slot, and writing a
//! small document (LIST output, an error message) into one.

use std::ptr::NonNull;
use std::sync::Arc;

use shm_protocol::shm::Segment;
use shm_protocol::ErrorCode;

use crate::peer::slots::SlotRange;
use crate::peer::slots::Lease;

/// Called with the slot-table token when a lease is dropped (the slot goes FREE).
pub type SlotReturn = Arc<dyn Fn(Lease) + Send + Sync>;

/// Address of `range` in `segment`, checked against the segment's private layout.
fn range_ptr(segment: &Segment, range: SlotRange) -> Result<NonNull<u8>, ErrorCode> {
    let slot_size = u64::from(segment.layout().params.slot_size);
    if u64::from(range.offset) + u64::from(range.length) > slot_size {
        return Err(ErrorCode::Internal);
    }
    let base = segment.slot_ptr(range.id).ok_or(ErrorCode::Internal)?;
    // SAFETY: `offset + length <= slot_size` and slot `id` lies inside the mapping
    // (`Segment::slot_ptr` checked `id < slot_count` against the mapped layout).
    Ok(unsafe { base.add(range.offset as usize) })
}

/// A slot range leased to the store. See the module docs.
pub struct SlotLease {
    /// Keeps the mapping alive for as long as the lease (and every `Bytes` made from it) lives:
    /// `Segment` holds an `Arc` of the session's `SegmentMemory`, whose drop unmaps. A session
    /// that ends while the store still holds leases therefore stays mapped (and counted in
    /// `segments_live`) until the last one is dropped.
    _segment: Segment,
    ptr: NonNull<u8>,
    len: usize,
    lease: Option<Lease>,
    on_drop: SlotReturn,
}

// SAFETY: `ptr` points into the mapping `segment` keeps alive (`Segment` is Send + Sync); the
// lease has no thread affinity. The bytes are those of an IN_FLIGHT slot, which nothing else in
// this process touches while the lease exists (SPEC §9 ownership); see `as_ref` for the agent.
unsafe impl Send for SlotLease {}
// SAFETY: shared access only hands out `&[u8]` (see `as_ref`); mutation needs `&mut self`.
unsafe impl Sync for SlotLease {}

impl SlotLease {
    /// Leases the range `lease` covers. `lease` must be IN_FLIGHT in `segment`'s session.
    pub fn new(segment: Segment, lease: Lease, on_drop: SlotReturn) -> Result<Self, ErrorCode> {
        let range = SlotRange::from(&lease);
        let ptr = range_ptr(&segment, range)?;
        Ok(Self { _segment: segment, ptr, len: range.length as usize, lease: Some(lease), on_drop })
    }

    /// The slot-table token, disarming the return-on-drop: the caller finishes the slot itself.
    pub fn into_lease(mut self) -> Lease {
        self.lease.take().expect("a lease holds its token until dropped")
    }

    pub fn slot_id(&self) -> u32 {
        self.lease.as_ref().map_or(u32::MAX, Lease::id)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for SlotLease {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is inside the mapping (`range_ptr`), which `self.segment`
        // keeps mapped for the life of `self`, and so of the returned borrow. The slot is
        // IN_FLIGHT: by SPEC §9 the sidecar owns its bytes and nothing in this process writes
        // them while this lease exists (a read stream writes only through `as_mut`, which needs
        // `&mut self`). The agent, in another process, must not write them either; if a hostile
        // agent does, it races only with reads of plain bytes in shared memory: it can change
        // which bytes are stored (and so their checksum) — its own data — nothing else. `u8`
        // has no invalid values and nothing read here is used as a pointer, index or length.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast_const(), self.len) }
    }
}

impl AsMut<[u8]> for SlotLease {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`; `&mut self` makes this the only reference from this process.
        // The agent does not read a slot that is not granted to it; if it does, it sees bytes
        // being written, which harms no one but itself.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            (self.on_drop)(lease);
        }
    }
}

impl std::fmt::Debug for SlotLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotLease").field("slot", &self.slot_id()).field("len", &self.len).finish()
    }
}

/// Copies `range` of an IN_FLIGHT slot out of shared memory (one read; the copy is what gets
/// validated and used, so the agent cannot change it afterwards).
pub fn copy_out(segment: &Segment, range: SlotRange) -> Result<Vec<u8>, ErrorCode> {
    let ptr = range_ptr(segment, range)?;
    let mut out = vec![0u8; range.length as usize];
    // SAFETY: in bounds of the mapping `segment` keeps alive (`range_ptr`); `out` is private
    // memory of exactly `length` bytes, so the regions do not overlap. The slot is IN_FLIGHT
    // (the caller holds its lease); concurrent writes by a hostile agent only change the bytes
    // copied, which are validated after the copy.
    unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr().cast_const(), out.as_mut_ptr(), out.len()) };
    Ok(out)
}

/// Writes `doc` at the start of slot `id` (which must be IN_FLIGHT under the caller's lease);
/// `OutOfRange` if it does not fit the slot.
pub fn write_start(segment: &Segment, id: u32, doc: &[u8]) -> Result<(), ErrorCode> {
    let slot_size = segment.layout().params.slot_size;
    let Ok(length) = u32::try_from(doc.len()) else { return Err(ErrorCode::OutOfRange) };
    if length > slot_size {
        return Err(ErrorCode::OutOfRange);
    }
    let ptr = range_ptr(segment, SlotRange { id, offset: 0, length })?;
    // SAFETY: `doc.len() <= slot_size`, checked by `range_ptr`; the slot is IN_FLIGHT (owned by
    // the sidecar, SPEC §9) and `doc` is private memory, so the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(doc.as_ptr(), ptr.as_ptr(), doc.len()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::slots::SlotTable;
    use shm_protocol::entry::SlotRef;
    use shm_protocol::shm::{HeapRegion, Mapping};
    use shm_protocol::{Layout, Params};
    use std::sync::Mutex;

    fn segment() -> Segment {
        let layout = Layout::new(Params::new(8, 8, 2, 8192).unwrap()).unwrap();
        let map: Arc<dyn Mapping> = Arc::new(HeapRegion::new(layout.segment_size as usize));
        Segment::new(map, layout).unwrap()
    }

    #[test]
    fn bytes_view_the_slot_and_drop_returns_the_token() {
        let seg = segment();
        let mut table = SlotTable::new(2, 8192);
        while table.grant_with(|_| true) {}
        write_start(&seg, 1, b"..hello..").unwrap();
        let lease = table.acquire(&SlotRef { id: 1, generation: 1, offset: 2, length: 5 }).unwrap();
        let returned = Arc::new(Mutex::new(Vec::new()));
        let r = returned.clone();
        let on_drop: SlotReturn = Arc::new(move |l| r.lock().unwrap().push(l));
        let bytes = bytes::Bytes::from_owner(SlotLease::new(seg.clone(), lease, on_drop.clone()).unwrap());
        assert_eq!(&bytes[..], b"hello");
        let base = seg.slot_ptr(1).unwrap().as_ptr() as usize;
        assert_eq!(bytes.as_ptr() as usize, base + 2, "a view of the slot, not a copy");
        let half = bytes.slice(1..3);
        drop(bytes);
        assert!(returned.lock().unwrap().is_empty(), "a clone still holds the slot");
        drop(half);
        assert_eq!(returned.lock().unwrap().as_slice(), &[lease]);

        // Disarmed: the token comes back to the caller, nothing is returned on drop.
        let l2 = table.acquire(&SlotRef { id: 0, generation: 1, offset: 0, length: 8192 }).unwrap();
        let mut sl = SlotLease::new(seg.clone(), l2, on_drop).unwrap();
        sl.as_mut()[..3].copy_from_slice(b"abc");
        assert_eq!(sl.into_lease(), l2);
        assert_eq!(returned.lock().unwrap().len(), 1);
        assert_eq!(copy_out(&seg, SlotRange { id: 0, offset: 0, length: 3 }).unwrap(), b"abc");
    }

    #[test]
    fn out_of_slot_ranges_are_refused() {
        let seg = segment();
        assert_eq!(write_start(&seg, 0, &[0u8; 8193]), Err(ErrorCode::OutOfRange));
        assert_eq!(write_start(&seg, 2, b"x"), Err(ErrorCode::Internal));
        assert_eq!(copy_out(&seg, SlotRange { id: 0, offset: 8000, length: 193 }), Err(ErrorCode::Internal));
        assert_eq!(copy_out(&seg, SlotRange { id: 0, offset: 8000, length: 192 }).unwrap().len(), 192);
    }
}
