//! The per-session data plane: one dedicated thread (`shmpipe-disp-<id>`) per session that
//! drains the SQ in batches, validates and runs requests, posts completions, keeps the GQ
//! topped up with every FREE slot, and sleeps on the SQ doorbell when idle (SPEC §6, §9).
//!
//! Shape of one turn: results of async ops → up to `BATCH` submissions → grants → CQ overflow
//! → one publish of CQ and GQ (and at most one cq doorbell write) → fold counters. When a turn
//! finds nothing: spin (bounded, adaptive budget ≤ `SHMPIPE_SPIN_US`), then `prepare_sleep` and
//! poll(2) on the SQ doorbell and the internal wake doorbell with a 100 ms timeout, which also
//! paces the heartbeat. With two cores nothing spins unbounded: an idle session costs one
//! wakeup per 100 ms.
//!
//! Timing (`request_duration_seconds`): from the turn that took a request off the SQ to the
//! turn that posted its completion. A clock read costs ~30 ns here, twice a NOP's whole cost, so
//! requests completed inline share one pair of reads per turn: the start of the turn's first
//! dequeue, and the moment after the turn published the CQ. Async ops carry their turn's start
//! and are read once more when their result comes back.
//!
//! Fast ops run inline; DELAY and large ECHO run on the tokio runtime, at most
//! `max_in_flight` at once: at the limit the dispatcher stops draining the SQ (the agent sees
//! a full ring, not an error) until a result comes back over the channel. CQ full: completions
//! wait in a private FIFO, never dropped; past `cq_capacity` of them the SQ is not drained
//! either. Ring positions out of range (`RingError::Corrupt`) end the session (SPEC §9).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use shm_protocol::entry::EntryBytes;
use shm_protocol::shm::{CqProducer, GqProducer, Segment, SqConsumer};
use shm_protocol::{Completion, ErrorCode, Opcode, RawSubmission, RingError, Submission};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::core as ops;
use crate::ops::store::StoreLinks;
use crate::peer::doorbell::Doorbell;
use crate::peer::slots::{Lease, SlotOutcome, SlotRange};
use crate::stats::{self, GlobalStats, Ring, SessionSnapshot, StatsDocument, OP_LABELS};
use session::Session;

/// Submissions taken per turn before completions are published.
const BATCH: usize = 64;
/// Longest sleep; also the heartbeat period bound (SPEC §3: at least every 100 ms).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Sleep while something needs retrying that no doorbell announces (CQ space, finishing).
const RETRY_POLL: Duration = Duration::from_millis(1);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(50);
/// How long a finishing session may wait for its last completions to fit into the CQ.
const FINISH_LIMIT: Duration = Duration::from_secs(2);

/// What the control task wants of the dispatcher; only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Mode {
    Running = 0,
    /// Graceful shutdown began: new submissions complete with SHUTTING_DOWN.
    Draining = 1,
    /// Post what is left (results of in-flight ops), then exit.
    Finishing = 2,
    /// Exit now (peer gone).
    Stopping = 3,
}

/// Shared between a session's control task and its dispatcher.
pub struct SessionControl {
    mode: AtomicU8,
    /// Private doorbell: rung by `set_mode`, and by `notify` while the dispatcher sleeps.
    wake: Doorbell,
    /// The dispatcher is (about to be) asleep on its doorbells: results sent to it must ring.
    sleeping: AtomicBool,
}

impl SessionControl {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self { mode: AtomicU8::new(Mode::Running as u8), wake: Doorbell::new()?, sleeping: AtomicBool::new(false) })
    }

    /// Tells the dispatcher that something waits in one of its channels (an async result, a
    /// store event). Rings the doorbell only if the dispatcher sleeps: a store-heavy session
    /// sends an event per chunk and per slot given back, and an eventfd write (plus the
    /// wakeup it causes) per event cost more than the events themselves.
    pub fn notify(&self) {
        // [WAKE] The sender's channel push, then this SeqCst fence, then the load of
        // `sleeping`; the dispatcher (`Dispatcher::sleep`) stores `sleeping`, fences, then
        // re-checks its channels. Either its re-check sees the push, or this load sees `true`
        // and rings (the Dekker pattern of SPEC §6).
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.wake.ring();
        }
    }

    /// Moves the mode forward (never back) and wakes the dispatcher.
    pub fn set_mode(&self, mode: Mode) {
        // Relaxed: the mode carries no data; the doorbell write/read pair orders the wakeup.
        self.mode.fetch_max(mode as u8, Ordering::Relaxed);
        self.wake.ring();
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            0 => Mode::Running,
            1 => Mode::Draining,
            2 => Mode::Finishing,
            _ => Mode::Stopping,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct DispatcherConfig {
    pub spin: Duration,
    pub max_in_flight: u32,
    /// FREE slots kept out of the GQ for read streams (SPEC §9 grant policy).
    pub read_reserve: u32,
}

/// Everything a dispatcher is connected to besides its segment.
pub struct Links {
    pub sq_bell: Doorbell,
    pub cq_bell: Doorbell,
    pub control: Arc<SessionControl>,
    pub global: Arc<GlobalStats>,
    pub runtime: Handle,
    /// Cancelled when the session ends: async ops stop without reporting.
    pub abort: CancellationToken,
    /// Cancelled when the shutdown grace is over: async ops complete with SHUTTING_DOWN.
    pub closing: CancellationToken,
    /// The object store and its defaults (SPEC §7.2).
    pub store: StoreLinks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Stopped,
    Finished,
    /// The agent broke the ring invariants (SPEC §4, §9).
    Violation(RingError),
}

#[derive(Clone, Copy, Debug)]
pub struct DispatchEnd {
    pub reason: EndReason,
    /// Slots not FREE when the dispatcher stopped: reclaimed from the agent.
    pub outstanding_slots: u32,
}

/// Result of an async op, sent back to the dispatcher.
struct AsyncDone {
    op: Opcode,
    /// Start of the turn that took the request.
    started: Instant,
    request_id: u64,
    result: Result<(u64, u64), ErrorCode>,
    lease: Option<Lease>,
    release: bool,
}

/// Decrements the global in-flight count when an async op's task ends, however it ends.
struct InFlightGuard(Arc<GlobalStats>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight_async.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The spin budget: grows when spinning (or a doorbell right after sleeping) shows work comes
/// in quickly, halves when a spin finds nothing, so an idle session decays to pure sleeping.
struct AdaptiveSpin {
    max: Duration,
    budget: Duration,
}

impl AdaptiveSpin {
    const MIN: Duration = Duration::from_micros(1);

    fn new(max: Duration) -> Self {
        Self { max, budget: max }
    }

    fn hit(&mut self) {
        self.budget = (self.budget * 2 + Self::MIN).min(self.max);
    }

    fn miss(&mut self) {
        self.budget /= 2;
        if self.budget < Self::MIN {
            self.budget = Duration::ZERO;
        }
    }

    fn woken_with_work(&mut self) {
        self.budget = (self.budget * 2).max(self.max / 8).min(self.max);
    }
}

pub struct Dispatcher {
    session: Session,
    segment: Segment,
    sq: SqConsumer,
    cq: CqProducer,
    gq: GqProducer,
    links: Links,
    cfg: DispatcherConfig,
    overflow: VecDeque<Completion>,
    done_tx: mpsc::UnboundedSender<AsyncDone>,
    done_rx: mpsc::UnboundedReceiver<AsyncDone>,
    /// Async ops, store ops and open read streams in flight.
    in_flight_async: u32,
    store: store::StoreState,
    /// Requests taken and completed inline in the current turn, by op label: timed together.
    inline_done: [u64; OP_LABELS],
    /// This dispatcher's share of the global slot gauges, as last published.
    slot_gauges: [u32; 3],
}

/// What `handle` did with a request.
enum Handled {
    /// Completed (posted) inline; the op label.
    Inline(usize),
    /// Running on the runtime.
    Async,
}

impl Dispatcher {
    /// Attaches to a fresh segment (positions 0) whose header is written, and fills the GQ
    /// with every slot so the agent can allocate right after the handshake.
    pub fn new(session: Session, segment: Segment, links: Links, cfg: DispatcherConfig) -> Result<Self, RingError> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let store = store::StoreState::new(links.store.clone(), links.control.clone());
        let mut d = Self {
            sq: SqConsumer::new(segment.sq(), 0),
            cq: CqProducer::new(segment.cq(), 0),
            gq: GqProducer::new(segment.gq(), 0),
            session,
            segment,
            links,
            cfg,
            overflow: VecDeque::new(),
            done_tx,
            done_rx,
            in_flight_async: 0,
            store,
            inline_done: [0; OP_LABELS],
            slot_gauges: [0; 3],
        };
        d.top_up_grants()?;
        d.gq.publish();
        Ok(d)
    }

    /// `[sq_doorbell, cq_doorbell]`, for the welcome's SCM_RIGHTS.
    pub fn doorbell_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.links.sq_bell.as_fd(), self.links.cq_bell.as_fd()]
    }

    pub fn session_id(&self) -> u64 {
        self.session.id
    }

    /// Slots not FREE (granted or in flight): what ending the session now would reclaim.
    pub fn outstanding_slots(&self) -> u32 {
        self.session.slots.outstanding()
    }

    /// Starts the dispatcher thread; `on_end` is called with the outcome as the thread ends.
    pub fn spawn(self, on_end: impl FnOnce(DispatchEnd) + Send + 'static) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(format!("shmpipe-disp-{}", self.session.id)).spawn(move || on_end(self.run()))
    }

    /// The loop; returns when told to stop, when finished, or on a protocol violation.
    pub fn run(mut self) -> DispatchEnd {
        let reason = match self.run_loop() {
            Ok(r) => r,
            Err(e) => {
                self.links.global.protocol_violations.fetch_add(1, Ordering::Relaxed);
                EndReason::Violation(e)
            }
        };
        self.session.fold(&self.links.global);
        // The session's slots leave the gauges with it (reclaimed or not, they are gone).
        self.links.global.adjust_slots(self.slot_gauges, [0; 3]);
        DispatchEnd { reason, outstanding_slots: self.session.slots.outstanding() }
    }

    fn run_loop(&mut self) -> Result<EndReason, RingError> {
        let mut spin = AdaptiveSpin::new(self.cfg.spin);
        let mut last_beat = Instant::now();
        let mut finishing_since: Option<Instant> = None;
        self.beat();
        // The initial grants were published before READY without a doorbell; one spurious
        // ring makes sure an agent that only looks after a doorbell sees them too.
        self.links.cq_bell.ring();
        loop {
            let mode = self.links.control.mode();
            if mode == Mode::Stopping {
                return Ok(EndReason::Stopped);
            }
            let worked = self.turn(mode)?;
            let now = Instant::now();
            if now.duration_since(last_beat) >= HEARTBEAT_EVERY {
                self.beat();
                last_beat = now;
            }
            if mode == Mode::Finishing {
                if self.in_flight_async == 0 && self.overflow.is_empty() {
                    return Ok(EndReason::Finished);
                }
                if now.duration_since(*finishing_since.get_or_insert(now)) >= FINISH_LIMIT {
                    tracing::warn!(session = self.session.id, undelivered = self.overflow.len(), "finishing: CQ not drained in time");
                    return Ok(EndReason::Finished);
                }
            }
            if worked {
                continue;
            }
            if let Some(from_agent) = self.spin_for_work(spin.budget, mode)? {
                // Only the agent's submissions say that spinning pays; results of our own
                // async work (store ops) arriving meanwhile do not.
                if from_agent {
                    spin.hit();
                }
                continue;
            }
            spin.miss();
            if self.sleep(mode)? {
                spin.woken_with_work();
            }
            self.beat();
            last_beat = Instant::now();
        }
    }

    fn beat(&self) {
        // Relaxed: the heartbeat carries no data; readers only compare values (SPEC §3).
        self.segment.heartbeat().fetch_add(1, Ordering::Relaxed);
    }

    /// Whether new submissions may be taken now.
    fn can_accept(&self) -> bool {
        self.in_flight_async < self.cfg.max_in_flight && self.overflow.len() < self.cq.capacity() as usize
    }

    /// Whether a turn would find work from this process: a mode change, async results, store
    /// events.
    fn has_internal_work(&self, mode: Mode) -> bool {
        self.links.control.mode() != mode || !self.done_rx.is_empty() || self.store.has_events()
    }

    /// Whether a turn would find work from the agent: submissions we may take, CQ space for
    /// overflowed completions. Reads shared memory only through the ring halves (which re-read
    /// a position only when their cache says empty/full).
    fn has_agent_work(&mut self) -> Result<bool, RingError> {
        Ok((self.can_accept() && self.sq.available()? > 0) || (!self.overflow.is_empty() && self.cq.free()? > 0))
    }

    /// Spins for at most `budget`; `Some(true)` when the agent brought work, `Some(false)` for
    /// internal work, `None` when nothing came.
    fn spin_for_work(&mut self, budget: Duration, mode: Mode) -> Result<Option<bool>, RingError> {
        if budget.is_zero() {
            return Ok(None);
        }
        let deadline = Instant::now() + budget;
        // One PAUSE per check (~65 cycles on Zen): more would add that much latency to every
        // request that arrives during the spin. The clock is read every 16 checks.
        let mut checks = 0u32;
        loop {
            if self.has_agent_work()? {
                return Ok(Some(true));
            }
            if self.has_internal_work(mode) {
                return Ok(Some(false));
            }
            std::hint::spin_loop();
            checks = checks.wrapping_add(1);
            if checks % 16 == 0 && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Sleeps on the doorbells (SPEC §6 C1–C6). Returns whether the agent rang, i.e. the
    /// wakeup came from its submissions rather than our own async work or the timeout.
    fn sleep(&mut self, mode: Mode) -> Result<bool, RingError> {
        // [WAKE] Announce the sleep, then re-check the channels (see `SessionControl::notify`).
        let control = &self.links.control;
        control.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.has_internal_work(mode) {
            self.links.control.sleeping.store(false, Ordering::Relaxed);
            return Ok(false);
        }
        // When we will not take submissions anyway (in-flight or overflow limit), the agent's
        // doorbell does not matter: don't ask for it, and don't let a non-empty SQ keep us up.
        let accepting = self.can_accept();
        if accepting && !self.sq.prepare_sleep(self.segment.sidecar_need_wakeup())? {
            self.links.control.sleeping.store(false, Ordering::Relaxed);
            return Ok(true);
        }
        let timeout = if self.overflow.is_empty() && mode != Mode::Finishing { IDLE_POLL } else { RETRY_POLL };
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(self.links.sq_bell.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.links.control.wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => tracing::warn!(session = self.session.id, error = %e, "poll failed"),
        }
        if accepting {
            self.sq.woke(self.segment.sidecar_need_wakeup());
        }
        self.links.control.sleeping.store(false, Ordering::Relaxed);
        let rung = self.links.sq_bell.drain();
        self.links.control.wake.drain();
        Ok(rung)
    }

    /// One pass over everything; returns whether anything was done.
    pub(crate) fn turn(&mut self, mode: Mode) -> Result<bool, RingError> {
        let mut worked = false;
        let mut now: Option<Instant> = None;
        while let Ok(done) = self.done_rx.try_recv() {
            let now = *now.get_or_insert_with(Instant::now);
            self.finish_async(done, now)?;
            worked = true;
        }
        worked |= self.store_turn()?;
        let mut taken = 0;
        while taken < BATCH && self.can_accept() {
            let Some(bytes) = self.sq.try_pop()? else { break };
            let started = *now.get_or_insert_with(Instant::now);
            if let Handled::Inline(op) = self.handle(&bytes, mode, started)? {
                self.inline_done[op] += 1;
            }
            taken += 1;
        }
        if taken > 0 {
            self.sq.release();
            worked = true;
        }
        self.top_up_grants()?;
        while let Some(c) = self.overflow.front() {
            match self.cq.try_push(&c.encode()) {
                Ok(()) => {
                    self.overflow.pop_front();
                    worked = true;
                }
                Err(RingError::Full) => break,
                Err(e) => return Err(e),
            }
        }
        let agent = self.segment.agent_need_wakeup();
        // `|`, not `||`: both rings must be published.
        if self.cq.publish_and_check_wakeup(agent) | self.gq.publish_and_check_wakeup(agent) {
            self.links.cq_bell.ring();
        }
        if let (Some(started), true) = (now, taken > 0) {
            self.time_inline(started);
        }
        self.fold();
        Ok(worked)
    }

    /// Observes the requests completed inline this turn, all with the same duration.
    fn time_inline(&mut self, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for (op, n) in self.inline_done.iter_mut().enumerate() {
            if *n != 0 {
                self.links.global.observe_latency(op, ns, *n);
                *n = 0;
            }
        }
    }

    /// Folds this turn's counts and slot gauges into the global ones.
    fn fold(&mut self) {
        self.session.fold(&self.links.global);
        let gauges = self.session.slot_gauges();
        if gauges != self.slot_gauges {
            self.links.global.adjust_slots(self.slot_gauges, gauges);
            self.slot_gauges = gauges;
        }
    }

    /// Gives FREE slots to read streams that may read on, then pushes grants into the GQ
    /// (unpublished) while more than `read_reserve` slots are FREE (SPEC §9).
    fn top_up_grants(&mut self) -> Result<(), RingError> {
        self.feed_streams();
        let mut failure = None;
        while self.session.slots.free_count() > self.cfg.read_reserve {
            let gq = &mut self.gq;
            let granted = self.session.slots.grant_with(|g| match gq.try_push(&g.encode()) {
                Ok(()) => true,
                Err(RingError::Full) => false,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            });
            if !granted {
                if failure.is_none() {
                    self.session.count_ring_full(Ring::Gq);
                }
                break;
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Queues a completion for a request of op label `op`: straight into the CQ, or behind
    /// earlier ones in the overflow.
    // Always inlined: out of line, reading the caller's freshly built `Completion` back from
    // the stack stalled store forwarding (~5 ns per request in `turn_cost`).
    #[inline(always)]
    fn post(&mut self, op: usize, c: Completion) -> Result<(), RingError> {
        self.session.count_completion(op, stats::status_label(c.status));
        if self.overflow.is_empty() {
            match self.cq.try_push(&c.encode()) {
                Ok(()) => return Ok(()),
                Err(RingError::Full) => {}
                Err(e) => return Err(e),
            }
        }
        self.session.count_ring_full(Ring::Cq);
        self.overflow.push_back(c);
        Ok(())
    }

    /// The last completion of a request that holds `lease`: the slot goes back to the agent
    /// (flag SLOT) or to the pool (`RELEASE_SLOT`), whether the op succeeded or not (SPEC §7).
    fn complete_leased(&mut self, op: Opcode, request_id: u64, result: Result<(u64, u64), ErrorCode>, lease: Lease, release: bool) -> Result<(), RingError> {
        // Payload bytes moved through the slot: ECHO read them, STATS wrote its document.
        match (op, result) {
            (Opcode::Echo, Ok((n, _))) => self.session.count_bytes_in(n),
            (Opcode::Stats, Ok((n, _))) => self.session.count_bytes_out(n),
            _ => {}
        }
        let mut c = completion(request_id, result);
        if let SlotOutcome::ToAgent { id, generation } = self.session.slots.finish(lease, release) {
            c = c.with_slot(id, generation);
        }
        self.post(stats::op_label(Some(op)), c)
    }

    /// Validates and runs one request: posts its completion, or starts it on the runtime.
    /// `started`: the start of this turn, the request's start for the latency histogram.
    fn handle(&mut self, bytes: &EntryBytes, mode: Mode, started: Instant) -> Result<Handled, RingError> {
        self.session.count_request();
        // `bytes` is our private copy (one volatile read of the entry): no double fetch.
        let sub = match RawSubmission::decode(bytes).validate() {
            Ok(s) => s,
            Err(e) => {
                // Labelled with the opcode when it is a known one (e.g. a NOP naming a slot).
                // Decoded again here, off the fast path, rather than kept alive across it.
                let op = stats::op_label(Opcode::from_u8(RawSubmission::decode(bytes).opcode));
                self.post(op, Completion::error(e.request_id, e.code))?;
                return Ok(Handled::Inline(op));
            }
        };
        self.session.count_op(sub.opcode);
        let op = stats::op_label(Some(sub.opcode));
        if mode >= Mode::Draining {
            self.post(op, Completion::error(sub.request_id, ErrorCode::ShuttingDown))?;
            return Ok(Handled::Inline(op));
        }
        let id = sub.request_id;
        match (sub.opcode, sub.slot) {
            (Opcode::Nop, _) => self.post(op, Completion::ok(id, 0))?,
            (Opcode::Delay, _) => {
                let us = sub.args[0];
                self.spawn_async(&sub, started, None, async move { ops::delay(us).await });
                return Ok(Handled::Async);
            }
            (Opcode::SlotRelease, Some(slot)) => {
                let c = match self.session.slots.release_granted(&slot) {
                    Ok(()) => Completion::ok(id, 0),
                    Err(code) => Completion::error(id, code),
                };
                self.post(op, c)?;
            }
            (Opcode::Echo, Some(slot)) => match self.session.slots.acquire(&slot) {
                Err(code) => self.post(op, Completion::error(id, code))?,
                Ok(lease) if lease.length() <= ops::INLINE_ECHO_MAX => {
                    let result = ops::echo(&self.segment, SlotRange::from(&lease));
                    self.complete_leased(Opcode::Echo, id, result, lease, sub.releases_slot())?;
                }
                Ok(lease) => {
                    let (segment, range) = (self.segment.clone(), SlotRange::from(&lease));
                    self.spawn_async(&sub, started, Some(lease), ops::echo_chunked(segment, range));
                    return Ok(Handled::Async);
                }
            },
            (Opcode::Stats, Some(slot)) => match self.session.slots.acquire(&slot) {
                Err(code) => self.post(op, Completion::error(id, code))?,
                Ok(lease) => {
                    let doc = self.stats_document();
                    let result = ops::write_document(&self.segment, SlotRange::from(&lease), &doc);
                    self.complete_leased(Opcode::Stats, id, result, lease, sub.releases_slot())?;
                }
            },
            (
                Opcode::Put
                | Opcode::OpenWrite
                | Opcode::Write
                | Opcode::Commit
                | Opcode::Abort
                | Opcode::OpenRead
                | Opcode::Stat
                | Opcode::List
                | Opcode::Delete,
                _,
            ) => {
                if !self.handle_store(&sub, started)? {
                    return Ok(Handled::Async);
                }
            }
            (
                Opcode::RepoInit
                | Opcode::RepoOpen
                | Opcode::BackupBegin
                | Opcode::FileOpen
                | Opcode::FileWrite
                | Opcode::FileFinish
                | Opcode::FilePut
                | Opcode::AddEntries
                | Opcode::BackupCommit
                | Opcode::BackupAbort
                | Opcode::Close
                | Opcode::Snapshots
                | Opcode::EntriesOpen
                | Opcode::EntriesNext
                | Opcode::ContentRead
                | Opcode::Check
                | Opcode::JobStart
                | Opcode::JobNext,
                _,
            ) => {
                if !self.handle_backup(&sub, started)? {
                    return Ok(Handled::Async);
                }
            }
            // `validate` guarantees a slot for the ops that need one.
            (Opcode::Echo | Opcode::SlotRelease | Opcode::Stats, None) => self.post(op, Completion::error(id, ErrorCode::Internal))?,
        }
        Ok(Handled::Inline(op))
    }

    fn stats_document(&mut self) -> Vec<u8> {
        // Fold our own counts first: `counts` and `global` include this session up to this
        // request.
        self.session.fold(&self.links.global);
        let figures = self.session.slots.figures(self.session.id, u64::from(self.in_flight_async));
        StatsDocument { session: SessionSnapshot::new(figures, &self.session.counts), global: self.links.global.snapshot() }
            .to_json()
    }

    /// Runs `work` on the runtime; its result comes back through `done_rx`.
    fn spawn_async<F>(&mut self, sub: &Submission, started: Instant, lease: Option<Lease>, work: F)
    where
        F: std::future::Future<Output = Result<(u64, u64), ErrorCode>> + Send + 'static,
    {
        self.in_flight_async += 1;
        self.links.global.in_flight_async.fetch_add(1, Ordering::Relaxed);
        let guard = InFlightGuard(self.links.global.clone());
        let (op, request_id, release) = (sub.opcode, sub.request_id, sub.releases_slot());
        let tx = self.done_tx.clone();
        let control = self.links.control.clone();
        let abort = self.links.abort.clone();
        let closing = self.links.closing.clone();
        self.links.runtime.spawn(async move {
            let _guard = guard;
            let result = tokio::select! {
                biased;
                _ = abort.cancelled() => return,
                _ = closing.cancelled() => Err(ErrorCode::ShuttingDown),
                r = work => r,
            };
            // A closed channel means the session ended meanwhile: nothing left to tell.
            if tx.send(AsyncDone { op, started, request_id, result, lease, release }).is_ok() {
                control.notify();
            }
        });
    }

    /// Posts an async op's result; `now` (read once per turn) ends its latency.
    fn finish_async(&mut self, done: AsyncDone, now: Instant) -> Result<(), RingError> {
        self.in_flight_async -= 1;
        let op = stats::op_label(Some(done.op));
        let ns = u64::try_from(now.saturating_duration_since(done.started).as_nanos()).unwrap_or(u64::MAX);
        self.links.global.observe_latency(op, ns, 1);
        match done.lease {
            Some(lease) => self.complete_leased(done.op, done.request_id, done.result, lease, done.release),
            None => self.post(op, completion(done.request_id, done.result)),
        }
    }
}

fn completion(request_id: u64, result: Result<(u64, u64), ErrorCode>) -> Completion {
    match result {
        Ok((value, aux0)) => {
            let mut c = Completion::ok(request_id, value);
            c.aux[0] = aux0;
            c
        }
        Err(code) => Completion::error(request_id, code),
    }
}

mod backup;
pub mod session;
mod store;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod tests;
