//! Counters and the STATS document (contract "STATS JSON"), and the one source of every number
//! `/metrics` shows (`metrics` only encodes a [`MetricsSnapshot`] of what is here). Global
//! counters are atomics shared by every session; per-session counters are plain integers owned
//! by that session's dispatcher thread, which folds them into the global ones once per turn (so
//! the hot path does not bounce a shared cache line per request).
//!
//! All atomics here are statistics: Relaxed, they order nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use shm_protocol::{ErrorCode, Opcode};

pub const OPS: usize = Opcode::ALL.len();
pub const CODES: usize = ErrorCode::ALL.len();
/// Op labels: every opcode, then `unknown` for entries refused before their opcode was known.
pub const OP_LABELS: usize = OPS + 1;
/// Status labels: `ok`, then every wire error code.
pub const STATUSES: usize = CODES + 1;
const _: () = assert!(OP_LABELS <= 128, "RequestCounts::touched is a u128 of op rows");

/// One `T` per op label. A wrapper only because std derives `Default` for arrays of at most 32
/// elements, and there are more ops than that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerOp<T>(pub [T; OP_LABELS]);

impl<T: Default> Default for PerOp<T> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| T::default()))
    }
}

impl<T> std::ops::Deref for PerOp<T> {
    type Target = [T; OP_LABELS];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T> std::ops::DerefMut for PerOp<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Upper bounds of the request-latency histogram buckets in nanoseconds, 250 ns to 10 s (DELAY
/// may take up to 60 s); `+Inf` follows implicitly.
pub const LATENCY_BOUNDS_NS: [u64; 24] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000,
    2_500_000_000, 5_000_000_000, 10_000_000_000,
];
/// Histogram buckets, `+Inf` included.
pub const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// Rings a completion or grant can find full: `ring_full_waits_total{ring}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// A completion had to wait in the private overflow queue.
    Cq = 0,
    /// A grant top-up stopped with FREE slots left because the GQ was full.
    Gq = 1,
}

impl Ring {
    pub const ALL: [Ring; 2] = [Ring::Cq, Ring::Gq];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cq => "cq",
            Self::Gq => "gq",
        }
    }
}

/// Slot states summed over sessions: `slots{state}`, in this order.
pub const SLOT_STATES: [&str; 3] = ["free", "granted", "in_flight"];

/// What kind of store failure `store_errors_total{kind}` counts. The store wiring maps each
/// `shmpipe_store::StoreError` to one: NotFound → `not_found`, Integrity → `integrity`, Corrupt →
/// `corrupt`, InvalidKey/InvalidRange/InvalidArgument/Config → `invalid`, Store with
/// `transient` → `unavailable`, other Store → `failed`, Aborted → `aborted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    NotFound = 0,
    Integrity = 1,
    Corrupt = 2,
    Invalid = 3,
    Unavailable = 4,
    Failed = 5,
    Aborted = 6,
}

impl StoreErrorKind {
    pub const ALL: [StoreErrorKind; 7] =
        [Self::NotFound, Self::Integrity, Self::Corrupt, Self::Invalid, Self::Unavailable, Self::Failed, Self::Aborted];

    pub fn name(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Integrity => "integrity",
            Self::Corrupt => "corrupt",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }
}

/// Position in `Opcode::ALL` (opcodes have gaps: 0..=4, then the store ops from 16).
fn op_index(op: Opcode) -> usize {
    op.index()
}

/// Position in `ErrorCode::ALL` (codes have gaps; checked in the tests).
fn code_index(code: ErrorCode) -> usize {
    code.index()
}

/// Label index of an op; `None` (not a known opcode) is `unknown`.
pub fn op_label(op: Option<Opcode>) -> usize {
    op.map_or(OPS, op_index)
}

pub fn op_label_name(label: usize) -> &'static str {
    Opcode::ALL.get(label).map_or("unknown", |o| o.name())
}

/// Label index of a completion status: 0 = `ok`, else the error code's.
#[inline]
pub fn status_label(status: i32) -> usize {
    // Arithmetic, not `ErrorCode::from_status` (a scan): this runs for every completion.
    match status {
        0 => 0,
        // -1..=-18 are contiguous at the start of `ErrorCode::ALL`.
        s if s < 0 && s >= ErrorCode::RepoVersion.status() => -s as usize,
        // Later codes (numbers with gaps), or not a wire status (cannot happen for completions
        // the sidecar builds: then INTERNAL).
        s => 1 + code_index(ErrorCode::from_status(s).unwrap_or(ErrorCode::Internal)),
    }
}

pub fn status_label_name(label: usize) -> &'static str {
    match label {
        0 => "ok",
        l => ErrorCode::ALL[l - 1].name(),
    }
}

/// The histogram bucket of a duration: the first whose bound is not below it.
pub fn latency_bucket(ns: u64) -> usize {
    LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns)
}

/// Request counts by op and completions by op and status: one session's, or a delta to fold.
/// Errors by code (STATS `errors_by_code`) are the error columns of `completions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// SQ entries consumed.
    pub requests_total: u64,
    /// Entries that decoded to a valid request, by op.
    pub by_op: [u64; OPS],
    /// Completions posted, by op label and status label.
    pub completions: PerOp<[u64; STATUSES]>,
    /// Bit `op` is set when a cell of that row of `completions` is non-zero, so a fold visits
    /// only those rows.
    touched: u128,
}

impl RequestCounts {
    pub fn request(&mut self) {
        self.requests_total += 1;
    }

    pub fn op(&mut self, op: Opcode) {
        self.by_op[op_index(op)] += 1;
    }

    /// A completion for a request of op label `op` with status label `status`.
    pub fn completion(&mut self, op: usize, status: usize) {
        self.completions[op][status] += 1;
        self.touched |= 1 << op;
    }

    /// Adds `other` (a delta) to these counts.
    pub fn add(&mut self, other: &RequestCounts) {
        self.requests_total += other.requests_total;
        for (a, b) in self.by_op.iter_mut().zip(other.by_op) {
            *a += b;
        }
        for_each_row(other.touched, |op| {
            for (a, b) in self.completions[op].iter_mut().zip(other.completions[op]) {
                *a += b;
            }
        });
        self.touched |= other.touched;
    }

    pub fn error_count(&self, code: ErrorCode) -> u64 {
        self.completions.iter().map(|row| row[1 + code_index(code)]).sum()
    }

    pub fn op_count(&self, op: Opcode) -> u64 {
        self.by_op[op_index(op)]
    }

    pub fn is_empty(&self) -> bool {
        self.requests_total == 0 && self.touched == 0 && self.by_op.iter().all(|n| *n == 0)
    }

    fn by_op_map(&self) -> BTreeMap<&'static str, u64> {
        Opcode::ALL.iter().zip(self.by_op).map(|(o, n)| (o.name(), n)).collect()
    }

    fn by_code_map(&self) -> BTreeMap<&'static str, u64> {
        ErrorCode::ALL.iter().map(|c| (c.name(), self.error_count(*c))).collect()
    }
}

/// Calls `f(op)` for every row whose bit is set in a `touched` mask.
fn for_each_row(mut touched: u128, mut f: impl FnMut(usize)) {
    while touched != 0 {
        let bit = touched.trailing_zeros() as usize;
        touched &= touched - 1;
        f(bit);
    }
}

/// Everything a dispatcher counts between two folds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub counts: RequestCounts,
    /// Payload bytes read from slots (ECHO).
    pub bytes_in: u64,
    /// Payload bytes written to slots (STATS documents).
    pub bytes_out: u64,
    pub ring_full_waits: [u64; Ring::ALL.len()],
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.bytes_in == 0 && self.bytes_out == 0 && self.ring_full_waits.iter().all(|n| *n == 0)
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
    completions: PerOp<[AtomicU64; STATUSES]>,
    /// Request latency by op label: per-bucket (not cumulative) counts and the sum.
    latency: PerOp<[AtomicU64; BUCKETS]>,
    latency_sum_ns: PerOp<AtomicU64>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    ring_full_waits: [AtomicU64; Ring::ALL.len()],
    /// Slots by state (`SLOT_STATES`), summed over running dispatchers.
    slots: [AtomicU64; SLOT_STATES.len()],
    store_errors: [AtomicU64; StoreErrorKind::ALL.len()],
    store_retries: AtomicU64,
}

impl GlobalStats {
    /// Adds `delta` and zeroes it.
    pub fn absorb(&self, delta: &mut Delta) {
        if delta.is_empty() {
            return;
        }
        let c = &mut delta.counts;
        if c.requests_total != 0 {
            self.requests_total.fetch_add(c.requests_total, Relaxed);
        }
        for (g, d) in self.by_op.iter().zip(c.by_op) {
            if d != 0 {
                g.fetch_add(d, Relaxed);
            }
        }
        for_each_row(c.touched, |op| {
            for (g, d) in self.completions[op].iter().zip(c.completions[op]) {
                if d != 0 {
                    g.fetch_add(d, Relaxed);
                }
            }
        });
        for (g, d) in [(&self.bytes_in, delta.bytes_in), (&self.bytes_out, delta.bytes_out)] {
            if d != 0 {
                g.fetch_add(d, Relaxed);
            }
        }
        for (g, d) in self.ring_full_waits.iter().zip(delta.ring_full_waits) {
            if d != 0 {
                g.fetch_add(d, Relaxed);
            }
        }
        *delta = Delta::default();
    }

    /// Counts a completion outside any dispatcher (the baseline transport).
    pub fn completion(&self, op: Option<Opcode>, status: i32) {
        self.completions[op_label(op)][status_label(status)].fetch_add(1, Relaxed);
    }

    /// Records `count` requests of op label `op` that each took `ns` nanoseconds.
    pub fn observe_latency(&self, op: usize, ns: u64, count: u64) {
        self.latency[op][latency_bucket(ns)].fetch_add(count, Relaxed);
        self.latency_sum_ns[op].fetch_add(ns.saturating_mul(count), Relaxed);
    }

    /// Replaces one dispatcher's contribution to the slot gauges: `was` by `now`
    /// (free, granted, in flight).
    pub fn adjust_slots(&self, was: [u32; 3], now: [u32; 3]) {
        for ((g, w), n) in self.slots.iter().zip(was).zip(now) {
            if w != n {
                // Wrapping: a decrease is the two's complement of the difference. Each
                // dispatcher's share stays >= 0, so the sum never reads negative.
                g.fetch_add(u64::from(n).wrapping_sub(u64::from(w)), Relaxed);
            }
        }
    }

    /// For the store wiring: one failed store operation of this kind.
    pub fn store_error(&self, kind: StoreErrorKind) {
        self.store_errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// For the store wiring: one store request retried.
    pub fn store_retry(&self) {
        self.store_retries.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> GlobalSnapshot {
        let counts = self.request_counts();
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

    fn request_counts(&self) -> RequestCounts {
        RequestCounts {
            requests_total: self.requests_total.load(Relaxed),
            by_op: load_all(&self.by_op),
            completions: PerOp(std::array::from_fn(|op| load_all(&self.completions[op]))),
            touched: 0,
        }
    }

    /// Everything `/metrics` shows, read once.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            completions: self.request_counts().completions,
            latency: PerOp(std::array::from_fn(|op| load_all(&self.latency[op]))),
            latency_sum_ns: PerOp(load_all(&self.latency_sum_ns)),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            slots: load_all(&self.slots),
            clients: self.clients.load(Relaxed),
            sessions_total: self.sessions_opened.load(Relaxed),
            segments_live: self.segments_live.load(Relaxed),
            slots_reclaimed_total: self.slots_reclaimed_total.load(Relaxed),
            async_in_flight: self.in_flight_async.load(Relaxed),
            ring_full_waits: load_all(&self.ring_full_waits),
            protocol_violations: self.protocol_violations.load(Relaxed),
            store_errors: load_all(&self.store_errors),
            store_retries: self.store_retries.load(Relaxed),
        }
    }
}

fn load_all<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i].load(Relaxed))
}

/// The numbers behind `/metrics`, indexed like the labels above.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub completions: PerOp<[u64; STATUSES]>,
    /// Per-bucket (not cumulative) counts; the last bucket is `+Inf`.
    pub latency: PerOp<[u64; BUCKETS]>,
    pub latency_sum_ns: PerOp<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub slots: [u64; SLOT_STATES.len()],
    pub clients: u64,
    pub sessions_total: u64,
    pub segments_live: u64,
    pub slots_reclaimed_total: u64,
    pub async_in_flight: u64,
    pub ring_full_waits: [u64; Ring::ALL.len()],
    pub protocol_violations: u64,
    pub store_errors: [u64; StoreErrorKind::ALL.len()],
    pub store_retries: u64,
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
    fn label_indexes_match_the_protocol_lists() {
        for (i, op) in Opcode::ALL.iter().enumerate() {
            assert_eq!(op_label(Some(*op)), i);
            assert_eq!(op_label_name(i), op.name());
        }
        assert_eq!(op_label_name(op_label(None)), "unknown");
        assert_eq!(status_label_name(status_label(0)), "ok");
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code_index(*code), i);
            assert_eq!(status_label_name(status_label(code.status())), code.name());
        }
        assert_eq!(status_label(-999), status_label(ErrorCode::Internal.status()));
    }

    #[test]
    fn latency_buckets_are_upper_bounds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(250), 0);
        assert_eq!(latency_bucket(251), 1);
        assert_eq!(latency_bucket(10_000_000_000), BUCKETS - 2);
        assert_eq!(latency_bucket(10_000_000_001), BUCKETS - 1);
        assert!(LATENCY_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn absorb_folds_and_resets_the_delta() {
        let g = GlobalStats::default();
        let mut d = Delta::default();
        d.counts.request();
        d.counts.op(Opcode::Echo);
        d.counts.completion(op_label(Some(Opcode::Echo)), status_label(ErrorCode::StaleSlot.status()));
        d.bytes_in = 10;
        d.ring_full_waits[Ring::Cq as usize] = 2;
        g.absorb(&mut d);
        assert!(d.is_empty());
        d.counts.request();
        d.counts.op(Opcode::Echo);
        d.counts.completion(op_label(Some(Opcode::Echo)), 0);
        d.counts.completion(op_label(None), status_label(ErrorCode::Malformed.status()));
        d.bytes_out = 5;
        g.absorb(&mut d);
        let s = g.snapshot();
        assert_eq!(s.requests_total, 2);
        assert_eq!(s.requests_by_op["echo"], 2);
        assert_eq!(s.requests_by_op["nop"], 0);
        assert_eq!(s.errors_by_code["SHMPIPE_E_STALE_SLOT"], 1);
        assert_eq!(s.errors_by_code["SHMPIPE_E_MALFORMED"], 1);
        assert_eq!(s.errors_by_code.len(), ErrorCode::ALL.len());
        let m = g.metrics_snapshot();
        assert_eq!(m.completions[1][0], 1);
        assert_eq!(m.completions[1][status_label(ErrorCode::StaleSlot.status())], 1);
        assert_eq!(m.completions[OPS][status_label(ErrorCode::Malformed.status())], 1);
        assert_eq!(m.completions.iter().flatten().sum::<u64>(), 3);
        assert_eq!((m.bytes_in, m.bytes_out, m.ring_full_waits), (10, 5, [2, 0]));
    }

    #[test]
    fn latency_slots_and_store_counters() {
        let g = GlobalStats::default();
        g.observe_latency(0, 300, 64);
        g.observe_latency(4, 2_000_000, 1);
        g.adjust_slots([0, 0, 0], [2, 5, 1]);
        g.adjust_slots([0, 0, 0], [1, 1, 0]);
        g.adjust_slots([2, 5, 1], [3, 3, 2]);
        g.store_error(StoreErrorKind::Unavailable);
        g.store_retry();
        g.store_retry();
        let m = g.metrics_snapshot();
        assert_eq!(m.latency[0][1], 64);
        assert_eq!(m.latency_sum_ns[0], 300 * 64);
        assert_eq!(m.latency[4][latency_bucket(2_000_000)], 1);
        assert_eq!(m.slots, [4, 4, 2]);
        g.adjust_slots([3, 3, 2], [0, 0, 0]);
        assert_eq!(g.metrics_snapshot().slots, [1, 1, 0]);
        assert_eq!(m.store_errors[StoreErrorKind::Unavailable as usize], 1);
        assert_eq!(m.store_retries, 2);
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
