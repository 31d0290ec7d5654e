//! The slot table a session keeps in the sidecar's private memory: the authority on slot
//! ownership (SPEC §9: FREE / GRANTED / IN_FLIGHT with generations), and the [`Lease`] /
//! [`SlotRange`] tokens that name the slot memory the sidecar may touch. Pure logic, no I/O:
//! the dispatcher's `Session` owns one table and drives it.
//!
//! Every refusal returns the specific wire error and leaves the table exactly as it was.

use shm_protocol::entry::SlotRef;
use shm_protocol::{ErrorCode, Grant};

use crate::stats::SessionFigures;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Owned by the sidecar, not yet (re)granted.
    Free,
    /// In the GQ or held by the agent.
    Granted,
    /// Named by an accepted request; the sidecar may touch its bytes.
    InFlight,
}

#[derive(Clone, Copy, Debug)]
struct SlotEntry {
    state: SlotState,
    /// Current generation; 0 = never granted. Bumped at every grant.
    generation: u32,
}

/// A slot range that passed every ownership and range check, for a slot now IN_FLIGHT. Only
/// [`SlotTable::acquire`] makes one, so holding one proves `id < slot_count` and
/// `offset + length <= slot_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    id: u32,
    generation: u32,
    offset: u32,
    length: u32,
}

impl Lease {
    pub fn id(&self) -> u32 {
        self.id
    }
    pub fn generation(&self) -> u32 {
        self.generation
    }
    pub fn offset(&self) -> u32 {
        self.offset
    }
    pub fn length(&self) -> u32 {
        self.length
    }
}

/// A slot byte range by value: what an async task needs of a [`Lease`] (which itself stays
/// with the dispatcher's bookkeeping).
#[derive(Clone, Copy, Debug)]
pub struct SlotRange {
    pub id: u32,
    pub offset: u32,
    pub length: u32,
}

impl From<&Lease> for SlotRange {
    fn from(l: &Lease) -> Self {
        Self { id: l.id(), offset: l.offset(), length: l.length() }
    }
}

/// What finishing an in-flight request did with its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotOutcome {
    /// Back to the agent: the completion carries `SLOT` with this id and generation.
    ToAgent { id: u32, generation: u32 },
    /// Into the free pool (`RELEASE_SLOT`): the completion carries no slot.
    ToPool,
}

pub struct SlotTable {
    slots: Vec<SlotEntry>,
    /// Per slot: the read stream (reader handle) whose chunk it holds while granted to the
    /// agent, or 0. Cleared when the agent gives the slot up (see `untag`).
    stream_tags: Vec<u64>,
    /// Tags cleared since the dispatcher last looked: each one is a stream chunk given back.
    freed_tags: Vec<u64>,
    /// FREE slot ids; a stack, so the most recently returned (cache-warm) slot goes out first.
    free: Vec<u32>,
    slot_size: u32,
    granted: u32,
    in_flight: u32,
    grants_total: u64,
    returns_total: u64,
}

impl SlotTable {
    pub fn new(slot_count: u32, slot_size: u32) -> Self {
        Self {
            slots: vec![SlotEntry { state: SlotState::Free, generation: 0 }; slot_count as usize],
            stream_tags: vec![0; slot_count as usize],
            freed_tags: Vec::new(),
            free: (0..slot_count).rev().collect(),
            slot_size,
            granted: 0,
            in_flight: 0,
            grants_total: 0,
            returns_total: 0,
        }
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    pub fn state(&self, id: u32) -> Option<(SlotState, u32)> {
        self.slots.get(id as usize).map(|s| (s.state, s.generation))
    }

    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    pub fn free_count(&self) -> u32 {
        self.free.len() as u32
    }

    /// FREE→IN_FLIGHT for a read stream (SPEC §9): the next free slot, whole, with a new
    /// generation. Counted in `grants_total` like a grant (it left the pool).
    pub fn take_free(&mut self) -> Option<Lease> {
        let id = self.free.pop()?;
        let entry = &mut self.slots[id as usize];
        let generation = match entry.generation.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        entry.generation = generation;
        entry.state = SlotState::InFlight;
        self.in_flight += 1;
        self.grants_total += 1;
        Some(Lease { id, generation, offset: 0, length: self.slot_size })
    }

    /// The whole slot of an IN_FLIGHT lease (for a slot the sidecar fills itself).
    pub fn whole(&self, lease: Lease) -> Lease {
        debug_assert_eq!(self.slots[lease.id as usize].state, SlotState::InFlight);
        Lease { offset: 0, length: self.slot_size, ..lease }
    }

    /// Marks a slot granted to the agent as holding a chunk of read stream `tag` (≠ 0).
    pub fn tag(&mut self, id: u32, tag: u64) {
        self.stream_tags[id as usize] = tag;
    }

    /// The agent gave slot `id` up (released or consumed it): a tagged chunk is recorded as
    /// returned to its stream.
    pub fn untag(&mut self, id: u32) {
        let t = std::mem::take(&mut self.stream_tags[id as usize]);
        if t != 0 {
            self.freed_tags.push(t);
        }
    }

    /// Streams whose chunks were given back since the last call, one entry per chunk.
    pub fn take_freed_tags(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.freed_tags)
    }

    /// FREE→GRANTED for the next free slot, if `push` accepts the grant (generation += 1).
    /// Returns whether a slot was granted; on refusal nothing changes.
    pub fn grant_with(&mut self, push: impl FnOnce(Grant) -> bool) -> bool {
        let Some(&id) = self.free.last() else { return false };
        let entry = &mut self.slots[id as usize];
        // 0 means "never granted", so a wrapped generation skips it.
        let generation = match entry.generation.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        if !push(Grant { slot_id: id, slot_gen: generation }) {
            return false;
        }
        self.free.pop();
        entry.generation = generation;
        entry.state = SlotState::Granted;
        self.granted += 1;
        self.grants_total += 1;
        true
    }

    /// Checks that the agent holds `r` (GRANTED, current generation) and that its range fits.
    /// Order: id range, state, generation, byte range.
    fn check(&self, r: &SlotRef) -> Result<(), ErrorCode> {
        let entry = self.slots.get(r.id as usize).ok_or(ErrorCode::InvalidSlot)?;
        if entry.state != SlotState::Granted {
            return Err(ErrorCode::InvalidSlot);
        }
        if entry.generation != r.generation {
            return Err(ErrorCode::StaleSlot);
        }
        if r.end() > u64::from(self.slot_size) {
            return Err(ErrorCode::OutOfRange);
        }
        Ok(())
    }

    /// GRANTED→IN_FLIGHT for an accepted request.
    pub fn acquire(&mut self, r: &SlotRef) -> Result<Lease, ErrorCode> {
        self.check(r)?;
        self.slots[r.id as usize].state = SlotState::InFlight;
        self.granted -= 1;
        self.in_flight += 1;
        Ok(Lease { id: r.id, generation: r.generation, offset: r.offset, length: r.length })
    }

    /// IN_FLIGHT→GRANTED (back to the agent) or IN_FLIGHT→FREE (`release`), at the request's
    /// last completion. Consumes the lease, so a slot cannot be finished twice.
    pub fn finish(&mut self, lease: Lease, release: bool) -> SlotOutcome {
        let entry = &mut self.slots[lease.id as usize];
        debug_assert_eq!(entry.state, SlotState::InFlight);
        debug_assert_eq!(entry.generation, lease.generation);
        self.in_flight -= 1;
        if release {
            entry.state = SlotState::Free;
            self.free.push(lease.id);
            self.returns_total += 1;
            self.untag(lease.id);
            SlotOutcome::ToPool
        } else {
            entry.state = SlotState::Granted;
            self.granted += 1;
            SlotOutcome::ToAgent { id: lease.id, generation: lease.generation }
        }
    }

    /// GRANTED→FREE for SLOT_RELEASE.
    pub fn release_granted(&mut self, r: &SlotRef) -> Result<(), ErrorCode> {
        self.check(r)?;
        self.slots[r.id as usize].state = SlotState::Free;
        self.free.push(r.id);
        self.granted -= 1;
        self.returns_total += 1;
        self.untag(r.id);
        Ok(())
    }

    /// Slots not FREE: what a session's end takes back from the agent.
    pub fn outstanding(&self) -> u32 {
        self.granted + self.in_flight
    }

    pub fn figures(&self, id: u64, in_flight_async: u64) -> SessionFigures {
        SessionFigures {
            id,
            slot_count: self.slot_count(),
            slots_free: self.free.len() as u32,
            slots_granted: self.granted,
            slots_in_flight: self.in_flight,
            grants_total: self.grants_total,
            returns_total: self.returns_total,
            in_flight_async,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted_table() -> SlotTable {
        let mut t = SlotTable::new(4, 8192);
        while t.grant_with(|_| true) {}
        t
    }

    fn r(id: u32, generation: u32, offset: u32, length: u32) -> SlotRef {
        SlotRef { id, generation, offset, length }
    }

    /// Everything observable about a table, to compare before/after a refused call.
    type Observed = (Vec<(SlotState, u32)>, Vec<u32>, u32, u32, u64, u64);

    fn snapshot(t: &SlotTable) -> Observed {
        (
            (0..t.slot_count()).map(|i| t.state(i).unwrap()).collect(),
            t.free.clone(),
            t.granted,
            t.in_flight,
            t.grants_total,
            t.returns_total,
        )
    }

    #[test]
    fn grants_go_out_in_order_with_generation_one() {
        let mut t = SlotTable::new(3, 4096);
        let mut got = Vec::new();
        while t.grant_with(|g| {
            got.push(g);
            true
        }) {}
        assert_eq!(got, (0..3).map(|i| Grant { slot_id: i, slot_gen: 1 }).collect::<Vec<_>>());
        assert_eq!(t.figures(1, 0).slots_granted, 3);
        assert!(!t.grant_with(|_| panic!("no free slot")));
    }

    #[test]
    fn refused_push_changes_nothing() {
        let mut t = SlotTable::new(2, 4096);
        let before = snapshot(&t);
        assert!(!t.grant_with(|_| false));
        assert_eq!(snapshot(&t), before);
    }

    #[test]
    fn every_invalid_case_has_its_code_and_changes_nothing() {
        let mut t = granted_table();
        let lease = t.acquire(&r(1, 1, 0, 10)).unwrap(); // slot 1 in flight
        t.release_granted(&r(2, 1, 0, 0)).unwrap(); // slot 2 free
        let cases = [
            (r(4, 1, 0, 0), ErrorCode::InvalidSlot),                    // id >= slot_count
            (r(u32::MAX - 1, 1, 0, 0), ErrorCode::InvalidSlot),         // far out of range
            (r(1, 1, 0, 0), ErrorCode::InvalidSlot),                    // in flight
            (r(2, 1, 0, 0), ErrorCode::InvalidSlot),                    // free
            (r(0, 2, 0, 0), ErrorCode::StaleSlot),                      // wrong generation
            (r(0, 0, 0, 0), ErrorCode::StaleSlot),                      // generation 0
            (r(0, 1, 8192, 1), ErrorCode::OutOfRange),                  // end past slot
            (r(0, 1, 1, 8192), ErrorCode::OutOfRange),
            (r(0, 1, u32::MAX, u32::MAX), ErrorCode::OutOfRange),       // would overflow u32
        ];
        for (slot, code) in cases {
            let before = snapshot(&t);
            assert_eq!(t.acquire(&slot), Err(code), "acquire {slot:?}");
            assert_eq!(snapshot(&t), before, "acquire {slot:?} changed state");
            assert_eq!(t.release_granted(&slot), Err(code), "release {slot:?}");
            assert_eq!(snapshot(&t), before, "release {slot:?} changed state");
        }
        // The boundary itself is fine.
        let edge = t.acquire(&r(0, 1, 8192, 0)).unwrap();
        assert_eq!(t.finish(edge, false), SlotOutcome::ToAgent { id: 0, generation: 1 });
        assert_eq!(t.finish(lease, false), SlotOutcome::ToAgent { id: 1, generation: 1 });
    }

    #[test]
    fn transitions_and_the_stats_invariant() {
        let mut t = granted_table();
        let invariant = |t: &SlotTable| {
            let f = t.figures(1, 0);
            assert_eq!(f.grants_total - f.returns_total, u64::from(f.slots_granted + f.slots_in_flight));
            assert_eq!(f.slots_free + f.slots_granted + f.slots_in_flight, f.slot_count);
        };
        invariant(&t);
        let a = t.acquire(&r(0, 1, 0, 100)).unwrap();
        assert_eq!(t.state(0), Some((SlotState::InFlight, 1)));
        invariant(&t);
        assert_eq!(t.finish(a, true), SlotOutcome::ToPool);
        assert_eq!(t.state(0), Some((SlotState::Free, 1)));
        invariant(&t);
        // Regrant bumps the generation; the old one is now stale.
        assert!(t.grant_with(|g| g == Grant { slot_id: 0, slot_gen: 2 }));
        assert_eq!(t.acquire(&r(0, 1, 0, 0)), Err(ErrorCode::StaleSlot));
        t.release_granted(&r(0, 2, 0, 0)).unwrap();
        invariant(&t);
        assert_eq!(t.outstanding(), 3);
        assert_eq!(t.figures(1, 0).returns_total, 2);
    }

    #[test]
    fn streams_take_free_slots_and_tags_come_back_once() {
        let mut t = SlotTable::new(3, 4096);
        assert!(t.grant_with(|_| true));
        let l = t.take_free().unwrap();
        assert_eq!((l.id(), l.generation(), l.offset(), l.length()), (1, 1, 0, 4096));
        assert_eq!(t.state(1), Some((SlotState::InFlight, 1)));
        let f = t.figures(1, 0);
        assert_eq!(f.grants_total - f.returns_total, u64::from(f.slots_granted + f.slots_in_flight));
        // Delivered to the agent as a chunk of stream 7, then released: the tag comes back.
        assert_eq!(t.finish(l, false), SlotOutcome::ToAgent { id: 1, generation: 1 });
        t.tag(1, 7);
        t.release_granted(&r(1, 1, 0, 0)).unwrap();
        assert_eq!(t.take_freed_tags(), vec![7]);
        assert!(t.take_freed_tags().is_empty());
        // Untagged slots and a second untag report nothing.
        t.untag(0);
        t.untag(1);
        assert!(t.take_freed_tags().is_empty());
        // The whole-slot widening of a narrow lease.
        let narrow = t.acquire(&r(0, 1, 100, 10)).unwrap();
        assert_eq!(t.whole(narrow).length(), 4096);
        assert_eq!(t.whole(narrow).offset(), 0);
        while t.take_free().is_some() {}
        assert_eq!(t.free_count(), 0);
    }

    #[test]
    fn generation_skips_zero_on_wrap() {
        let mut t = SlotTable::new(1, 4096);
        t.slots[0].generation = u32::MAX;
        assert!(t.grant_with(|g| g.slot_gen == 1));
    }
}
