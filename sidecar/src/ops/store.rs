//! Object-store op bodies (SPEC §7.2): what PUT, WRITE/COMMIT/ABORT, OPEN_READ, STAT, LIST and
//! DELETE do on the tokio runtime once the dispatcher has accepted them, and the argument
//! parsing the dispatcher does before accepting (keys, LIST requests). The dispatcher's glue
//! (`dispatcher::store`) owns the handle table and the slots; nothing here touches a ring or
//! the slot table. Results go back to the dispatcher as [`StoreEvent`]s over one channel per
//! session, each followed by a ring of the dispatcher's wake doorbell.
//!
//! Tasks:
//! - one per PUT/STAT/LIST/DELETE/WRITE/COMMIT/ABORT request (`StoreEvent::Done`);
//! - one per writer (an actor: WRITEs, then COMMIT or ABORT, applied in submission order,
//!   because the dispatcher sends the commands in SQ order from its own thread);
//! - one per read stream: opens the object, then fills the slots the dispatcher feeds it, one
//!   at a time, in order (`Chunk`, then `End`; or `OpenFailed`).
//!
//! Every task stops when the session's abort token fires (the session ended): a writer dropped
//! without commit aborts its upload in the store's background tracker, and every slot lease
//! the task held is dropped (its slot goes FREE, or nowhere if the session is gone).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shm_protocol::entry::MAX_KEY_LEN;
use shm_protocol::{ErrorCode, Opcode};
use shmpipe_store::{Filled, Reader, Store, StoreError, Writer};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::peer::lease::SlotLease;
use crate::stats::StoreErrorKind;
use crate::peer::slots::Lease;

/// Longest error message written back into a slot (SPEC §7.2 "Error messages").
pub const MAX_MESSAGE: usize = 1024;
/// Largest LIST page (the store's limit).
pub const MAX_LIST_LIMIT: usize = shmpipe_store::store::MAX_PAGE_SIZE;
const DEFAULT_LIST_LIMIT: usize = 1000;
/// Read-ahead bounds (SPEC §7.2 OPEN_READ `arg2`).
pub const MAX_READ_AHEAD: u32 = 64;

/// What a session's store ops share: the store and the defaults agents may leave open.
#[derive(Clone, Debug)]
pub struct StoreLinks {
    pub store: Store,
    /// OPEN_READ read-ahead when `arg2` is 0.
    pub read_ahead: u32,
    /// CPU threads the backup engine may use per repository (SHMPIPE_WORKER_THREADS).
    pub engine_workers: usize,
    /// Packs a backup uploads at once (SHMPIPE_PACK_UPLOADS).
    pub pack_uploads: usize,
}

/// A successful op: its completion's `result` and `aux`, and for LIST the document to write
/// into the slot (then `result` becomes its length).
#[derive(Debug, Default)]
pub struct Outcome {
    pub result: u64,
    pub aux: [u64; 3],
    pub output: Option<Vec<u8>>,
    /// With `output`: `result` stays as set instead of becoming the output's length
    /// (ENTRIES_OPEN: the cursor handle, with the snapshot id in the slot).
    pub keep_result: bool,
}

impl Outcome {
    fn value(result: u64) -> Self {
        Self { result, ..Self::default() }
    }
}

/// A failed op: the wire code and, for store failures, the message (logged, and written into
/// the slot when it goes back to the agent).
#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    /// For `store_errors_total{kind}`: set for failures of the store itself.
    pub kind: Option<StoreErrorKind>,
}

impl Failure {
    pub fn code(code: ErrorCode) -> Self {
        Self { code, message: String::new(), kind: None }
    }

    /// A backup-engine failure, by its stable code name (SPEC §8); an unknown name is a bug.
    pub fn engine(code: &str, message: String) -> Self {
        let code = ErrorCode::from_name(code).unwrap_or_else(|| {
            tracing::error!(code, "engine failure with a code the wire does not know");
            ErrorCode::Internal
        });
        Self { code, message, kind: None }
    }
}

pub type OpResult = Result<Outcome, Failure>;

/// Maps a store error to its wire code (via `StoreError::code`) and logs it.
pub fn failure(op: Opcode, key: &str, e: &StoreError) -> Failure {
    let code = match e.code() {
        shmpipe_store::error::CODE_NOT_FOUND => ErrorCode::NotFound,
        shmpipe_store::error::CODE_INTEGRITY => ErrorCode::Integrity,
        shmpipe_store::error::CODE_MALFORMED => ErrorCode::Malformed,
        _ => ErrorCode::Store,
    };
    if code == ErrorCode::NotFound {
        tracing::debug!(op = op.name(), key, error = %e, "store op failed");
    } else {
        tracing::warn!(op = op.name(), key, error = %e, transient = e.is_transient(), "store op failed");
    }
    Failure { code, message: e.to_string(), kind: Some(error_kind(e)) }
}

/// The `store_errors_total{kind}` label of a store error (see `stats::StoreErrorKind`).
pub fn error_kind(e: &StoreError) -> StoreErrorKind {
    match e {
        StoreError::NotFound { .. } => StoreErrorKind::NotFound,
        StoreError::Integrity { .. } => StoreErrorKind::Integrity,
        StoreError::Corrupt { .. } => StoreErrorKind::Corrupt,
        StoreError::InvalidKey { .. }
        | StoreError::InvalidRange { .. }
        | StoreError::InvalidArgument { .. }
        | StoreError::Config(_) => StoreErrorKind::Invalid,
        StoreError::Store { transient: true, .. } => StoreErrorKind::Unavailable,
        StoreError::Aborted { .. } => StoreErrorKind::Aborted,
        _ => StoreErrorKind::Failed,
    }
}

/// Everything store tasks tell the dispatcher.
pub enum StoreEvent {
    /// A leased slot the store let go of (a consumed PUT/WRITE slot, a stream slot dropped
    /// unfilled): it goes FREE.
    Returned(Lease),
    /// A one-shot op finished.
    Done { request_id: u64, op: Opcode, started: Instant, result: OpResult, lease: Option<Lease>, release: bool },
    /// A stream filled `lease` with `len` bytes of the object at `offset`.
    Chunk { handle: u64, lease: SlotLease, len: u32, offset: u64 },
    /// A stream is over: `Ok((total bytes, verified))` or its failure.
    End { handle: u64, result: Result<(u64, bool), Failure> },
    /// A stream could not open its object; `lease` is its key slot, which goes back to the agent.
    OpenFailed { handle: u64, failure: Failure, lease: Lease },
}

/// The sending side of a session's store events: sends, then wakes the dispatcher.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::UnboundedSender<StoreEvent>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl EventSender {
    pub fn new(tx: mpsc::UnboundedSender<StoreEvent>, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self { tx, wake }
    }

    /// A closed channel means the session ended: nothing left to tell (and the event's slot
    /// lease, if any, is dropped with it).
    pub fn send(&self, ev: StoreEvent) {
        if self.tx.send(ev).is_ok() {
            (self.wake)();
        }
    }
}

// ---- arguments ------------------------------------------------------------------------------

/// A key copied out of a slot: UTF-8, 1..=1024 bytes, and a valid object name (SPEC §7.2).
pub fn parse_key(bytes: Vec<u8>) -> Result<String, ErrorCode> {
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN as usize {
        return Err(ErrorCode::Malformed);
    }
    let key = String::from_utf8(bytes).map_err(|_| ErrorCode::Malformed)?;
    shmpipe_store::key::parse_key(&key).map_err(|_| ErrorCode::Malformed)?;
    Ok(key)
}

/// A LIST request (SPEC §7.2).
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_list_limit")]
    pub limit: usize,
}

fn default_list_limit() -> usize {
    DEFAULT_LIST_LIMIT
}

pub fn parse_list(bytes: &[u8]) -> Result<ListRequest, ErrorCode> {
    let req: ListRequest = serde_json::from_slice(bytes).map_err(|_| ErrorCode::Malformed)?;
    if req.limit == 0 || req.limit > MAX_LIST_LIMIT {
        return Err(ErrorCode::Malformed);
    }
    shmpipe_store::key::parse_prefix(&req.prefix).map_err(|_| ErrorCode::Malformed)?;
    if let Some(t) = &req.token {
        shmpipe_store::key::parse_key(t).map_err(|_| ErrorCode::Malformed)?;
    }
    Ok(req)
}

/// What an OPEN_READ reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRange {
    /// The whole object, checksum verified.
    Whole,
    /// From this offset to the end (the size is looked up first; not verified).
    From(u64),
    /// These bytes (not verified).
    Bounded(Range<u64>),
}

/// OPEN_READ's range arguments (`arg0`, `arg1`).
pub fn parse_range(start: u64, end: u64) -> Result<ReadRange, ErrorCode> {
    match (start, end) {
        (0, shm_protocol::entry::RANGE_TO_END) => Ok(ReadRange::Whole),
        (s, shm_protocol::entry::RANGE_TO_END) => Ok(ReadRange::From(s)),
        (s, e) if s <= e => Ok(ReadRange::Bounded(s..e)),
        _ => Err(ErrorCode::Malformed),
    }
}

/// OPEN_READ's read-ahead argument: 0 = `default`; clamped to 1..=64.
pub fn read_ahead(arg: u64, default: u32) -> u32 {
    if arg == 0 {
        default
    } else {
        arg.min(u64::from(MAX_READ_AHEAD)) as u32
    }
}

// ---- one-shot ops ---------------------------------------------------------------------------

fn info_outcome(info: &shmpipe_store::ObjectInfo) -> Outcome {
    let mtime = info
        .last_modified
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Outcome { result: info.size, aux: [info.checksum.map_or(0, |c| u64::from(c.0)), mtime, 0], output: None, keep_result: false }
}

pub async fn put(store: Store, key: String, data: Bytes) -> OpResult {
    match store.put(&key, [data]).await {
        Ok(info) => Ok(info_outcome(&info)),
        Err(e) => Err(failure(Opcode::Put, &key, &e)),
    }
}

pub async fn stat(store: Store, key: String) -> OpResult {
    match store.stat(&key).await {
        Ok(info) => Ok(info_outcome(&info)),
        Err(e) => Err(failure(Opcode::Stat, &key, &e)),
    }
}

pub async fn delete(store: Store, key: String) -> OpResult {
    match store.delete(&key).await {
        Ok(()) => Ok(Outcome::value(0)),
        Err(e) => Err(failure(Opcode::Delete, &key, &e)),
    }
}

#[derive(Serialize)]
struct ListEntry<'a> {
    key: &'a str,
    size: u64,
    mtime_ms: u64,
}

#[derive(Serialize)]
struct ListOutput<'a> {
    entries: Vec<ListEntry<'a>>,
    next: Option<&'a str>,
}

pub async fn list(store: Store, req: ListRequest) -> OpResult {
    let page = store
        .list(&req.prefix, req.token.as_deref(), req.limit)
        .await
        .map_err(|e| failure(Opcode::List, &req.prefix, &e))?;
    let entries = page
        .entries
        .iter()
        .map(|e| ListEntry { key: &e.key, size: e.size, mtime_ms: info_outcome(e).aux[1] })
        .collect();
    let doc = serde_json::to_vec(&ListOutput { entries, next: page.next_page_token.as_deref() })
        .map_err(|e| Failure { code: ErrorCode::Internal, message: e.to_string(), kind: None })?;
    Ok(Outcome { output: Some(doc), ..Outcome::default() })
}

// ---- writers --------------------------------------------------------------------------------

pub type Reply = oneshot::Sender<OpResult>;

pub enum WriterCmd {
    Write(Bytes, Reply),
    Commit(Reply),
    Abort(Reply),
}

/// Starts a writer's actor; commands are applied in the order they are sent.
pub fn spawn_writer(runtime: &Handle, writer: Writer, abort: CancellationToken) -> mpsc::UnboundedSender<WriterCmd> {
    let (tx, rx) = mpsc::unbounded_channel();
    runtime.spawn(writer_task(writer, rx, abort));
    tx
}

async fn writer_task(mut writer: Writer, mut rx: mpsc::UnboundedReceiver<WriterCmd>, abort: CancellationToken) {
    // Every return drops `writer`; without a commit that aborts the upload (in the store's
    // background tracker): the session ended, or the handle's table entry went away.
    let key = writer.key().to_owned();
    loop {
        let cmd = tokio::select! {
            biased;
            _ = abort.cancelled() => return,
            c = rx.recv() => match c { Some(c) => c, None => return },
        };
        match cmd {
            WriterCmd::Write(data, reply) => {
                let n = data.len() as u64;
                let r = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return,
                    r = writer.write(data) => r,
                };
                let _ = reply.send(r.map(|()| Outcome::value(n)).map_err(|e| failure(Opcode::Write, &key, &e)));
            }
            WriterCmd::Commit(reply) => {
                let r = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return,
                    r = writer.commit() => r,
                };
                let _ = reply.send(r.map(|i| info_outcome(&i)).map_err(|e| failure(Opcode::Commit, &key, &e)));
                return;
            }
            WriterCmd::Abort(reply) => {
                let r = writer.abort().await;
                let _ = reply.send(r.map(|()| Outcome::value(0)).map_err(|e| failure(Opcode::Abort, &key, &e)));
                return;
            }
        }
    }
}

// ---- read streams ---------------------------------------------------------------------------

/// What a stream task needs.
pub struct StreamTask {
    pub source: StreamSource,
    pub handle: u64,
    /// The request's slot, widened to the whole slot: the first buffer to fill.
    pub first: SlotLease,
    /// Further slots to fill, fed by the dispatcher.
    pub slots: mpsc::UnboundedReceiver<SlotLease>,
    pub events: EventSender,
}

/// What a stream delivers: an object of the store (OPEN_READ), or a file of a backup
/// repository, already located (CONTENT_READ, SPEC §7.3).
pub enum StreamSource {
    Object { store: Store, key: String, range: ReadRange },
    Content(shmpipe_engine::ContentReader),
}

impl StreamTask {
    pub async fn run(self) {
        let Self { source, handle, first, slots, events } = self;
        match source {
            StreamSource::Object { store, key, range } => run_object(store, key, range, handle, first, slots, events).await,
            StreamSource::Content(reader) => run_content(reader, handle, first, slots, events).await,
        }
    }
}

async fn run_object(
    store: Store,
    key: String,
    range: ReadRange,
    handle: u64,
    first: SlotLease,
    mut slots: mpsc::UnboundedReceiver<SlotLease>,
    events: EventSender,
) {
    let opened = async {
        let range = match range {
            ReadRange::Whole => None,
            ReadRange::Bounded(r) => Some(r),
            ReadRange::From(s) => Some(s..store.stat(&key).await?.size),
        };
        store.open_read(&key, range).await
    };
    let mut reader: Reader = match opened.await {
        Ok(r) => r,
        Err(e) => {
            let failure = failure(Opcode::OpenRead, &key, &e);
            events.send(StoreEvent::OpenFailed { handle, failure, lease: first.into_lease() });
            return;
        }
    };
    let verified = reader.is_verified_read();
    let mut offset = reader.range().start;
    let mut total = 0u64;
    let mut next = Some(first);
    loop {
        let lease = match next.take() {
            Some(l) => l,
            None => match slots.recv().await {
                Some(l) => l,
                None => return, // the stream was dropped (cancelled, or the session ended)
            },
        };
        match reader.read_into(lease).await {
            Ok((lease, Filled { len, end })) => {
                if len > 0 {
                    events.send(StoreEvent::Chunk { handle, lease, len: len as u32, offset });
                    offset += len as u64;
                    total += len as u64;
                } // else: dropped here, the slot goes FREE
                if end {
                    events.send(StoreEvent::End { handle, result: Ok((total, verified)) });
                    return;
                }
            }
            Err(e) => {
                events.send(StoreEvent::End { handle, result: Err(failure(Opcode::OpenRead, &key, &e)) });
                return;
            }
        }
    }
}

/// A repository file's plaintext into slots: each slot filled to the brim (chunks are
/// variable-sized; a slot may hold parts of several), a short slot only at the end. Every
/// chunk is authenticated before any of its bytes are copied, so the stream is `verified`.
async fn run_content(
    mut reader: shmpipe_engine::ContentReader,
    handle: u64,
    first: SlotLease,
    mut slots: mpsc::UnboundedReceiver<SlotLease>,
    events: EventSender,
) {
    let mut offset = 0u64;
    let mut next = Some(first);
    loop {
        let mut lease = match next.take() {
            Some(l) => l,
            None => match slots.recv().await {
                Some(l) => l,
                None => return,
            },
        };
        let capacity = lease.len();
        match reader.read_into(lease.as_mut()).await {
            Ok(len) => {
                if len > 0 {
                    events.send(StoreEvent::Chunk { handle, lease, len: len as u32, offset });
                    offset += len as u64;
                }
                if len < capacity {
                    events.send(StoreEvent::End { handle, result: Ok((offset, true)) });
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(handle, error = %e, "repository content read failed");
                events.send(StoreEvent::End { handle, result: Err(Failure::engine(e.code(), e.to_string())) });
                return;
            }
        }
    }
}

/// Truncates `message` to at most [`MAX_MESSAGE`] bytes on a character boundary.
pub fn message_bytes(message: &str) -> &[u8] {
    let mut end = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message.as_bytes()[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(parse_key(b"a/b c".to_vec()), Ok("a/b c".into()));
        for bad in [&b""[..], b"/a", b"a/", b"a//b", b"a/../b", b"f#12", b"\xff\xfe", b"a\x01"] {
            assert_eq!(parse_key(bad.to_vec()), Err(ErrorCode::Malformed), "{bad:?}");
        }
        assert_eq!(parse_key(vec![b'k'; 1024]).map(|k| k.len()), Ok(1024));
        assert_eq!(parse_key(vec![b'k'; 1025]), Err(ErrorCode::Malformed));
    }

    #[test]
    fn list_requests() {
        assert_eq!(parse_list(b"{}"), Ok(ListRequest { prefix: String::new(), token: None, limit: 1000 }));
        assert_eq!(
            parse_list(br#"{"prefix":"a/b/","token":"a/b/c","limit":2}"#),
            Ok(ListRequest { prefix: "a/b/".into(), token: Some("a/b/c".into()), limit: 2 })
        );
        assert_eq!(parse_list(br#"{"prefix":"a","token":null}"#).unwrap().token, None);
        for bad in [
            &br#"{"limit":0}"#[..],
            br#"{"limit":10001}"#,
            br#"{"limit":-1}"#,
            br#"{"prefix":"/a"}"#,
            br#"{"token":"a//b"}"#,
            br#"{"extra":1}"#,
            br#"{"prefix":1}"#,
            b"not json",
            b"",
        ] {
            assert_eq!(parse_list(bad), Err(ErrorCode::Malformed), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ranges_and_read_ahead() {
        let end = shm_protocol::entry::RANGE_TO_END;
        assert_eq!(parse_range(0, end), Ok(ReadRange::Whole));
        assert_eq!(parse_range(5, end), Ok(ReadRange::From(5)));
        assert_eq!(parse_range(5, 5), Ok(ReadRange::Bounded(5..5)));
        assert_eq!(parse_range(0, 10), Ok(ReadRange::Bounded(0..10)));
        assert_eq!(parse_range(6, 5), Err(ErrorCode::Malformed));
        assert_eq!((read_ahead(0, 4), read_ahead(1, 4), read_ahead(1000, 4)), (4, 1, 64));
    }

    #[test]
    fn messages_are_cut_on_char_boundaries() {
        assert_eq!(message_bytes("abc"), b"abc");
        let long = "é".repeat(600); // 1200 bytes
        let cut = message_bytes(&long);
        assert_eq!(cut.len(), 1024);
        assert!(std::str::from_utf8(cut).is_ok());
    }
}
