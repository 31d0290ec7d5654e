//! Counters and the STATS document (contract "STATS JSON"). Global counters are atomics shared
//! by every session; per-session counters are plain integers owned by that session's
//! dispatcher thread, which also folds its request counts into the global ones once per batch
//! (so the hot path does not bounce a shared cache line per request).
//!
//! All atomics here are statistics: Relaxed, they order nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use shm_protocol::{ErrorCode, Opcode};

const OPS: usize = Opcode::ALL.len();
const CODES: usize = ErrorCode::ALL.len();

fn op_index(op: Opcode) -> usize {
    Opcode::ALL.iter().position(|o| *o == op).expect("op is in ALL")
}

fn code_index(code: ErrorCode) -> usize {
    ErrorCode::ALL.iter().position(|c| *c == code).expect("code is in ALL")
}

/// Request counts by op and error counts by code: one session's, or a delta to fold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub requests_total: u64,
    pub by_op: [u64; OPS],
    pub by_code: [u64; CODES],
}

impl RequestCounts {
    pub fn request(&mut self) {
        self.requests_total += 1;
    }

    pub fn op(&mut self, op: Opcode) {
        self.by_op[op_index(op)] += 1;
    }

    pub fn error(&mut self, code: ErrorCode) {
        self.by_code[code_index(code)] += 1;
    }

    pub fn error_count(&self, code: ErrorCode) -> u64 {
        self.by_code[code_index(code)]
    }

    pub fn op_count(&self, op: Opcode) -> u64 {
        self.by_op[op_index(op)]
    }

    pub fn is_empty(&self) -> bool {
        self.requests_total == 0 && self.by_op.iter().chain(&self.by_code).all(|n| *n == 0)
    }

    fn by_op_map(&self) -> BTreeMap<&'static str, u64> {
        Opcode::ALL.iter().zip(self.by_op).map(|(o, n)| (o.name(), n)).collect()
    }

    fn by_code_map(&self) -> BTreeMap<&'static str, u64> {
        ErrorCode::ALL.iter().zip(self.by_code).map(|(c, n)| (c.name(), n)).collect()
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct GlobalStats {
    /// Connections that passed the uid check and hold a client place (handshaking or running).
    pub clients: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
    pub slots_reclaimed_total: AtomicU64,
    /// Segments currently mapped by the sidecar (incremented on map, decremented on unmap).
    pub segments_live: AtomicU64,
    pub protocol_violations: AtomicU64,
    /// Async ops (DELAY, large ECHO) running across all sessions; shutdown waits for 0.
    pub in_flight_async: AtomicU64,
    requests_total: AtomicU64,
    by_op: [AtomicU64; OPS],
    by_code: [AtomicU64; CODES],
}

impl GlobalStats {
    /// Adds `delta` and zeroes it.
    pub fn absorb(&self, delta: &mut RequestCounts) {
        if delta.is_empty() {
            return;
        }
        self.requests_total.fetch_add(delta.requests_total, Relaxed);
        for (g, d) in self.by_op.iter().zip(delta.by_op) {
            if d != 0 {
                g.fetch_add(d, Relaxed);
            }
        }
        for (g, d) in self.by_code.iter().zip(delta.by_code) {
            if d != 0 {
                g.fetch_add(d, Relaxed);
            }
        }
        *delta = RequestCounts::default();
    }

    /// Counts an error outside any dispatcher batch (e.g. the baseline transport).
    pub fn error(&self, code: ErrorCode) {
        self.by_code[code_index(code)].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> GlobalSnapshot {
        let counts = RequestCounts {
            requests_total: self.requests_total.load(Relaxed),
            by_op: std::array::from_fn(|i| self.by_op[i].load(Relaxed)),
            by_code: std::array::from_fn(|i| self.by_code[i].load(Relaxed)),
        };
        GlobalSnapshot {
            clients: self.clients.load(Relaxed),
            sessions_opened: self.sessions_opened.load(Relaxed),
            sessions_closed: self.sessions_closed.load(Relaxed),
            slots_reclaimed_total: self.slots_reclaimed_total.load(Relaxed),
            segments_live: self.segments_live.load(Relaxed),
            requests_total: counts.requests_total,
            requests_by_op: counts.by_op_map(),
            errors_by_code: counts.by_code_map(),
            protocol_violations: self.protocol_violations.load(Relaxed),
        }
    }
}

/// The `session` object of the STATS document.
#[derive(Clone, Debug, Serialize)]
pub struct SessionSnapshot {
    pub id: u64,
    pub slot_count: u32,
    pub slots_free: u32,
    pub slots_granted: u32,
    pub slots_in_flight: u32,
    pub grants_total: u64,
    pub returns_total: u64,
    pub requests_total: u64,
    pub requests_by_op: BTreeMap<&'static str, u64>,
    pub errors_by_code: BTreeMap<&'static str, u64>,
    pub in_flight_async: u64,
}

/// Inputs of [`SessionSnapshot`] that live outside the request counts.
pub struct SessionFigures {
    pub id: u64,
    pub slot_count: u32,
    pub slots_free: u32,
    pub slots_granted: u32,
    pub slots_in_flight: u32,
    pub grants_total: u64,
    pub returns_total: u64,
    pub in_flight_async: u64,
}

impl SessionSnapshot {
    pub fn new(f: SessionFigures, counts: &RequestCounts) -> Self {
        Self {
            id: f.id,
            slot_count: f.slot_count,
            slots_free: f.slots_free,
            slots_granted: f.slots_granted,
            slots_in_flight: f.slots_in_flight,
            grants_total: f.grants_total,
            returns_total: f.returns_total,
            requests_total: counts.requests_total,
            requests_by_op: counts.by_op_map(),
            errors_by_code: counts.by_code_map(),
            in_flight_async: f.in_flight_async,
        }
    }
}

/// The `global` object of the STATS document.
#[derive(Clone, Debug, Serialize)]
pub struct GlobalSnapshot {
    pub clients: u64,
    pub sessions_opened: u64,
    pub sessions_closed: u64,
    pub slots_reclaimed_total: u64,
    pub segments_live: u64,
    pub requests_total: u64,
    pub requests_by_op: BTreeMap<&'static str, u64>,
    pub errors_by_code: BTreeMap<&'static str, u64>,
    pub protocol_violations: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatsDocument {
    pub session: SessionSnapshot,
    pub global: GlobalSnapshot,
}

impl StatsDocument {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("stats serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_folds_and_resets_the_delta() {
        let g = GlobalStats::default();
        let mut d = RequestCounts::default();
        d.request();
        d.op(Opcode::Echo);
        d.error(ErrorCode::StaleSlot);
        g.absorb(&mut d);
        assert!(d.is_empty());
        d.request();
        d.op(Opcode::Echo);
        g.absorb(&mut d);
        let s = g.snapshot();
        assert_eq!(s.requests_total, 2);
        assert_eq!(s.requests_by_op["echo"], 2);
        assert_eq!(s.requests_by_op["nop"], 0);
        assert_eq!(s.errors_by_code["SHMPIPE_E_STALE_SLOT"], 1);
        assert_eq!(s.errors_by_code.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn document_has_the_contract_field_names() {
        let g = GlobalStats::default();
        let figures = SessionFigures {
            id: 7,
            slot_count: 4,
            slots_free: 1,
            slots_granted: 2,
            slots_in_flight: 1,
            grants_total: 5,
            returns_total: 2,
            in_flight_async: 1,
        };
        let doc = StatsDocument { session: SessionSnapshot::new(figures, &RequestCounts::default()), global: g.snapshot() };
        let v: serde_json::Value = serde_json::from_slice(&doc.to_json()).unwrap();
        for k in [
            "id", "slot_count", "slots_free", "slots_granted", "slots_in_flight", "grants_total", "returns_total",
            "requests_total", "requests_by_op", "errors_by_code", "in_flight_async",
        ] {
            assert!(v["session"].get(k).is_some(), "session.{k}");
        }
        for k in [
            "clients", "sessions_opened", "sessions_closed", "slots_reclaimed_total", "segments_live",
            "requests_total", "requests_by_op", "errors_by_code", "protocol_violations",
        ] {
            assert!(v["global"].get(k).is_some(), "global.{k}");
        }
        assert_eq!(v["session"]["id"], 7);
    }
}
