//! The dispatcher's side of the object-store ops (SPEC §7.2): the order of checks (§7.2 steps
//! 1–4), the session's handle table (writers and read streams), feeding free slots to read
//! streams before the GQ (§9 grant policy), and turning store events into completions. The op
//! bodies run on the runtime (`ops::store`); everything here runs on the dispatcher thread and
//! is the only code that changes slot states for the store.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use shm_protocol::entry::{cq_flags, MAX_KEY_LEN};
use shm_protocol::{Completion, ErrorCode, Opcode, RingError, Submission};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Dispatcher, InFlightGuard, SessionControl};
use crate::peer::lease::{self, SlotLease, SlotReturn};
use crate::peer::slots::SlotRange;
use crate::peer::slots::{Lease, SlotOutcome};
use crate::stats;
use crate::ops::store::{self as store_ops, EventSender, Failure, OpResult, StoreEvent, StoreLinks, StreamSource, StreamTask, WriterCmd};

/// A session's store state, owned by its dispatcher.
pub(crate) struct StoreState {
    pub(super) links: StoreLinks,
    events: EventSender,
    rx: mpsc::UnboundedReceiver<StoreEvent>,
    /// Returns a leased slot to the pool when the store drops it.
    slot_return: SlotReturn,
    pub(super) handles: HashMap<u64, Entry>,
    next_handle: u64,
    /// Streams that may take another slot, oldest first.
    waiting: VecDeque<u64>,
    /// The backup-engine ops' state (SPEC §7.3), made on first use (dispatch/backup.rs).
    pub(super) backup: Option<std::sync::Arc<crate::ops::backup::BackupOps>>,
}

pub(super) enum Entry {
    Writer(mpsc::UnboundedSender<WriterCmd>),
    Reader(Stream),
}

pub(super) struct Stream {
    request_id: u64,
    /// OPEN_READ or CONTENT_READ: what its completions are counted under.
    op: Opcode,
    /// Start of the turn that took the OPEN_READ (latency until the final completion).
    started: Instant,
    /// Slots for the stream task to fill, in order.
    slots: mpsc::UnboundedSender<SlotLease>,
    /// Slots the stream holds: queued or being filled, plus chunks delivered and not yet given
    /// back by the agent. At most `read_ahead`.
    held: u32,
    read_ahead: u32,
    /// The first chunk arrived (until then only the key slot is used).
    opened: bool,
    /// In `waiting`.
    queued: bool,
    cancel: CancellationToken,
    /// Counts the stream in the global in-flight gauge until it ends.
    _in_flight: InFlightGuard,
}

impl Stream {
    fn wants(&self) -> bool {
        self.opened && self.held < self.read_ahead
    }
}

impl StoreState {
    pub(crate) fn new(links: StoreLinks, control: std::sync::Arc<SessionControl>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = EventSender::new(tx, std::sync::Arc::new(move || control.notify()));
        let ret = events.clone();
        let slot_return: SlotReturn = std::sync::Arc::new(move |l| ret.send(StoreEvent::Returned(l)));
        Self { links, events, rx, slot_return, handles: HashMap::new(), next_handle: 1, waiting: VecDeque::new(), backup: None }
    }

    /// Whether store tasks have reported something.
    pub(crate) fn has_events(&self) -> bool {
        !self.rx.is_empty()
    }

    fn queue(&mut self, handle: u64) {
        if let Some(Entry::Reader(s)) = self.handles.get_mut(&handle) {
            if s.wants() && !s.queued {
                s.queued = true;
                self.waiting.push_back(handle);
            }
        }
    }
}

impl Dispatcher {
    /// Posts a store op's completion, counted under its op.
    fn post_store(&mut self, op: Opcode, c: Completion) -> Result<(), RingError> {
        self.post(stats::op_label(Some(op)), c)
    }

    /// A store op taken off the SQ in running mode (SPEC §7.2 steps 2–4; step 1 was
    /// `Submission::validate`). Returns whether it completed now (refusals, OPEN_WRITE) rather
    /// than on the runtime.
    pub(super) fn handle_store(&mut self, sub: &Submission, started: Instant) -> Result<bool, RingError> {
        let id = sub.request_id;
        if matches!(sub.opcode, Opcode::Commit | Opcode::Abort) {
            return self.store_handle_op(sub, started);
        }
        // `validate` guarantees a slot for these ops.
        let Some(slot) = sub.slot else { return self.post_store(sub.opcode, Completion::error(id, ErrorCode::Internal)).map(|()| true) };
        let lease = match self.session.slots.acquire(&slot) {
            Ok(l) => l,
            Err(code) => return self.post_store(sub.opcode, Completion::error(id, code)).map(|()| true),
        };
        match self.accept_store(sub, lease, started) {
            Ok(None) => Ok(false),
            Ok(Some(c)) => self.post_store(sub.opcode, c).map(|()| true),
            Err(code) => {
                // Step 3 refusal: the slot goes straight back, nothing changed.
                let mut c = Completion::error(id, code);
                if let SlotOutcome::ToAgent { id, generation } = self.session.slots.finish(lease, false) {
                    c = c.with_slot(id, generation);
                }
                self.post_store(sub.opcode, c).map(|()| true)
            }
        }
    }

    /// The key at `[offset, offset + length)` of the lease's slot.
    fn key_in(&self, slot: u32, offset: u64, length: u64) -> Result<String, ErrorCode> {
        if length == 0 || length > u64::from(MAX_KEY_LEN) {
            return Err(ErrorCode::Malformed);
        }
        let end = offset.checked_add(length).ok_or(ErrorCode::OutOfRange)?;
        if end > u64::from(self.session.slots.slot_size()) {
            return Err(ErrorCode::OutOfRange);
        }
        let bytes = lease::copy_out(&self.segment, SlotRange { id: slot, offset: offset as u32, length: length as u32 })?;
        store_ops::parse_key(bytes)
    }

    pub(super) fn open_handles_full(&self) -> bool {
        self.store.handles.len() >= self.cfg.max_in_flight as usize
    }

    fn new_handle(&mut self) -> u64 {
        let h = self.store.next_handle;
        self.store.next_handle += 1;
        h
    }

    /// Steps 3 and 4 for ops with a slot: `Some` completion to post now, or `None` (the op
    /// runs on the runtime). `Err` only when nothing was done with `lease`.
    fn accept_store(&mut self, sub: &Submission, lease: Lease, started: Instant) -> Result<Option<Completion>, ErrorCode> {
        let (off, len) = (u64::from(lease.offset()), u64::from(lease.length()));
        let store = self.store.links.store.clone();
        match sub.opcode {
            Opcode::Put => {
                let (key_len, key_off) = (sub.args[0], sub.args[1]);
                if key_len == 0 || key_len > u64::from(MAX_KEY_LEN) {
                    return Err(ErrorCode::Malformed);
                }
                let key_end = key_off.checked_add(key_len).ok_or(ErrorCode::OutOfRange)?;
                if key_end > u64::from(self.session.slots.slot_size()) {
                    return Err(ErrorCode::OutOfRange);
                }
                if len > 0 && key_off < off + len && off < key_end {
                    return Err(ErrorCode::Malformed);
                }
                let key = self.key_in(lease.id(), key_off, key_len)?;
                let data = self.consume(lease)?;
                self.spawn_store(sub, started, None, store_ops::put(store, key, data));
            }
            Opcode::Write => {
                let Some(Entry::Writer(tx)) = self.store.handles.get(&sub.args[0]) else { return Err(ErrorCode::InvalidHandle) };
                let tx = tx.clone();
                let data = self.consume(lease)?;
                let (reply, rx) = oneshot::channel();
                // Sent now, from this thread: the writer applies WRITEs in SQ order.
                let _ = tx.send(WriterCmd::Write(data, reply));
                self.spawn_store(sub, started, None, reply_of(rx));
            }
            Opcode::OpenWrite => {
                let key = self.key_in(lease.id(), off, len)?;
                if self.open_handles_full() {
                    return Err(ErrorCode::Busy);
                }
                let writer = store.open_write(&key).map_err(|_| ErrorCode::Malformed)?;
                let handle = self.new_handle();
                let tx = store_ops::spawn_writer(&self.links.runtime, writer, self.links.abort.clone());
                self.store.handles.insert(handle, Entry::Writer(tx));
                let mut c = Completion::ok(sub.request_id, handle);
                if let SlotOutcome::ToAgent { id, generation } = self.session.slots.finish(lease, sub.releases_slot()) {
                    c = c.with_slot(id, generation);
                }
                return Ok(Some(c));
            }
            Opcode::OpenRead => {
                let key = self.key_in(lease.id(), off, len)?;
                let range = store_ops::parse_range(sub.args[0], sub.args[1])?;
                let read_ahead = store_ops::read_ahead(sub.args[2], self.store.links.read_ahead);
                if self.open_handles_full() {
                    return Err(ErrorCode::Busy);
                }
                self.start_stream(sub, started, lease, read_ahead, StreamSource::Object { store, key, range });
            }
            Opcode::Stat => {
                let key = self.key_in(lease.id(), off, len)?;
                self.spawn_store(sub, started, Some(lease), store_ops::stat(store, key));
            }
            Opcode::Delete => {
                let key = self.key_in(lease.id(), off, len)?;
                self.spawn_store(sub, started, Some(lease), store_ops::delete(store, key));
            }
            Opcode::List => {
                let bytes = lease::copy_out(&self.segment, SlotRange::from(&lease))?;
                let req = store_ops::parse_list(&bytes)?;
                self.spawn_store(sub, started, Some(lease), store_ops::list(store, req));
            }
            _ => return Err(ErrorCode::Internal),
        }
        Ok(None)
    }

    /// Starts a read stream (OPEN_READ, CONTENT_READ) on the request's slot, which becomes its
    /// first buffer; returns its handle. The caller checked the open-handle limit.
    pub(super) fn start_stream(&mut self, sub: &Submission, started: Instant, lease: Lease, read_ahead: u32, source: StreamSource) -> u64 {
        let handle = self.new_handle();
        self.session.slots.untag(lease.id());
        // The request's slot becomes the first buffer to fill once the source is open.
        let whole = self.session.slots.whole(lease);
        let first = SlotLease::new(self.segment.clone(), whole, self.store.slot_return.clone())
            .expect("a whole slot of this segment is in range");
        let (slots_tx, slots_rx) = mpsc::unbounded_channel();
        let cancel = self.links.abort.child_token();
        self.in_flight_async += 1;
        self.links.global.in_flight_async.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stream = Stream {
            request_id: sub.request_id,
            op: sub.opcode,
            started,
            slots: slots_tx,
            held: 1,
            read_ahead,
            opened: false,
            queued: false,
            cancel: cancel.clone(),
            _in_flight: InFlightGuard(self.links.global.clone()),
        };
        self.store.handles.insert(handle, Entry::Reader(stream));
        let task = StreamTask { source, handle, first, slots: slots_rx, events: self.store.events.clone() };
        self.links.runtime.spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = task.run() => {}
            }
        });
        handle
    }

    /// Hands an accepted PUT/WRITE slot's data to the store: no copy; the slot goes FREE when
    /// the last `Bytes` of it is dropped.
    pub(super) fn consume(&mut self, lease: Lease) -> Result<Bytes, ErrorCode> {
        let owner = SlotLease::new(self.segment.clone(), lease, self.store.slot_return.clone())?;
        // The agent gave this slot up: if it was a stream's chunk, the stream may read on.
        self.session.slots.untag(lease.id());
        Ok(Bytes::from_owner(owner))
    }

    /// COMMIT and ABORT (no slot). Returns whether it completed now.
    fn store_handle_op(&mut self, sub: &Submission, started: Instant) -> Result<bool, RingError> {
        let handle = sub.args[0];
        match (sub.opcode, self.store.handles.get(&handle)) {
            (Opcode::Commit | Opcode::Abort, Some(Entry::Writer(_))) => {
                let Some(Entry::Writer(tx)) = self.store.handles.remove(&handle) else { unreachable!("just looked") };
                let (reply, rx) = oneshot::channel();
                let cmd = if sub.opcode == Opcode::Commit { WriterCmd::Commit(reply) } else { WriterCmd::Abort(reply) };
                let _ = tx.send(cmd);
                self.spawn_store(sub, started, None, reply_of(rx));
                Ok(false)
            }
            (Opcode::Abort, Some(Entry::Reader(_))) => {
                // The stream ends first (CANCELLED), then the ABORT completes.
                self.end_stream(handle, Err(Failure::code(ErrorCode::Cancelled)))?;
                self.post_store(Opcode::Abort, Completion::ok(sub.request_id, 0)).map(|()| true)
            }
            _ => self.post_store(sub.opcode, Completion::error(sub.request_id, ErrorCode::InvalidHandle)).map(|()| true),
        }
    }

    /// Runs a one-shot store op on the runtime; its result comes back as `StoreEvent::Done`.
    pub(super) fn spawn_store<F>(&mut self, sub: &Submission, started: Instant, lease: Option<Lease>, work: F)
    where
        F: std::future::Future<Output = OpResult> + Send + 'static,
    {
        self.in_flight_async += 1;
        self.links.global.in_flight_async.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let guard = InFlightGuard(self.links.global.clone());
        let (op, request_id, release) = (sub.opcode, sub.request_id, sub.releases_slot());
        let events = self.store.events.clone();
        let abort = self.links.abort.clone();
        let closing = self.links.closing.clone();
        self.links.runtime.spawn(async move {
            let _guard = guard;
            let result = tokio::select! {
                biased;
                _ = abort.cancelled() => return,
                _ = closing.cancelled() => Err(Failure::code(ErrorCode::ShuttingDown)),
                r = work => r,
            };
            events.send(StoreEvent::Done { request_id, op, started, result, lease, release });
        });
    }

    /// Handles what store tasks reported, and chunks the agent gave back; ends streams when
    /// the shutdown grace is over. Returns whether anything happened.
    pub(super) fn store_turn(&mut self) -> Result<bool, RingError> {
        let mut worked = false;
        while let Ok(ev) = self.store.rx.try_recv() {
            worked = true;
            match ev {
                StoreEvent::Returned(lease) => {
                    self.session.slots.finish(lease, true);
                }
                StoreEvent::Done { request_id, op, started, result, lease, release } => {
                    self.in_flight_async -= 1;
                    self.observe_store(op, started);
                    if let (Opcode::Put | Opcode::Write, Ok(o)) = (op, &result) {
                        // PUT's result is the object size, WRITE's the bytes taken.
                        self.session.count_bytes_in(o.result);
                    }
                    self.complete_store(op, request_id, result, lease, release)?;
                }
                StoreEvent::Chunk { handle, lease, len, offset } => self.deliver_chunk(handle, lease, len, offset)?,
                StoreEvent::End { handle, result } => self.end_stream(handle, result)?,
                StoreEvent::OpenFailed { handle, failure, lease } => match self.store.handles.remove(&handle) {
                    Some(Entry::Reader(s)) => {
                        self.in_flight_async -= 1;
                        self.observe_store(s.op, s.started);
                        self.complete_store(s.op, s.request_id, Err(failure), Some(lease), false)?;
                    }
                    _ => {
                        self.session.slots.finish(lease, true);
                    }
                },
            }
        }
        for handle in self.session.slots.take_freed_tags() {
            worked = true;
            if let Some(Entry::Reader(s)) = self.store.handles.get_mut(&handle) {
                s.held = s.held.saturating_sub(1);
                self.store.queue(handle);
            }
        }
        if self.links.closing.is_cancelled() {
            let streams: Vec<u64> =
                self.store.handles.iter().filter(|(_, e)| matches!(e, Entry::Reader(_))).map(|(h, _)| *h).collect();
            for h in streams {
                self.end_stream(h, Err(Failure::code(ErrorCode::ShuttingDown)))?;
                worked = true;
            }
        }
        Ok(worked)
    }

    /// The completion of a one-shot store op. With a slot that goes back to the agent: LIST's
    /// document, or a failure's message, is written at its start (`result` = its length).
    fn complete_store(&mut self, op: Opcode, request_id: u64, result: OpResult, lease: Option<Lease>, release: bool) -> Result<(), RingError> {
        let mut c = match result {
            Ok(o) => match (o.output, lease) {
                (Some(doc), Some(l)) => match lease::write_start(&self.segment, l.id(), &doc) {
                    Ok(()) => {
                        let mut c = Completion::ok(request_id, if o.keep_result { o.result } else { doc.len() as u64 });
                        c.aux = o.aux;
                        c
                    }
                    Err(code) => Completion::error(request_id, code),
                },
                _ => {
                    let mut c = Completion::ok(request_id, o.result);
                    c.aux = o.aux;
                    c
                }
            },
            Err(f) => {
                if let Some(kind) = f.kind {
                    self.links.global.store_error(kind);
                }
                let mut c = Completion::error(request_id, f.code);
                if let (Some(l), false) = (lease, release || f.message.is_empty()) {
                    let msg = store_ops::message_bytes(&f.message);
                    if lease::write_start(&self.segment, l.id(), msg).is_ok() {
                        c.result = msg.len() as u64;
                    }
                }
                c
            }
        };
        if let Some(l) = lease {
            if let SlotOutcome::ToAgent { id, generation } = self.session.slots.finish(l, release) {
                c = c.with_slot(id, generation);
            }
        }
        self.post_store(op, c)
    }

    /// A filled stream slot goes to the agent (`MORE | SLOT`).
    fn deliver_chunk(&mut self, handle: u64, filled: SlotLease, len: u32, offset: u64) -> Result<(), RingError> {
        let lease = filled.into_lease();
        let Some(Entry::Reader(s)) = self.store.handles.get_mut(&handle) else {
            // The stream ended meanwhile (ABORT, shutdown): nobody wants the chunk.
            self.session.slots.finish(lease, true);
            return Ok(());
        };
        // `held` is unchanged: the slot went from being filled to delivered.
        s.opened = true;
        let (request_id, op) = (s.request_id, s.op);
        self.store.queue(handle);
        let mut c = Completion::ok(request_id, u64::from(len));
        if let SlotOutcome::ToAgent { id, generation } = self.session.slots.finish(lease, false) {
            self.session.slots.tag(id, handle);
            c = c.with_slot(id, generation);
        }
        c.flags |= cq_flags::MORE;
        c.aux = [offset, handle, 0];
        self.session.count_bytes_out(u64::from(len));
        self.post_store(op, c)
    }

    /// Posts a stream's final completion and forgets it (its task is cancelled).
    fn end_stream(&mut self, handle: u64, result: Result<(u64, bool), Failure>) -> Result<(), RingError> {
        let Some(Entry::Reader(s)) = self.store.handles.remove(&handle) else { return Ok(()) };
        s.cancel.cancel();
        self.in_flight_async -= 1;
        self.observe_store(s.op, s.started);
        let mut c = match result {
            Ok((total, verified)) => {
                let mut c = Completion::ok(s.request_id, total);
                c.aux[0] = u64::from(verified);
                c
            }
            Err(f) => {
                if let Some(kind) = f.kind {
                    self.links.global.store_error(kind);
                }
                Completion::error(s.request_id, f.code)
            }
        };
        c.aux[1] = handle;
        self.post_store(s.op, c)
    }

    /// A store op's latency, from the turn that took it to now.
    fn observe_store(&self, op: Opcode, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.links.global.observe_latency(stats::op_label(Some(op)), ns, 1);
    }

    /// Gives free slots to streams that may read on, oldest first, one slot per stream per
    /// round (SPEC §9: FREE slots go to waiting streams before the GQ).
    pub(super) fn feed_streams(&mut self) {
        while self.session.slots.has_free() {
            let Some(handle) = self.store.waiting.pop_front() else { break };
            let Some(Entry::Reader(s)) = self.store.handles.get_mut(&handle) else { continue };
            s.queued = false;
            if !s.wants() {
                continue;
            }
            let Some(lease) = self.session.slots.take_free() else { break };
            let sl = SlotLease::new(self.segment.clone(), lease, self.store.slot_return.clone())
                .expect("a whole slot of this segment is in range");
            // A send to a finished task drops the lease, which returns the slot.
            let _ = s.slots.send(sl);
            s.held += 1;
            self.store.queue(handle);
        }
    }
}

/// A WRITE/COMMIT/ABORT's result from its writer's actor.
async fn reply_of(rx: oneshot::Receiver<OpResult>) -> OpResult {
    rx.await.unwrap_or_else(|_| Err(Failure { code: ErrorCode::Store, message: "the writer is gone".into(), kind: None }))
}
