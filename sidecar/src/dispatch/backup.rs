//! The dispatcher's side of the backup-engine ops (SPEC §7.3): the order of checks (slot, then
//! the handle named in `arg0`, then the op's own arguments), moving slots, and turning the
//! wire-agnostic results of `ops::backup` into completions. The op bodies run on the runtime
//! through the store path (`spawn_store`, `complete_store`), so a backup op's output document
//! or failure message lands at offset 0 of its slot exactly like a store op's; CONTENT_READ is
//! a read stream of the store's kind with the repository as its source.

use std::sync::Arc;
use std::time::Instant;

use shm_protocol::{Completion, ErrorCode, Opcode, RingError, Submission};

use super::Dispatcher;
use crate::ops::backup::{BackupOps, OpError, KIND_BACKUP, KIND_CURSOR, KIND_FILE, KIND_JOB, KIND_REPO};
use crate::ops::store::{self as store_ops, Failure, OpResult, Outcome, StreamSource};
use crate::peer::{lease, memory};
use crate::peer::slots::{Lease, SlotOutcome, SlotRange};

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        Failure::engine(e.code, e.message)
    }
}

/// The handle kind an op names in `arg0` (checked before the op runs), if it names one.
fn wanted_kind(op: Opcode) -> Option<&'static str> {
    match op {
        Opcode::BackupBegin | Opcode::Snapshots | Opcode::EntriesOpen | Opcode::ContentRead | Opcode::Check | Opcode::JobStart => Some(KIND_REPO),
        Opcode::FileOpen | Opcode::FilePut | Opcode::AddEntries | Opcode::BackupCommit | Opcode::BackupAbort => Some(KIND_BACKUP),
        Opcode::FileWrite | Opcode::FileFinish => Some(KIND_FILE),
        Opcode::EntriesNext => Some(KIND_CURSOR),
        Opcode::JobNext => Some(KIND_JOB),
        _ => None,
    }
}

fn value(r: Result<u64, OpError>) -> OpResult {
    r.map(|v| Outcome { result: v, ..Outcome::default() }).map_err(Failure::from)
}

fn document(r: Result<Vec<u8>, OpError>) -> OpResult {
    r.map(|doc| Outcome { output: Some(doc), ..Outcome::default() }).map_err(Failure::from)
}

/// A content reference and the file's size: the reference into the slot, the size in `aux0`.
fn content(r: Result<(String, u64), OpError>) -> OpResult {
    r.map(|(c, size)| Outcome { output: Some(c.into_bytes()), aux: [size, 0, 0], ..Outcome::default() }).map_err(Failure::from)
}

impl Dispatcher {
    /// The session's backup state, made on first use.
    fn backup_ops(&mut self) -> Arc<BackupOps> {
        let links = &self.store.links;
        let max = self.cfg.max_in_flight as usize;
        self.store
            .backup
            .get_or_insert_with(|| Arc::new(BackupOps::new(links.store.clone(), links.engine_workers, links.pack_uploads, max)))
            .clone()
    }

    fn post_backup(&mut self, op: Opcode, c: Completion) -> Result<(), RingError> {
        self.post(crate::stats::op_label(Some(op)), c)
    }

    /// A backup op taken off the SQ in running mode. Returns whether it completed now
    /// (refusals, FILE_OPEN, CLOSE) rather than on the runtime.
    pub(super) fn handle_backup(&mut self, sub: &Submission, started: Instant) -> Result<bool, RingError> {
        let (id, op, handle) = (sub.request_id, sub.opcode, sub.args[0]);
        let ops = self.backup_ops();
        let Some(slot) = sub.slot else {
            let wrong = wanted_kind(op).is_some_and(|k| ops.handle_kind(handle) != Some(k));
            let c = match op {
                _ if wrong => Completion::error(id, ErrorCode::InvalidHandle),
                Opcode::FileOpen => match ops.file_open(handle) {
                    Ok(file) => Completion::ok(id, file),
                    Err(e) => Completion::error(id, Failure::from(e).code),
                },
                Opcode::Close => match ops.close(handle) {
                    Ok(()) => Completion::ok(id, 0),
                    Err(e) => Completion::error(id, Failure::from(e).code),
                },
                Opcode::BackupAbort => {
                    self.spawn_store(sub, started, None, async move { value(ops.backup_abort(handle).await.map(|()| 0)) });
                    return Ok(false);
                }
                // `validate` guarantees a slot for the other ops.
                _ => Completion::error(id, ErrorCode::Internal),
            };
            return self.post_backup(op, c).map(|()| true);
        };
        let lease = match self.session.slots.acquire(&slot) {
            Ok(l) => l,
            Err(code) => return self.post_backup(op, Completion::error(id, code)).map(|()| true),
        };
        match self.accept_backup(sub, lease, started, ops) {
            Ok(()) => Ok(false),
            Err((code, lease)) => {
                // A step-3 refusal: nothing changed, the slot goes straight back.
                let mut c = Completion::error(id, code);
                if let SlotOutcome::ToAgent { id, generation } = self.session.slots.finish(lease, false) {
                    c = c.with_slot(id, generation);
                }
                self.post_backup(op, c).map(|()| true)
            }
        }
    }

    /// The argument checks of an op with a slot, then its start on the runtime. `Err` gives
    /// `lease` back untouched with the refusal's code.
    fn accept_backup(&mut self, sub: &Submission, lease: Lease, started: Instant, ops: Arc<BackupOps>) -> Result<(), (ErrorCode, Lease)> {
        /// `?` for checks that return a bare `ErrorCode`: the refusal carries the lease back.
        macro_rules! check {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(code) => return Err((code, lease)),
                }
            };
        }
        let (op, handle) = (sub.opcode, sub.args[0]);
        if wanted_kind(op).is_some_and(|k| ops.handle_kind(handle) != Some(k)) {
            return Err((ErrorCode::InvalidHandle, lease));
        }
        let input = |d: &Self| lease::copy_out(&d.segment, SlotRange::from(&lease));
        match op {
            Opcode::RepoInit => {
                let req = check!(input(self));
                self.spawn_store(sub, started, Some(lease), async move { value(ops.repo_init(&req).await) });
            }
            Opcode::RepoOpen => {
                let req = check!(input(self));
                self.spawn_store(sub, started, Some(lease), async move { value(ops.repo_open(&req).await) });
            }
            Opcode::BackupBegin => {
                let req = check!(input(self));
                self.spawn_store(sub, started, Some(lease), async move { value(ops.backup_begin(handle, &req).await) });
            }
            Opcode::FileWrite => {
                self.session.count_bytes_in(u64::from(lease.length()));
                let slot = self.consume(lease)?;
                let private = self.store.links.private.clone();
                self.spawn_store(sub, started, None, async move {
                    // Copy once, then trust: the engine chunks, hashes, compresses and encrypts
                    // only this private copy.
                    let data = slot.into_private(&private).await.map_err(Failure::code)?;
                    value(ops.file_write(handle, data).await)
                });
            }
            Opcode::FileFinish => {
                self.spawn_store(sub, started, Some(lease), async move { content(ops.file_finish(handle).await) });
            }
            Opcode::FilePut => {
                self.session.count_bytes_in(u64::from(lease.length()));
                let (segment, range, private) = (self.segment.clone(), SlotRange::from(&lease), self.store.links.private.clone());
                self.spawn_store(sub, started, Some(lease), async move {
                    // Copy once, then trust: the engine sees only the private copy, so the
                    // slot may go back (with the reference, or with SHUTTING_DOWN when the
                    // grace runs out) while the engine still works on the file.
                    let data = memory::copy_to_private(&segment, range, &private).await.map_err(Failure::code)?;
                    let len = data.as_ref().len();
                    content(ops.file_put(handle, data.into_bytes(len)).await)
                });
            }
            Opcode::AddEntries => {
                let batch = check!(input(self));
                self.spawn_store(sub, started, Some(lease), async move { value(ops.add_entries(handle, &batch).await) });
            }
            Opcode::BackupCommit => {
                self.spawn_store(sub, started, Some(lease), async move { document(ops.backup_commit(handle).await) });
            }
            Opcode::Snapshots => {
                self.spawn_store(sub, started, Some(lease), async move { document(ops.snapshots(handle).await) });
            }
            Opcode::Check => {
                let Some((read_data, subset)) = crate::ops::backup::check_read(sub.args[1]) else {
                    return Err((ErrorCode::Malformed, lease));
                };
                self.spawn_store(sub, started, Some(lease), async move { document(ops.check_subset(handle, read_data, subset).await) });
            }
            Opcode::EntriesOpen => {
                let snapshot = check!(input(self));
                self.spawn_store(sub, started, Some(lease), async move {
                    ops.entries_open(handle, &snapshot)
                        .await
                        .map(|(cursor, id)| Outcome { result: cursor, aux: [id.len() as u64, 0, 0], output: Some(id.into_bytes()), keep_result: true })
                        .map_err(Failure::from)
                });
            }
            Opcode::EntriesNext => {
                let max = self.session.slots.slot_size() as usize;
                self.spawn_store(sub, started, Some(lease), async move {
                    ops.entries_next(handle, max)
                        .await
                        .map(|(page, done)| Outcome { output: Some(page), aux: [u64::from(done), 0, 0], ..Outcome::default() })
                        .map_err(Failure::from)
                });
            }
            Opcode::JobStart => {
                let req = check!(input(self));
                // Started on the runtime: the job is a task of its own from then on.
                self.spawn_store(sub, started, Some(lease), async move { value(ops.job_start(handle, &req)) });
            }
            Opcode::JobNext => {
                let max = self.session.slots.slot_size() as usize;
                self.spawn_store(sub, started, Some(lease), async move {
                    ops.job_next(handle, max)
                        .await
                        .map(|(page, done)| Outcome { output: Some(page), aux: [u64::from(done), 0, 0], ..Outcome::default() })
                        .map_err(Failure::from)
                });
            }
            Opcode::ContentRead => {
                let reference = check!(input(self));
                if self.open_handles_full() {
                    return Err((ErrorCode::Busy, lease));
                }
                let reader = check!(ops.content_reader(handle, &reference).map_err(|e| Failure::from(e).code));
                let read_ahead = store_ops::read_ahead(sub.args[2], self.store.links.read_ahead);
                self.start_stream(sub, started, lease, read_ahead, StreamSource::Content(reader));
            }
            _ => return Err((ErrorCode::Internal, lease)),
        }
        Ok(())
    }
}
