//! `BackupSession`: one backup in progress — file writers streaming content in, tree entries
//! added, then one commit that makes it a snapshot.
//!
//! Pipeline (REPOSITORY.md §Pipeline). A [`FileWriter`] keeps each incoming `Bytes` (the
//! sidecar's private copy of a slot: the engine never reads agent-writable memory, so what it
//! hashes is what it seals) in its chunker, which cuts chunks as slices of it (a chunk across
//! two writes is assembled in a pooled buffer: `chunker.rs`); every chunk whose boundary is
//! final becomes a *chunk task*: hash (keyed BLAKE3) → dedup
//! (claim the id unless the index or this session already has it) → compress-or-not →
//! encrypt into the worker's scratch → copy into the current pack buffer, all as one job on
//! the repository's CPU pool (`workers` threads). A full pack (≥ pack_size) is taken out of
//! the packer; its chunk task waits for an upload slot (`max_uploads`), puts a fresh pooled
//! buffer in the packer and spawns the upload. Backpressure runs backwards: uploads → the full
//! pack's task waits and the packer stays empty (blobs sealed meanwhile wait with an owned
//! copy) → at most `max_chunks_in_flight` chunk tasks exist → `FileWriter::write` waits.
//! Memory is bounded by those numbers, not by file or backup size (§Memory); chunk and pack
//! buffers are reused ([`crate::bufpool`]).
//!
//! Crash consistency: a pack enters an index object only after its PUT succeeded; blobs enter
//! the shared in-memory index (visible to other sessions' dedup) only after that index object
//! was written; the snapshot is written last, after every pack and index it depends on. Until
//! then this session dedups against its own `claimed` set. A session dropped or killed at any
//! point leaves at most unreferenced packs (garbage, never referenced) and index objects of
//! complete packs (reusable by the next backup) — never a snapshot pointing at missing data.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::blob::{self, BlobKind, Compression, SealedBlob};
use crate::bufpool::BufPool;
use crate::chunker::{ChunkBytes, StreamChunker};
use crate::crypto;
use crate::error::{EngineError, Result};
use crate::id::{BlobId, Id, SnapshotId};
use crate::index::{IndexFile, IndexedPack};
use crate::limits;
use crate::lock::{self, LockHealth, LockKind, LockTiming, RepoLock};
use crate::objects;
use crate::pack::{FinishedPack, PackBuilder};
use crate::repo::Repository;
use crate::snapshot::{self, ChunkRef, ContentRef, EntryKind, SnapshotCounts, SnapshotFile, TreeEntry};

/// Writes smaller than this are chunked inline (a thread hand-off would cost more).
const CDC_INLINE_MAX: usize = 64 * 1024;

/// Options of one backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// The snapshot the agent compares against (recorded; its entries come from
    /// [`Repository::entries`]).
    pub parent: Option<SnapshotId>,
    /// Host name recorded in the snapshot (default: this host).
    pub host: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The paths being backed up.
    pub paths: Vec<String>,
    /// Compression (default: the repository's).
    pub compression: Option<Compression>,
    /// Target pack size (default: the repository's).
    pub pack_size: Option<u32>,
    /// Chunk tasks in flight at once (memory: each holds one chunk buffer until its blob is
    /// in the pack). Default workers + 2.
    pub max_chunks_in_flight: Option<usize>,
    /// Pack uploads in flight at once (each holds one pack buffer). Default 1: with file://
    /// one upload overlaps the filling of the next pack; raise it for S3 (latency-bound PUTs),
    /// at `pack_size` of memory each.
    pub max_uploads: usize,
    /// Write an index object every this many packs (so an interrupted backup's finished packs
    /// are reusable). Default 16 (256 MiB with 16 MiB packs).
    pub index_every_packs: usize,
    /// Take a shared repository lock (default true).
    pub lock: bool,
    /// When the lock is refreshed and given up on (tests shorten it).
    pub lock_timing: LockTiming,
    /// The snapshot's time, ns since the epoch (default: now). `copy` keeps the original's.
    pub time_ns: Option<i64>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            parent: None,
            host: None,
            tags: Vec::new(),
            paths: Vec::new(),
            compression: None,
            pack_size: None,
            max_chunks_in_flight: None,
            max_uploads: 1,
            index_every_packs: 16,
            lock: true,
            lock_timing: LockTiming::default(),
            time_ns: None,
        }
    }
}

/// What the agent found for a file when comparing with the parent snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not in the parent.
    New,
    /// In the parent, but read again (size/mtime/inode differ).
    Changed,
    /// In the parent and unchanged: content recorded by reference, not read.
    Unchanged,
}

/// The result of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The new snapshot.
    pub id: SnapshotId,
    /// Counts and byte totals (also stored in the snapshot).
    pub counts: SnapshotCounts,
    /// Tree entries.
    pub entries: u64,
    /// Wall time from begin to commit.
    pub duration: Duration,
    /// Repository objects skipped because they could not be read (`"<key>: <why>"`): the
    /// backup is complete without them, but the repository needs `check` and `repair`.
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    bytes_added: AtomicU64,
    bytes_packed: AtomicU64,
    blobs_added: AtomicU64,
    packs_added: AtomicU64,
}

/// Where a sealed blob went.
enum Placed {
    /// Already in the repository or this session.
    Duplicate,
    /// Copied into the current pack.
    Packed,
    /// Copied in, and that filled the pack: the caller rotates it.
    Full(PackBuilder),
    /// No current pack (a full one waits for an upload slot): an owned copy to add later.
    Waiting(SealedBlob),
}

thread_local! {
    /// Per CPU worker: the buffer blobs are sealed into before being copied into a pack.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct TreeState {
    buf: Vec<u8>,
    blobs: Vec<BlobId>,
    entries: u64,
    counts: SnapshotCounts,
}

struct Shared {
    repo: Repository,
    compression: Compression,
    pack_size: u64,
    index_every: usize,
    chunk_slots: Arc<Semaphore>,
    uploads: Arc<Semaphore>,
    /// Blob ids stored by this session and not yet in the shared index.
    claimed: Mutex<HashSet<BlobId>>,
    /// The pack being filled; `None` while a full one waits for an upload slot (blobs sealed
    /// meanwhile wait for `pack_ready` with an owned copy).
    packer: Mutex<Option<PackBuilder>>,
    pack_ready: Notify,
    /// Chunk buffers (writers' chunkers) and pack buffers, reused.
    chunk_bufs: Arc<BufPool>,
    pack_bufs: Arc<BufPool>,
    /// Uploaded packs not yet in an index object.
    durable: Mutex<Vec<IndexedPack>>,
    /// Chunk tasks and pack uploads.
    tasks: TaskTracker,
    closed: AtomicBool,
    failed: Mutex<Option<EngineError>>,
    /// The session's lock: once lost, every call fails and no snapshot is written.
    lock_health: Option<LockHealth>,
    counters: Counters,
}

/// One backup in progress. Methods take `&self`: file writers and entries may be added from
/// many tasks at once. End it with [`BackupSession::commit`] or [`BackupSession::abort`];
/// dropping it abandons it like a crash would (the repository stays consistent).
pub struct BackupSession {
    sh: Arc<Shared>,
    tree: tokio::sync::Mutex<TreeState>,
    opts: BackupOptions,
    started: Instant,
    time_ns: i64,
    lock: Mutex<Option<RepoLock>>,
}

impl std::fmt::Debug for BackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSession").field("parent", &self.opts.parent).finish_non_exhaustive()
    }
}

impl Repository {
    /// Begins a backup: takes a shared lock (unless disabled), loads new index objects (for
    /// dedup), checks that the parent exists.
    pub async fn begin_backup(&self, opts: BackupOptions) -> Result<BackupSession> {
        let lock = if opts.lock { Some(self.lock_with(LockKind::Shared, "backup", opts.lock_timing).await?) } else { None };
        let lock_health = lock.as_ref().map(RepoLock::health);
        self.refresh_index().await?;
        if let Some(p) = &opts.parent {
            self.snapshot(p).await?;
        }
        let workers = self.inner.workers;
        let time_ns = opts.time_ns;
        let settings = &self.inner.settings;
        let pack_size = u64::from(opts.pack_size.unwrap_or(settings.pack_size)).max(1);
        let max_chunk = settings.chunker.max_size as usize;
        let chunk_slots = opts.max_chunks_in_flight.unwrap_or(workers + 2).max(1);
        // A pack buffer holds pack_size plus the blob that crosses it plus the header.
        let pack_cap = pack_size as usize + max_chunk + (1 << 20);
        // Idle buffers kept: one pack (the next one to fill), and one chunk window per task.
        let pack_bufs = BufPool::new(pack_cap, 2 * pack_cap, 1);
        let sh = Arc::new(Shared {
            repo: self.clone(),
            compression: opts.compression.unwrap_or(settings.compression),
            pack_size,
            index_every: opts.index_every_packs.max(1),
            chunk_slots: Arc::new(Semaphore::new(chunk_slots)),
            uploads: Arc::new(Semaphore::new(opts.max_uploads.max(1))),
            claimed: Mutex::new(HashSet::new()),
            packer: Mutex::new(Some(PackBuilder::with_buf(pack_bufs.take()))),
            pack_ready: Notify::new(),
            chunk_bufs: BufPool::new(max_chunk, 2 * max_chunk, chunk_slots),
            pack_bufs,
            durable: Mutex::new(Vec::new()),
            tasks: TaskTracker::new(),
            closed: AtomicBool::new(false),
            failed: Mutex::new(None),
            lock_health,
            counters: Counters::default(),
        });
        Ok(BackupSession {
            sh,
            tree: tokio::sync::Mutex::new(TreeState {
                buf: Vec::new(),
                blobs: Vec::new(),
                entries: 0,
                counts: SnapshotCounts::default(),
            }),
            opts,
            started: Instant::now(),
            time_ns: time_ns.unwrap_or_else(lock::now_ns),
            lock: Mutex::new(lock),
        })
    }
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        self.check_failed()?;
        if self.closed.load(Relaxed) {
            return Err(EngineError::Closed { reason: "the session was committed or aborted".into() });
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<()> {
        if let Some(e) = self.failed.lock().expect("failed lock").as_ref() {
            return Err(e.clone());
        }
        if let Some(Err(e)) = self.lock_health.as_ref().map(LockHealth::check) {
            self.fail(&e);
            return Err(e);
        }
        Ok(())
    }

    /// Records the session's first failure; every later call reports it.
    fn fail(&self, e: &EngineError) {
        let mut f = self.failed.lock().expect("failed lock");
        if f.is_none() {
            *f = Some(e.clone());
        }
    }

    /// True if the blob is new and now ours to store; false if the repository (index) or this
    /// session already has it.
    fn claim(&self, id: &BlobId) -> bool {
        if self.repo.inner.index.read().expect("index lock").contains(id) {
            return false;
        }
        self.claimed.lock().expect("claimed lock").insert(*id)
    }

    /// Whether a blob is in the repository or stored by this session.
    fn known(&self, id: &BlobId) -> bool {
        self.repo.inner.index.read().expect("index lock").contains(id) || self.claimed.lock().expect("claimed lock").contains(id)
    }

    /// Hash, dedup, seal on a CPU worker — and, while there, copy the envelope into the pack
    /// being filled. Returns the blob id. `data` is released on the worker: an owned buffer
    /// goes back to the chunk pool, a slice lets go of its slot.
    async fn store_blob(self: &Arc<Self>, kind: BlobKind, data: ChunkBytes, id: Option<BlobId>) -> Result<BlobId> {
        self.check_failed()?;
        let sh = self.clone();
        let (id, placed) = self
            .repo
            .inner
            .cpu
            .run(move || -> Result<(BlobId, Placed)> {
                let inner = &sh.repo.inner;
                let id = id.unwrap_or_else(|| Id(crypto::keyed_id(&inner.settings.id_key.0, &data)));
                if !sh.claim(&id) {
                    sh.release(data);
                    return Ok((id, Placed::Duplicate));
                }
                let placed = SCRATCH.with(|scratch| -> Result<Placed> {
                    let mut scratch = scratch.borrow_mut();
                    let info = blob::seal_into(&inner.aead, kind, id, &data, sh.compression, &mut scratch)?;
                    sh.counters.bytes_added.fetch_add(u64::from(info.raw_len), Relaxed);
                    sh.counters.blobs_added.fetch_add(1, Relaxed);
                    let mut p = sh.packer.lock().expect("packer lock");
                    Ok(match p.as_mut() {
                        Some(b) => {
                            b.add_sealed(kind, id, info.raw_len, &scratch);
                            if sh.pack_full(b) {
                                Placed::Full(p.take().expect("present"))
                            } else {
                                Placed::Packed
                            }
                        }
                        None => Placed::Waiting(SealedBlob {
                            kind,
                            id,
                            raw_len: info.raw_len,
                            data: Bytes::copy_from_slice(&scratch),
                            compressed: info.compressed,
                        }),
                    })
                });
                sh.release(data);
                Ok((id, placed?))
            })
            .await??;
        match placed {
            Placed::Duplicate | Placed::Packed => {}
            Placed::Full(b) => self.rotate(b).await?,
            Placed::Waiting(blob) => self.add_when_ready(blob).await?,
        }
        Ok(id)
    }

    /// A pack is closed at the session's pack size, or at the blob count a reader accepts
    /// (limits.rs: a pack of a million tiny files' blobs).
    fn pack_full(&self, b: &PackBuilder) -> bool {
        b.size() >= self.pack_size || b.len() >= limits::MAX_PACK_BLOBS
    }

    fn release(&self, data: ChunkBytes) {
        if let ChunkBytes::Owned(buf) = data {
            self.chunk_bufs.put(buf);
        }
    }

    /// A full pack: wait for an upload slot (the packer stays empty meanwhile, which is the
    /// backpressure), start the upload, and put a fresh buffer in the packer.
    async fn rotate(self: &Arc<Self>, full: PackBuilder) -> Result<()> {
        let permit = self.uploads.clone().acquire_owned().await.map_err(|_| EngineError::internal("upload semaphore closed"));
        let fresh = PackBuilder::with_buf(self.pack_bufs.take());
        *self.packer.lock().expect("packer lock") = Some(fresh);
        self.pack_ready.notify_waiters();
        let permit = permit?;
        let pack = full.finish(&self.repo.inner.aead)?;
        let sh = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = sh.upload(pack, permit).await {
                sh.fail(&e);
            }
        });
        Ok(())
    }

    /// The rare path: a blob sealed while the packer was empty.
    async fn add_when_ready(self: &Arc<Self>, blob: SealedBlob) -> Result<()> {
        loop {
            let ready = self.pack_ready.notified();
            let full = {
                let mut p = self.packer.lock().expect("packer lock");
                match p.as_mut() {
                    Some(b) => {
                        b.add(&blob);
                        if self.pack_full(b) {
                            p.take()
                        } else {
                            return Ok(());
                        }
                    }
                    None => None,
                }
            };
            match full {
                Some(b) => return self.rotate(b).await,
                None => ready.await,
            }
        }
    }

    async fn upload(self: &Arc<Self>, pack: FinishedPack, permit: OwnedSemaphorePermit) -> Result<()> {
        let key = objects::pack_key(&pack.id);
        let FinishedPack { id, data, entries, size, .. } = pack;
        // The buffer returns to the pool when the store drops the Bytes.
        self.repo.inner.store.put(&key, [self.pack_bufs.into_bytes(data)]).await?;
        drop(permit);
        self.counters.bytes_packed.fetch_add(size, Relaxed);
        self.counters.packs_added.fetch_add(1, Relaxed);
        let batch = {
            let mut d = self.durable.lock().expect("durable lock");
            d.push(IndexedPack { id, size, blobs: entries });
            // One more pack must still fit an index object's blob bound (limits.rs).
            let blobs: usize = d.iter().map(|p| p.blobs.len()).sum();
            (d.len() >= self.index_every || blobs > limits::MAX_INDEX_BLOBS - limits::MAX_PACK_BLOBS).then(|| std::mem::take(&mut *d))
        };
        if let Some(batch) = batch {
            self.write_index(batch).await?;
        }
        Ok(())
    }

    /// Writes an index object for durable packs, then publishes their blobs to the shared
    /// index (and stops tracking them as claimed).
    async fn write_index(&self, packs: Vec<IndexedPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let index_id = Id::random();
        let key = objects::index_key(&index_id);
        let file = IndexFile { v: 1, packs };
        let n = self.repo.put_object_cached(&key, &file).await?;
        self.counters.bytes_packed.fetch_add(n, Relaxed);
        {
            let mut idx = self.repo.inner.index.write().expect("index lock");
            for p in &file.packs {
                idx.stage_pack(p)?;
            }
            idx.commit_staged();
            idx.mark_loaded(index_id);
        }
        let mut c = self.claimed.lock().expect("claimed lock");
        for p in &file.packs {
            for b in &p.blobs {
                c.remove(&b.id);
            }
        }
        Ok(())
    }
}

impl BackupSession {
    /// The options it was begun with.
    pub fn options(&self) -> &BackupOptions {
        &self.opts
    }

    /// The health of the session's lock (`None` when begun without one).
    pub fn lock_health(&self) -> Option<LockHealth> {
        self.sh.lock_health.clone()
    }

    /// A writer for one file's content.
    pub fn file_writer(&self) -> Result<FileWriter> {
        self.sh.check_open()?;
        Ok(FileWriter {
            sh: self.sh.clone(),
            chunker: Some(self.sh.repo.inner.cdc.stream()),
            pending: VecDeque::new(),
            done: Vec::new(),
            size: 0,
            poisoned: false,
        })
    }

    /// Adds one tree entry. A file's `content` must be known to the repository: produced by a
    /// [`FileWriter`] of this session, or taken from the parent snapshot (unchanged files,
    /// recorded by reference without reading them).
    pub async fn add_entry(&self, entry: TreeEntry, change: Change) -> Result<()> {
        self.sh.check_open()?;
        match (&entry.kind, &entry.content) {
            (EntryKind::File, None) => {
                return Err(EngineError::InvalidArgument { message: format!("file {:?} without content", entry.path) })
            }
            (EntryKind::File, Some(c)) => {
                if c.size() != entry.size {
                    return Err(EngineError::InvalidArgument {
                        message: format!("file {:?}: size {} but content has {}", entry.path, entry.size, c.size()),
                    });
                }
                self.check_content_known(&entry.path, c)?;
            }
            (_, Some(_)) => {
                return Err(EngineError::InvalidArgument { message: format!("{:?}: only files have content", entry.path) })
            }
            (_, None) => {}
        }
        self.push_entry(entry, change).await
    }

    /// Adds an entry exactly as given, without [`BackupSession::add_entry`]'s checks (content
    /// known to the repository, sizes agreeing): what a buggy or hostile writer that has the
    /// password can put in a repository. For tests of the readers (the hostile-repository
    /// corpus, `examples/hostile_corpus.rs`); the sidecar never calls it.
    #[doc(hidden)]
    pub async fn add_entry_unchecked(&self, entry: TreeEntry) -> Result<()> {
        self.sh.check_open()?;
        self.push_entry(entry, Change::New).await
    }

    async fn push_entry(&self, entry: TreeEntry, change: Change) -> Result<()> {
        let mut t = self.tree.lock().await;
        match entry.kind {
            EntryKind::File => match change {
                Change::New => t.counts.files_new += 1,
                Change::Changed => t.counts.files_changed += 1,
                Change::Unchanged => t.counts.files_unchanged += 1,
            },
            EntryKind::Dir => t.counts.dirs += 1,
            EntryKind::Symlink | EntryKind::Other => t.counts.others += 1,
        }
        let before = t.buf.len();
        snapshot::encode_entry(&entry, &mut t.buf);
        if t.buf.len() - before > (limits::MAX_TREE_BLOB as usize) - snapshot::TREE_BLOB_MAX {
            t.buf.truncate(before);
            return Err(EngineError::InvalidArgument { message: format!("tree entry {:?} is too large to store", entry.path) });
        }
        t.entries += 1;
        if snapshot::tree_cut_after(&entry.path, t.buf.len(), self.sh.repo.inner.cdc.tree_key()) {
            let data = std::mem::take(&mut t.buf);
            self.push_tree_blob(&mut t, data).await?;
        }
        Ok(())
    }

    /// The id is computed here, under the tree lock, so blob order is entry order.
    async fn push_tree_blob(&self, t: &mut TreeState, data: Vec<u8>) -> Result<()> {
        let id = Id(crypto::keyed_id(&self.sh.repo.inner.settings.id_key.0, &data));
        t.blobs.push(id);
        self.sh.store_blob(BlobKind::Tree, ChunkBytes::Owned(data), Some(id)).await.inspect_err(|e| self.sh.fail(e))?;
        Ok(())
    }

    fn check_content_known(&self, path: &str, c: &ContentRef) -> Result<()> {
        let missing = |id: &BlobId| EngineError::NotFound { what: format!("blob {id} referenced by {path:?}") };
        match c {
            ContentRef::Chunks { size, chunks } => {
                let sum: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
                if sum != *size {
                    return Err(EngineError::InvalidArgument { message: format!("{path:?}: chunk lengths add up to {sum}, not {size}") });
                }
                if let Some(c) = chunks.iter().find(|c| !self.sh.known(&c.id)) {
                    return Err(missing(&c.id));
                }
            }
            ContentRef::List { list, .. } => {
                if !self.sh.known(list) {
                    return Err(missing(list));
                }
            }
        }
        Ok(())
    }

    /// Makes the backup a snapshot: flushes the tree and the last pack, waits for every
    /// upload, writes the remaining index, then the snapshot (last). On error nothing
    /// references the new data (the repository stays consistent; see the module docs).
    pub async fn commit(self) -> Result<SnapshotSummary> {
        let r = self.commit_inner().await;
        if r.is_err() {
            self.sh.closed.store(true, Relaxed);
        }
        self.release_lock().await;
        r
    }

    async fn commit_inner(&self) -> Result<SnapshotSummary> {
        self.sh.check_open()?;
        self.sh.closed.store(true, Relaxed);
        let mut t = self.tree.lock().await;
        if !t.buf.is_empty() {
            let data = std::mem::take(&mut t.buf);
            self.push_tree_blob(&mut t, data).await?;
        }
        // Every chunk task (and the uploads they started) ends...
        self.sh.tasks.close();
        self.sh.tasks.wait().await;
        self.sh.check_failed()?;
        // ...then the last, partial pack.
        let last = self.sh.packer.lock().expect("packer lock").take();
        if let Some(last) = last.filter(|b| !b.is_empty()) {
            let permit = self.sh.uploads.clone().acquire_owned().await.map_err(|_| EngineError::internal("upload semaphore closed"))?;
            let pack = last.finish(&self.sh.repo.inner.aead)?;
            self.sh.upload(pack, permit).await?;
        }
        let rest = std::mem::take(&mut *self.sh.durable.lock().expect("durable lock"));
        self.sh.write_index(rest).await?;
        self.sh.check_failed()?;

        let c = &self.sh.counters;
        let mut counts = t.counts.clone();
        counts.bytes_read = c.bytes_read.load(Relaxed);
        counts.bytes_added = c.bytes_added.load(Relaxed);
        counts.blobs_added = c.blobs_added.load(Relaxed);
        counts.packs_added = c.packs_added.load(Relaxed);
        // Packs and indexes; the snapshot object's own bytes cannot be in itself (the summary
        // returned below adds them).
        counts.bytes_added_packed = c.bytes_packed.load(Relaxed);
        let duration = self.started.elapsed();
        let file = SnapshotFile {
            v: 1,
            time_ns: self.time_ns,
            host: self.opts.host.clone().unwrap_or_else(lock::host_name),
            tags: self.opts.tags.clone(),
            paths: self.opts.paths.clone(),
            parent: self.opts.parent,
            tree: t.blobs.clone(),
            entries: t.entries,
            counts: counts.clone(),
            duration_ms: duration.as_millis() as u64,
        };
        // A prune may run once our lock looks stale to others: then blobs this backup
        // deduplicated against may be gone, and the snapshot must not be written.
        if let Some(l) = self.lock.lock().expect("lock slot").as_ref() {
            l.ensure_held()?;
        }
        let id = SnapshotId::random();
        let key = objects::snapshot_key(&id);
        let n = self.sh.repo.put_object_cached(&key, &file).await?;
        counts.bytes_added_packed += n;
        Ok(SnapshotSummary { id, counts, entries: t.entries, duration, warnings: self.sh.repo.unreadable_objects() })
    }

    /// Abandons the backup: no snapshot; stops new work, waits for the tasks in flight, and
    /// releases the lock. Packs already uploaded stay as unreferenced garbage (or, if an index
    /// object was written for them, as reusable data).
    pub async fn abort(self) -> Result<()> {
        self.sh.fail(&EngineError::Closed { reason: "the session was aborted".into() });
        self.sh.closed.store(true, Relaxed);
        self.sh.tasks.close();
        self.sh.tasks.wait().await;
        self.release_lock().await;
        Ok(())
    }

    async fn release_lock(&self) {
        let l = self.lock.lock().expect("lock slot").take();
        if let Some(l) = l {
            if let Err(e) = l.release().await {
                tracing::warn!(error = %e, "releasing the backup lock failed");
            }
        }
    }
}

/// Streams one file's content into the session. `write` in order, then `finish` for the
/// [`ContentRef`]. Dropping it without `finish` discards the file (chunks already stored stay
/// in the repository, harmlessly).
pub struct FileWriter {
    sh: Arc<Shared>,
    chunker: Option<StreamChunker>,
    pending: VecDeque<(JoinHandle<Result<BlobId>>, u32)>,
    done: Vec<ChunkRef>,
    size: u64,
    /// Set while a `write` is running: if that future is dropped midway, the writer is dead.
    poisoned: bool,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter").field("size", &self.size).finish_non_exhaustive()
    }
}

impl FileWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `data`. The `Bytes` is kept (sliced, not copied) until every chunk it is part of
    /// is sealed into a pack: less than `max_size` of it stays in the chunker after this
    /// returns, the rest is in chunk tasks. Waits while the session has too many chunks in
    /// flight (backpressure). Not cancel-safe: if this future is dropped before it completes, the
    /// writer fails every later call.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        self.enter()?;
        self.size += data.len() as u64;
        self.sh.counters.bytes_read.fetch_add(data.len() as u64, Relaxed);
        let cut = if data.len() < CDC_INLINE_MAX {
            let mut cut = Vec::new();
            self.chunker.as_mut().expect("present until finish").push(data, &*self.sh.chunk_bufs, &mut cut);
            cut
        } else {
            // Scanning a slot's worth of bytes takes ~0.4 ms: on a CPU worker, not on the async
            // thread that also serves the rings.
            let mut chunker = self.chunker.take().expect("present until finish");
            let pool = self.sh.chunk_bufs.clone();
            let (chunker, cut) = self.sh.repo.inner.cpu.run(move || {
                let mut cut = Vec::new();
                chunker.push(data, &*pool, &mut cut);
                (chunker, cut)
            })
            .await?;
            self.chunker = Some(chunker);
            cut
        };
        for c in cut {
            self.submit(c).await?;
        }
        self.poisoned = false;
        Ok(())
    }

    fn enter(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(EngineError::Closed { reason: "an earlier write on this file was cancelled or failed".into() });
        }
        self.sh.check_open()?;
        self.poisoned = true;
        Ok(())
    }

    async fn submit(&mut self, chunk: ChunkBytes) -> Result<()> {
        let permit =
            self.sh.chunk_slots.clone().acquire_owned().await.map_err(|_| EngineError::internal("chunk semaphore closed"))?;
        let len = chunk.len() as u32;
        let sh = self.sh.clone();
        let handle = self.sh.tasks.spawn(async move {
            let r = sh.store_blob(BlobKind::Data, chunk, None).await;
            drop(permit);
            if let Err(e) = &r {
                sh.fail(e);
            }
            r
        });
        self.pending.push_back((handle, len));
        while self.pending.front().is_some_and(|(h, _)| h.is_finished()) {
            self.reap_one().await?;
        }
        Ok(())
    }

    async fn reap_one(&mut self) -> Result<()> {
        let (h, len) = self.pending.pop_front().expect("caller checked");
        let id = h.await??;
        self.done.push(ChunkRef { id, len });
        Ok(())
    }

    /// Ends the file: cuts the last chunk, waits for all of its chunks to be stored (in a pack
    /// that will be uploaded before the snapshot is written), and returns its content ref.
    pub async fn finish(mut self) -> Result<ContentRef> {
        self.enter()?;
        let mut cut = Vec::new();
        self.chunker.take().expect("present until finish").finish(&*self.sh.chunk_bufs, &mut cut);
        for c in cut {
            self.submit(c).await?;
        }
        while !self.pending.is_empty() {
            self.reap_one().await?;
        }
        let chunks = std::mem::take(&mut self.done);
        if chunks.len() <= snapshot::INLINE_CHUNKS {
            return Ok(ContentRef::Chunks { size: self.size, chunks });
        }
        let list = snapshot::encode_chunk_list(&chunks);
        if list.len() > limits::MAX_CHUNK_LIST_BLOB as usize {
            return Err(EngineError::InvalidArgument { message: format!("a file of {} chunks is more than a chunk list holds", chunks.len()) });
        }
        let id = self.sh.store_blob(BlobKind::ChunkList, ChunkBytes::Owned(list), None).await.inspect_err(|e| self.sh.fail(e))?;
        Ok(ContentRef::List { size: self.size, count: chunks.len() as u64, list: id })
    }
}
