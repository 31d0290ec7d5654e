//! Dispatcher tests over a heap-backed segment, with a fake agent made of shm-protocol's own
//! ring halves on the same memory. Most drive `turn` directly (deterministic); the async ones
//! run the real thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_protocol::entry::{cq_flags, Grant, RawSubmission};
use shm_protocol::layout::NO_SLOT;
use shm_protocol::ring::RingStorage;
use shm_protocol::shm::{CqConsumer, GqConsumer, HeapRegion, Mapping, Segment, SqProducer};
use shm_protocol::{Completion, ErrorCode, Layout, Params, RingError};
use tokio_util::sync::CancellationToken;

use super::*;

pub(super) struct Rig {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) segment: Segment,
    pub(super) global: Arc<GlobalStats>,
    pub(super) control: Arc<SessionControl>,
    pub(super) closing: CancellationToken,
    pub(super) abort: CancellationToken,
    pub(super) sq: SqProducer,
    pub(super) cq: CqConsumer,
    pub(super) gq: GqConsumer,
    /// Completions popped but not yet looked at.
    pub(super) pending: std::collections::VecDeque<Completion>,
}

fn rig(sq_cap: u32, cq_cap: u32, slots: u32, max_in_flight: u32) -> (Rig, Dispatcher) {
    rig_with(sq_cap, cq_cap, slots, max_in_flight, 0, "memory://")
}

/// A rig whose sessions keep `read_reserve` slots out of the GQ and use the store at `store_url`.
pub(super) fn rig_with(sq_cap: u32, cq_cap: u32, slots: u32, max_in_flight: u32, read_reserve: u32, store_url: &str) -> (Rig, Dispatcher) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store_cfg = shmpipe_store::StoreConfig::new(
        store_url,
        shmpipe_store::StoreOptions { part_size: 16 << 10, fsync: false, ..Default::default() },
    )
    .unwrap();
    let store = StoreLinks { store: shmpipe_store::Store::open(&store_cfg).unwrap(), read_ahead: 2, engine_workers: 2, pack_uploads: 1 };
    let abort = CancellationToken::new();
    let layout = Layout::new(Params::new(sq_cap, cq_cap, slots, 8192).unwrap()).unwrap();
    let map: Arc<dyn Mapping> = Arc::new(HeapRegion::new(layout.segment_size as usize));
    let segment = Segment::new(map, layout).unwrap();
    segment.write_header(99);
    let global = Arc::new(GlobalStats::default());
    let control = Arc::new(SessionControl::new().unwrap());
    let closing = CancellationToken::new();
    let links = Links {
        sq_bell: Doorbell::new().unwrap(),
        cq_bell: Doorbell::new().unwrap(),
        control: control.clone(),
        global: global.clone(),
        runtime: runtime.handle().clone(),
        abort: abort.clone(),
        closing: closing.clone(),
        store,
    };
    let cfg = DispatcherConfig { spin: Duration::from_micros(5), max_in_flight, read_reserve };
    let d = Dispatcher::new(Session::new(1, slots, 8192), segment.clone(), links, cfg).unwrap();
    let r = Rig {
        runtime,
        sq: SqProducer::new(segment.sq(), 0),
        cq: CqConsumer::new(segment.cq(), 0),
        gq: GqConsumer::new(segment.gq(), 0),
        segment,
        global,
        control,
        closing,
        abort,
        pending: Default::default(),
    };
    (r, d)
}

impl Rig {
    pub(super) fn push(&mut self, s: RawSubmission) {
        self.sq.try_push(&s.encode()).unwrap();
        self.sq.publish();
    }

    pub(super) fn completions(&mut self) -> Vec<Completion> {
        let mut out = Vec::new();
        while let Some(b) = self.cq.try_pop().unwrap() {
            out.push(Completion::decode(&b).unwrap());
        }
        self.cq.release();
        out
    }

    pub(super) fn grants(&mut self) -> Vec<Grant> {
        let mut out = Vec::new();
        while let Some(b) = self.gq.try_pop().unwrap() {
            out.push(Grant::decode(&b));
        }
        self.gq.release();
        out
    }

    fn wait_completion(&mut self) -> Completion {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let more = self.completions();
            self.pending.extend(more);
            if let Some(c) = self.pending.pop_front() {
                return c;
            }
            assert!(Instant::now() < deadline, "no completion");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn nop(id: u64) -> RawSubmission {
    RawSubmission { request_id: id, slot_id: NO_SLOT, ..Default::default() }
}

pub(super) fn slot_op(id: u64, opcode: Opcode, g: Grant, offset: u32, length: u32) -> RawSubmission {
    RawSubmission { request_id: id, opcode: opcode as u8, slot_id: g.slot_id, slot_gen: g.slot_gen, offset, length, ..Default::default() }
}

#[test]
fn every_slot_is_granted_before_ready() {
    let (mut r, _d) = rig(8, 8, 5, 16);
    let grants = r.grants();
    assert_eq!(grants, (0..5).map(|i| Grant { slot_id: i, slot_gen: 1 }).collect::<Vec<_>>());
}

#[test]
fn inline_ops_in_one_turn() {
    let (mut r, mut d) = rig(8, 8, 2, 16);
    let g = r.grants()[0];
    // SAFETY: test-only, slot 0 is held by the fake agent; single thread.
    unsafe { std::ptr::copy_nonoverlapping(b"123456789".as_ptr(), r.segment.slot_ptr(g.slot_id).unwrap().as_ptr(), 9) };
    r.push(nop(1));
    r.push(slot_op(2, Opcode::Echo, g, 0, 9));
    r.push(slot_op(3, Opcode::Echo, g, 0, 9000)); // past the 8192-byte slot
    r.push(slot_op(4, Opcode::Stats, g, 0, 8192));
    assert!(d.turn(Mode::Running).unwrap());
    let c = r.completions();
    assert_eq!(c.len(), 4);
    assert_eq!((c[0].request_id, c[0].status), (1, 0));
    assert_eq!((c[1].result, c[1].aux[0], c[1].flags), (9, 0xE306_9283, cq_flags::SLOT));
    assert_eq!((c[2].status, c[2].flags), (ErrorCode::OutOfRange.status(), 0));
    assert_eq!(c[3].status, 0);
    // SAFETY: test-only read of the STATS document in the slot we hold again.
    let doc = unsafe { std::slice::from_raw_parts(r.segment.slot_ptr(g.slot_id).unwrap().as_ptr(), c[3].result as usize) };
    let v: serde_json::Value = serde_json::from_slice(doc).unwrap();
    assert_eq!(v["session"]["requests_total"], 4);
    assert_eq!(v["session"]["errors_by_code"]["SHMPIPE_E_OUT_OF_RANGE"], 1);
    assert_eq!(v["global"]["requests_by_op"]["echo"], 2);
    // The sidecar consumed the SQ and released it in one store.
    assert_eq!(r.segment.sq().head().load(Ordering::Acquire), 4);
    assert!(!d.turn(Mode::Running).unwrap(), "nothing left to do");
}

#[test]
fn metrics_count_each_completion_once_with_its_labels() {
    let (mut r, mut d) = rig(16, 4, 4, 16);
    let g = r.grants()[0];
    r.push(nop(1));
    r.push(nop(2));
    r.push(slot_op(3, Opcode::Echo, g, 0, 100));
    r.push(slot_op(4, Opcode::Echo, g, 0, 9000)); // OUT_OF_RANGE
    r.push(RawSubmission { request_id: 5, opcode: 99, slot_id: NO_SLOT, ..Default::default() });
    r.push(RawSubmission { request_id: 6, slot_id: 0, ..nop(6) }); // MALFORMED, opcode known
    d.turn(Mode::Running).unwrap();
    let m = r.global.metrics_snapshot();
    let (nop_l, echo_l, unknown) = (stats::op_label(Some(Opcode::Nop)), stats::op_label(Some(Opcode::Echo)), stats::op_label(None));
    let status = |c: ErrorCode| stats::status_label(c.status());
    assert_eq!(m.completions[nop_l][0], 2);
    assert_eq!(m.completions[echo_l][0], 1);
    assert_eq!(m.completions[echo_l][status(ErrorCode::OutOfRange)], 1);
    assert_eq!(m.completions[unknown][status(ErrorCode::UnknownOpcode)], 1);
    assert_eq!(m.completions[nop_l][status(ErrorCode::Malformed)], 1);
    assert_eq!(m.completions.iter().flatten().sum::<u64>(), 6);
    // One latency observation per completion, all in this turn.
    let timed = |op: usize| m.latency[op].iter().sum::<u64>();
    assert_eq!((timed(nop_l), timed(echo_l), timed(unknown)), (3, 2, 1));
    assert_eq!(m.bytes_in, 100);
    // CQ capacity 4: two completions waited in the overflow.
    assert_eq!(m.ring_full_waits, [2, 0]);
    // The agent holds all 4 slots (granted); the gauges are this session's.
    assert_eq!(m.slots, [0, 4, 0]);
    // STATS agrees with the same counters.
    assert_eq!(d.session.counts.error_count(ErrorCode::OutOfRange), 1);
    while !d.overflow.is_empty() {
        r.completions();
        d.turn(Mode::Running).unwrap();
    }
    r.completions();
    r.control.set_mode(Mode::Stopping);
    assert_eq!(d.run().outstanding_slots, 4);
    assert_eq!(r.global.metrics_snapshot().slots, [0, 0, 0], "a finished session leaves the gauges");
}

#[test]
fn draining_refuses_new_work_without_touching_slots() {
    let (mut r, mut d) = rig(8, 8, 2, 16);
    let g = r.grants()[1];
    r.push(slot_op(1, Opcode::Echo, g, 0, 1));
    r.push(nop(2));
    d.turn(Mode::Draining).unwrap();
    let c = r.completions();
    assert!(c.iter().all(|c| c.status == ErrorCode::ShuttingDown.status() && c.flags == 0));
    assert_eq!(d.session.slots.state(g.slot_id), Some((crate::peer::slots::SlotState::Granted, 1)));
}

#[test]
fn full_cq_overflows_in_order_and_stops_draining() {
    let (mut r, mut d) = rig(16, 2, 1, 16);
    for id in 0..12 {
        r.push(nop(id));
    }
    d.turn(Mode::Running).unwrap();
    // 2 in the CQ, 2 waiting privately; the rest stays in the SQ.
    assert_eq!(d.overflow.len(), 2);
    assert_eq!(r.segment.sq().head().load(Ordering::Acquire), 4);
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.extend(r.completions().iter().map(|c| c.request_id));
        d.turn(Mode::Running).unwrap();
    }
    seen.extend(r.completions().iter().map(|c| c.request_id));
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
}

#[test]
fn corrupt_sq_tail_is_a_violation() {
    let (r, mut d) = rig(8, 8, 1, 16);
    r.segment.sq().tail().store(9, Ordering::Release); // > capacity ahead of head 0
    assert!(matches!(d.turn(Mode::Running), Err(RingError::Corrupt { .. })));
    let end = d.run();
    assert!(matches!(end.reason, EndReason::Violation(RingError::Corrupt { tail: 9, .. })));
    assert_eq!(end.outstanding_slots, 1);
    assert_eq!(r.global.protocol_violations.load(Ordering::Relaxed), 1);
}

#[test]
fn corrupt_gq_head_is_a_violation() {
    let (mut r, mut d) = rig(8, 8, 2, 16);
    let g = r.grants()[0];
    r.push(slot_op(1, Opcode::SlotRelease, g, 0, 0));
    r.segment.gq().head().store(1000, Ordering::Release);
    // The release frees a slot, and pushing its grant must check the GQ head.
    let mut result = Ok(true);
    for _ in 0..3 {
        result = d.turn(Mode::Running);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(RingError::Corrupt { .. })), "{result:?}");
}

#[test]
fn async_ops_complete_through_the_thread_and_respect_the_limit() {
    let (mut r, d) = rig(8, 8, 2, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let _thread = d.spawn(move |end| tx.send(end).unwrap()).unwrap();
    let delay = |id, us| RawSubmission { request_id: id, opcode: Opcode::Delay as u8, slot_id: NO_SLOT, args: [us, 0, 0, 0], ..Default::default() };
    r.push(delay(1, 20_000));
    r.push(nop(2));
    let first = r.wait_completion();
    let second = r.wait_completion();
    // max_in_flight = 1: the NOP was not taken before the DELAY finished.
    assert_eq!((first.request_id, first.result), (1, 20_000));
    assert_eq!(second.request_id, 2);
    r.control.set_mode(Mode::Stopping);
    let end = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(end.reason, EndReason::Stopped);
    assert_eq!(r.global.in_flight_async.load(Ordering::Relaxed), 0);
}

#[test]
fn closing_completes_in_flight_ops_with_shutting_down() {
    let (mut r, d) = rig(8, 8, 2, 4);
    let (tx, rx) = std::sync::mpsc::channel();
    let _thread = d.spawn(move |end| tx.send(end).unwrap()).unwrap();
    r.push(RawSubmission { request_id: 7, opcode: Opcode::Delay as u8, slot_id: NO_SLOT, args: [60_000_000, 0, 0, 0], ..Default::default() });
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.global.in_flight_async.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    r.control.set_mode(Mode::Draining);
    r.closing.cancel();
    r.control.set_mode(Mode::Finishing);
    let end = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(end.reason, EndReason::Finished);
    let c = r.completions();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].request_id, c[0].status), (7, ErrorCode::ShuttingDown.status()));
    drop(r.runtime);
}

#[test]
fn adaptive_spin_decays_to_zero_and_recovers() {
    let mut s = AdaptiveSpin::new(Duration::from_micros(50));
    for _ in 0..10 {
        s.miss();
    }
    assert_eq!(s.budget, Duration::ZERO);
    s.woken_with_work();
    assert!(s.budget > Duration::ZERO && s.budget <= Duration::from_micros(50));
    for _ in 0..10 {
        s.hit();
    }
    assert_eq!(s.budget, Duration::from_micros(50));
}

/// Not a test: the cost of one dispatcher turn per request, for choosing how to time requests
/// (`cargo test -p shmpipe-sidecar --release -- --ignored --nocapture turn_cost`). Prints,
/// asserts nothing about speed.
#[test]
#[ignore]
fn turn_cost() {
    let (mut r, mut d) = rig(64, 64, 8, 16);
    let g = r.grants()[0];
    for (label, echo) in [("nop", false), ("echo 64 B", true)] {
        for round in 0..3 {
            let turns = 200_000u64;
            let start = Instant::now();
            for t in 0..turns {
                for i in 0..64u64 {
                    let id = t * 64 + i;
                    let s = if echo { slot_op(id, Opcode::Echo, g, 0, 64) } else { nop(id) };
                    r.sq.try_push(&s.encode()).unwrap();
                }
                r.sq.publish();
                d.turn(Mode::Running).unwrap();
                let mut n = 0;
                while r.cq.try_pop().unwrap().is_some() {
                    n += 1;
                }
                r.cq.release();
                assert_eq!(n, 64);
            }
            let ns = start.elapsed().as_nanos() as f64 / (turns * 64) as f64;
            println!("turn_cost {label} round {round}: {ns:.1} ns/request (agent side included)");
        }
    }
}
