//! Slot ranges leased to the store (SPEC §7.2 "Consumed slots", OPEN_READ streams).
//!
//! [`SlotLease`] owns one IN_FLIGHT slot range on behalf of the store and holds no pointer
//! into it: an upload's bytes are copied out once into private memory
//! ([`SlotLease::into_private`]) and the store uploads, and checksums, only that copy; a read
//! stream fills a private buffer and [`SlotLease::fill`]s the slot from it. Dropping the lease
//! — whenever and on whatever thread the last owner goes — hands the slot-table token back
//! through `on_drop` (the dispatcher's return channel and doorbell), and the dispatcher moves
//! the slot to FREE. A lease that should go back to the agent instead (a filled stream chunk)
//! is disarmed with [`SlotLease::into_lease`].
//!
//! A consumed slot stays IN_FLIGHT until the store drops the private copy made of it: the
//! slot pool stays the budget of what uploads hold in memory, as it was when the store read
//! the slot in place.
//!
//! Also here: copying a small argument (a key, a LIST request) out of a slot, and writing a
//! small document (LIST output, an error message) into one.

use std::sync::Arc;

use bytes::Bytes;
use shm_protocol::shm::Segment;
use shm_protocol::ErrorCode;

use crate::peer::memory;
use crate::peer::private::{PrivateBuf, PrivatePool};
use crate::peer::slots::{Lease, SlotRange};

/// Called with the slot-table token when a lease is dropped (the slot goes FREE).
pub type SlotReturn = Arc<dyn Fn(Lease) + Send + Sync>;

/// A slot range leased to the store. See the module docs.
pub struct SlotLease {
    /// Keeps the mapping alive for as long as the lease lives: `Segment` holds an `Arc` of
    /// the session's `SegmentMemory`, whose drop unmaps. A session that ends while the store
    /// still holds leases therefore stays mapped (and counted in `segments_live`) until the
    /// last one is dropped.
    segment: Segment,
    range: SlotRange,
    lease: Option<Lease>,
    on_drop: SlotReturn,
}

impl SlotLease {
    /// Leases the range `lease` covers. `lease` must be IN_FLIGHT in `segment`'s session. A
    /// range outside the segment (a bug: leases are checked when made) gives the lease back
    /// with `Internal`, so the caller can still finish it.
    pub fn new(segment: Segment, lease: Lease, on_drop: SlotReturn) -> Result<Self, (ErrorCode, Lease)> {
        let range = SlotRange::from(&lease);
        // Checked once here, so later copies cannot fail on the range.
        if segment.slot_ptr(range.id).is_none() || u64::from(range.offset) + u64::from(range.length) > u64::from(segment.layout().params.slot_size) {
            return Err((ErrorCode::Internal, lease));
        }
        Ok(Self { segment, range, lease: Some(lease), on_drop })
    }

    /// The slot-table token, disarming the return-on-drop: the caller finishes the slot itself.
    pub fn into_lease(mut self) -> Lease {
        self.lease.take().expect("a lease holds its token until dropped")
    }

    pub fn slot_id(&self) -> u32 {
        self.range.id
    }

    pub fn len(&self) -> usize {
        self.range.length as usize
    }

    pub fn is_empty(&self) -> bool {
        self.range.length == 0
    }

    /// Writes `src` at the start of the leased range (a stream chunk). `OutOfRange` if it does
    /// not fit.
    pub fn fill(&mut self, src: &[u8]) -> Result<(), ErrorCode> {
        let length = u32::try_from(src.len()).map_err(|_| ErrorCode::OutOfRange)?;
        if length > self.range.length {
            return Err(ErrorCode::OutOfRange);
        }
        memory::write(&self.segment, SlotRange { length, ..self.range }, src)
    }

    /// Copies the leased bytes once into private pooled memory and returns that copy; the
    /// store uploads and checksums it, never the slot. The slot stays leased (IN_FLIGHT)
    /// until the returned `Bytes` and every slice of it are dropped.
    pub async fn into_private(self, pool: &Arc<PrivatePool>) -> Result<Bytes, ErrorCode> {
        let copy = memory::copy_to_private(&self.segment, self.range, pool).await?;
        Ok(Bytes::from_owner(HeldCopy { copy, _slot: self }))
    }
}

/// A private copy that keeps its slot leased until it is dropped.
struct HeldCopy {
    copy: PrivateBuf,
    _slot: SlotLease,
}

impl AsRef<[u8]> for HeldCopy {
    fn as_ref(&self) -> &[u8] {
        self.copy.as_ref()
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
        f.debug_struct("SlotLease").field("slot", &self.range.id).field("len", &self.range.length).finish()
    }
}

/// Copies `range` of an IN_FLIGHT slot out of shared memory (one read; the copy is what gets
/// validated and used, so the agent cannot change it afterwards).
pub fn copy_out(segment: &Segment, range: SlotRange) -> Result<Vec<u8>, ErrorCode> {
    memory::read_vec(segment, range)
}

/// Writes `doc` at the start of slot `id` (which must be IN_FLIGHT under the caller's lease);
/// `OutOfRange` if it does not fit the slot.
pub fn write_start(segment: &Segment, id: u32, doc: &[u8]) -> Result<(), ErrorCode> {
    let slot_size = segment.layout().params.slot_size;
    let Ok(length) = u32::try_from(doc.len()) else { return Err(ErrorCode::OutOfRange) };
    if length > slot_size {
        return Err(ErrorCode::OutOfRange);
    }
    memory::write(segment, SlotRange { id, offset: 0, length }, doc)
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

    #[tokio::test]
    async fn uploads_get_a_private_copy_that_holds_the_slot_until_dropped() {
        let seg = segment();
        let pool = PrivatePool::new(1 << 20);
        let mut table = SlotTable::new(2, 8192);
        while table.grant_with(|_| true) {}
        write_start(&seg, 1, b"..hello..").unwrap();
        let lease = table.acquire(&SlotRef { id: 1, generation: 1, offset: 2, length: 5 }).unwrap();
        let returned = Arc::new(Mutex::new(Vec::new()));
        let r = returned.clone();
        let on_drop: SlotReturn = Arc::new(move |l: Lease| r.lock().unwrap().push((l.id(), l.generation())));
        let bytes = SlotLease::new(seg.clone(), lease, on_drop.clone()).unwrap().into_private(&pool).await.unwrap();
        assert_eq!(&bytes[..], b"hello");
        let base = seg.slot_ptr(1).unwrap().as_ptr() as usize;
        assert!(!(base..base + 8192).contains(&(bytes.as_ptr() as usize)), "a private copy, not a view of the slot");
        // What the agent writes afterwards does not reach the copy.
        write_start(&seg, 1, b"..HELLO..").unwrap();
        assert_eq!(&bytes[..], b"hello");
        let half = bytes.slice(1..3);
        drop(bytes);
        assert!(returned.lock().unwrap().is_empty(), "a slice of the copy still holds the slot");
        drop(half);
        assert_eq!(returned.lock().unwrap().as_slice(), &[(1, 1)]);

        // A stream buffer: filled from private memory, then disarmed; the token comes back to
        // the caller and nothing is returned on drop.
        let l2 = table.acquire(&SlotRef { id: 0, generation: 1, offset: 0, length: 8192 }).unwrap();
        let mut sl = SlotLease::new(seg.clone(), l2, on_drop).unwrap();
        sl.fill(b"abc").unwrap();
        assert_eq!(sl.fill(&[0; 8193]), Err(ErrorCode::OutOfRange));
        assert_eq!(sl.into_lease().id(), 0);
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
