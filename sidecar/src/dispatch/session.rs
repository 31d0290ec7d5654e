//! One client's data-plane state, owned by its dispatcher: the slot table (the sidecar's
//! authority on slot ownership, [`crate::peer::slots`]) and the session's counters.

use crate::peer::slots::SlotTable;
use crate::stats::{Delta, GlobalStats, RequestCounts, Ring};

/// One client's data-plane state, owned by its dispatcher.
pub struct Session {
    pub id: u64,
    pub slots: SlotTable,
    /// Cumulative, for this session's STATS; up to date after [`Session::fold`].
    pub counts: RequestCounts,
    /// Counted since the last fold (these and the metrics-only ones). The hot path increments
    /// only this; `fold` adds it to `counts` and to the global counters once per turn.
    pub delta: Delta,
}

impl Session {
    pub fn new(id: u64, slot_count: u32, slot_size: u32) -> Self {
        Self { id, slots: SlotTable::new(slot_count, slot_size), counts: RequestCounts::default(), delta: Delta::default() }
    }

    pub fn count_request(&mut self) {
        self.delta.counts.request();
    }

    pub fn count_op(&mut self, op: shm_protocol::Opcode) {
        self.delta.counts.op(op);
    }

    /// A completion posted, by label indexes (`stats::op_label`, `stats::status_label`).
    pub fn count_completion(&mut self, op: usize, status: usize) {
        self.delta.counts.completion(op, status);
    }

    /// Adds what was counted since the last fold to `counts` and to `global`.
    pub fn fold(&mut self, global: &GlobalStats) {
        if !self.delta.is_empty() {
            self.counts.add(&self.delta.counts);
            global.absorb(&mut self.delta);
        }
    }

    pub fn count_bytes_in(&mut self, n: u64) {
        self.delta.bytes_in += n;
    }

    pub fn count_bytes_out(&mut self, n: u64) {
        self.delta.bytes_out += n;
    }

    pub fn count_ring_full(&mut self, ring: Ring) {
        self.delta.ring_full_waits[ring as usize] += 1;
    }

    /// (free, granted, in flight) now, for the global slot gauges.
    pub fn slot_gauges(&self) -> [u32; 3] {
        let f = self.slots.figures(self.id, 0);
        [f.slots_free, f.slots_granted, f.slots_in_flight]
    }
}
