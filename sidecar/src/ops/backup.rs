//! The backup-engine ops' state and semantics, per session: the handles an agent holds
//! (repositories, backups, file writers, entry cursors) and what each op does with them, over
//! `shmpipe-engine`. Wire-agnostic on purpose: requests come in as bytes (JSON read from a
//! slot, or file data as `Bytes` leased from a slot without a copy) and results go out as bytes
//! for a slot, so the dispatcher's part is only decoding the entry and moving slots.
//! The opcodes are SPEC §7.3; `dispatch/backup.rs` decodes entries and moves slots.
//!
//! Encodings (the slot payloads of the backup ops):
//! - Repository open/init request: `{"password": s, "params"?: {"compression_level"?: n,
//!   "pack_size_mib"?: n, "kdf_m_kib"?: n, "kdf_t"?: n}}` (params only for init). The
//!   repository lives in the sidecar's configured store; an agent cannot name another place.
//! - Backup begin: `{"parent"?: hex id, "host"?: s, "tags"?: [s], "paths"?: [s],
//!   "compression_level"?: n (-7..=19, 0 off), "pack_size_mib"?: n (1..=128)` (these two
//!   override the repository's defaults for this backup), "time_ns"?: decimal (the snapshot's
//!   time; default now: `copy` keeps the original's)}.
//! - A content reference: its compact engine encoding as lowercase hex text (opaque to the
//!   agent, which only passes it back).
//! - Tree entries, both ways: JSON lines, one object per entry, [`WireEntry`]: 64-bit numbers
//!   (`t` mtime ns, `s` size, `n` inode, `d` dev) as decimal strings, because JSON numbers lose
//!   precision past 2^53 in JS; `x` (ADD_ENTRIES only) is `new` | `changed` | `unchanged`.
//! - Outputs (summary, snapshot list, check report) are JSON documents.
//!
//! Every unknown field is refused (`MALFORMED`), like the store ops' LIST request.
//!
//! Lifetime: everything here belongs to one session. Dropping [`BackupOps`] (the session
//! ended) drops open backups without committing — the engine's crash path, which leaves the
//! repository consistent (REPOSITORY.md, crash consistency) — and drops readers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shmpipe_engine::{
    BackupOptions, BackupSession, Change, CheckOptions, CheckReport, Compression, ContentReader, ContentRef, EntryKind,
    EntryReader, FileWriter, OpenOptions, RepoParams, Repository, SnapshotId, SnapshotSummary, TreeEntry,
};
use shmpipe_store::Store;

pub use super::error::{OpError, OpResult, CODE_BUSY, CODE_INVALID_HANDLE, CODE_MALFORMED, CODE_OUT_OF_RANGE};
use super::jobs::RunningJob;

/// Handle kinds ([`BackupOps::handle_kind`]).
pub const KIND_REPO: &str = "repository";
pub const KIND_BACKUP: &str = "backup";
pub const KIND_FILE: &str = "file";
pub const KIND_CURSOR: &str = "entry listing";
pub const KIND_JOB: &str = "job";


#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoRequest {
    password: String,
    #[serde(default)]
    params: Option<InitParams>,
    /// REPO_OPEN/REPO_INIT: no local metadata cache (the CLI's `--no-cache`). The cache's
    /// place is the sidecar's own choice (its environment), never the agent's.
    #[serde(default)]
    no_cache: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InitParams {
    compression_level: Option<i32>,
    pack_size_mib: Option<u32>,
    kdf_m_kib: Option<u32>,
    kdf_t: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BeginRequest {
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    compression_level: Option<i32>,
    #[serde(default)]
    pack_size_mib: Option<u32>,
    #[serde(default)]
    time_ns: Option<String>,
}

/// One tree entry on the wire (see the module comment).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEntry {
    pub p: String,
    /// `file` | `dir` | `symlink` | `other`.
    pub k: String,
    pub m: u32,
    pub u: u32,
    pub g: u32,
    pub t: String,
    pub s: String,
    pub n: String,
    pub d: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l: Option<String>,
    /// Content reference (hex), files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<String>,
    /// ADD_ENTRIES: the agent's comparison with the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// ctime ns (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct: Option<String>,
    /// A device's st_rdev (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    /// A file's link count when above 1 (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nl: Option<String>,
    /// Extended attributes: `[name (escaped), value (lowercase hex)]` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub a: Vec<(String, String)>,
    /// The file had holes at backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sp: bool,
}

/// Extended attributes an entry may carry, and the largest value (Linux's XATTR_SIZE_MAX).
const XATTRS_MAX: usize = 1024;
const XATTR_VALUE_MAX: usize = 65536;

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

fn parse_num<T: std::str::FromStr>(field: &str, v: &str) -> OpResult<T> {
    v.parse().map_err(|_| OpError::malformed(format!("entry field '{field}' is not a decimal integer: {v:?}")))
}

/// Hex text of a content reference.
pub fn encode_content(c: &ContentRef) -> String {
    hex::encode(c.encode())
}

/// Parses [`encode_content`]'s text.
pub fn decode_content(text: &[u8]) -> OpResult<ContentRef> {
    let bytes = hex::decode(text.trim_ascii()).map_err(|_| OpError::malformed("content reference is not hex"))?;
    Ok(ContentRef::decode(&bytes)?)
}

impl WireEntry {
    pub fn from_entry(e: &TreeEntry) -> Self {
        Self {
            p: e.path.clone(),
            k: kind_name(e.kind).to_owned(),
            m: e.mode,
            u: e.uid,
            g: e.gid,
            t: e.mtime_ns.to_string(),
            s: e.size.to_string(),
            n: e.inode.to_string(),
            d: e.dev.to_string(),
            l: e.target.clone(),
            c: e.content.as_ref().map(encode_content),
            x: None,
            ct: e.ctime_ns.map(|t| t.to_string()),
            r: e.rdev.map(|r| r.to_string()),
            nl: e.links.map(|n| n.to_string()),
            a: e.xattrs.iter().map(|x| (x.name.clone(), hex::encode(&x.value))).collect(),
            sp: e.sparse,
        }
    }

    /// The engine's entry and the agent's change (`New` when `x` is absent).
    pub fn into_entry(self) -> OpResult<(TreeEntry, Change)> {
        let kind = match self.k.as_str() {
            "file" => EntryKind::File,
            "dir" => EntryKind::Dir,
            "symlink" => EntryKind::Symlink,
            "other" => EntryKind::Other,
            k => return Err(OpError::malformed(format!("unknown entry kind {k:?}"))),
        };
        let change = match self.x.as_deref() {
            None | Some("new") => Change::New,
            Some("changed") => Change::Changed,
            Some("unchanged") => Change::Unchanged,
            Some(x) => return Err(OpError::malformed(format!("unknown change {x:?}"))),
        };
        // Names are checked after decoding (an escaped `..` or `/` is as bad as a plain one):
        // an honest sidecar never stores a path restore would have to refuse.
        if let Some(why) = shmpipe_engine::snapshot::path_problem(&self.p) {
            return Err(OpError::malformed(format!("entry {:?}: {why}", self.p)));
        }
        if let Some(why) = self.l.as_deref().and_then(shmpipe_engine::snapshot::target_problem) {
            return Err(OpError::malformed(format!("entry {:?}: {why}", self.p)));
        }
        if self.l.is_some() != (kind == EntryKind::Symlink) {
            return Err(OpError::malformed(format!("entry {:?}: a target is required for symlinks and only for symlinks", self.p)));
        }
        if self.c.is_some() != (kind == EntryKind::File) {
            return Err(OpError::malformed(format!("entry {:?}: a content reference is required for files and only for files", self.p)));
        }
        if self.r.is_some() && kind != EntryKind::Other || (self.nl.is_some() || self.sp) && kind != EntryKind::File {
            return Err(OpError::malformed(format!("entry {:?}: r is for devices, nl and sp for files", self.p)));
        }
        if self.a.len() > XATTRS_MAX {
            return Err(OpError::malformed(format!("entry {:?}: more than {XATTRS_MAX} extended attributes", self.p)));
        }
        let mut xattrs = Vec::with_capacity(self.a.len());
        for (name, value) in self.a {
            let ok = shmpipe_engine::snapshot::unescape_name(&name).is_some_and(|b| !b.is_empty() && !b.contains(&0));
            let value = hex::decode(&value).ok().filter(|v| v.len() <= XATTR_VALUE_MAX);
            match (ok, value) {
                (true, Some(value)) => xattrs.push(shmpipe_engine::snapshot::Xattr { name, value }),
                _ => return Err(OpError::malformed(format!("entry {:?}: extended attribute {name:?} is not a name and a hex value", self.p))),
            }
        }
        let content = self.c.map(|c| decode_content(c.as_bytes())).transpose()?;
        let entry = TreeEntry {
            ctime_ns: self.ct.as_deref().map(|t| parse_num("ct", t)).transpose()?,
            rdev: self.r.as_deref().map(|r| parse_num("r", r)).transpose()?,
            links: self.nl.as_deref().map(|n| parse_num("nl", n)).transpose()?,
            xattrs,
            sparse: self.sp,
            mtime_ns: parse_num("t", &self.t)?,
            size: parse_num("s", &self.s)?,
            inode: parse_num("n", &self.n)?,
            dev: parse_num("d", &self.d)?,
            path: self.p,
            kind,
            mode: self.m,
            uid: self.u,
            gid: self.g,
            target: self.l,
            content,
        };
        Ok((entry, change))
    }
}

/// Parses a batch of JSON-lines entries (blank lines allowed).
pub fn parse_entries(batch: &[u8]) -> OpResult<Vec<(TreeEntry, Change)>> {
    let text = std::str::from_utf8(batch).map_err(|_| OpError::malformed("entries are not UTF-8"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let w: WireEntry = serde_json::from_str(line).map_err(|e| OpError::malformed(format!("entry line {}: {e}", i + 1)))?;
            w.into_entry()
        })
        .collect()
}

fn parse_json<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> OpResult<T> {
    serde_json::from_slice(bytes).map_err(|e| OpError::malformed(format!("{what}: {e}")))
}

fn parse_id(text: &str) -> OpResult<SnapshotId> {
    text.parse().map_err(|_| OpError::malformed(format!("not a snapshot id: {text:?}")))
}

fn summary_json(s: &SnapshotSummary) -> Vec<u8> {
    let doc = serde_json::json!({
        "id": s.id.to_hex(),
        "entries": s.entries,
        "duration_ms": u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX),
        "counts": s.counts,
        "warnings": s.warnings,
    });
    doc.to_string().into_bytes()
}


/// CHECK's `arg1`, SPEC §7.3: its low byte says what data to read — 0 none, 1 all, 2 group
/// `n/t`, 3 a share, 4 a size — and the bits above it the parameter (`p = arg1 >> 8`: for a
/// group n = p >> 20 and t = p & 0xFFFFF; a share in parts per million; a size in bytes).
/// `None`: malformed.
pub fn check_read(arg1: u64) -> Option<(bool, Option<shmpipe_engine::PackSubset>)> {
    use shmpipe_engine::PackSubset;
    let p = arg1 >> 8;
    let subset = match arg1 & 0xff {
        0 | 1 if p != 0 => return None,
        0 => return Some((false, None)),
        1 => return Some((true, None)),
        2 => PackSubset::Group { n: u32::try_from(p >> 20).ok()?, t: (p & 0xF_FFFF) as u32 },
        3 => PackSubset::PartsPerMillion(u32::try_from(p).ok()?),
        4 => PackSubset::Bytes(p),
        _ => return None,
    };
    subset.validate().ok()?;
    Some((true, Some(subset)))
}

/// Items of each list a check report carries at most (the report must fit one slot; the
/// counts say how many there were).
const REPORT_LIST_MAX: usize = 1000;

fn check_json(r: &CheckReport) -> Vec<u8> {
    let issues = |v: &[shmpipe_engine::CheckIssue]| {
        v.iter().take(REPORT_LIST_MAX).map(|i| serde_json::json!({"object": i.object, "message": i.message})).collect::<Vec<_>>()
    };
    let truncated = [r.errors.len(), r.infos.len(), r.affected_files.len()].iter().any(|n| *n > REPORT_LIST_MAX);
    serde_json::json!({
        "ok": r.is_ok(),
        "truncated": truncated,
        "error_count": r.errors.len(),
        "affected_file_count": r.affected_files.len(),
        "errors": issues(&r.errors),
        "infos": issues(&r.infos),
        "affected_files": r.affected_files.iter().take(REPORT_LIST_MAX).map(|a| serde_json::json!({"snapshot": a.snapshot.to_hex(), "path": a.path, "reason": a.reason})).collect::<Vec<_>>(),
        "index_objects": r.index_objects,
        "packs": r.packs,
        "blobs": r.blobs,
        "blobs_verified": r.blobs_verified,
        "bytes_read": r.bytes_read,
        "snapshots": r.snapshots,
        "entries": r.entries,
    })
    .to_string()
    .into_bytes()
}

/// A file being written: the writer is taken out for each write (writes of one file are
/// sequential; a second concurrent one is refused rather than queued).
type WriterCell = Arc<Mutex<Option<FileWriter>>>;

/// An open entry listing: the engine's reader and the entry that did not fit the last page.
struct Cursor {
    reader: EntryReader,
    pending: Option<TreeEntry>,
    done: bool,
}

enum Handle {
    Repo(Repository),
    Backup(Arc<BackupSession>),
    File { backup: u64, writer: WriterCell },
    Entries(Arc<tokio::sync::Mutex<Cursor>>),
    Job(Arc<tokio::sync::Mutex<RunningJob>>),
}

impl Handle {
    fn kind(&self) -> &'static str {
        match self {
            Self::Repo(_) => KIND_REPO,
            Self::Backup(_) => KIND_BACKUP,
            Self::File { .. } => KIND_FILE,
            Self::Entries(_) => KIND_CURSOR,
            Self::Job(_) => KIND_JOB,
        }
    }
}

/// One session's backup state (see the module comment).
pub struct BackupOps {
    store: Store,
    workers: usize,
    uploads: usize,
    max_handles: usize,
    /// Accept Argon2 costs below the floor at init and for new keys: only when the sidecar's
    /// environment says `SHMPIPE_TEST_ALLOW_WEAK_KDF=1` (test suites: a 64 MiB KDF per
    /// repository would cost minutes), and in this crate's unit tests. An agent cannot ask.
    allow_weak_kdf: bool,
    next: AtomicU64,
    handles: Mutex<HashMap<u64, Handle>>,
}

impl BackupOps {
    /// `workers`: the engine's CPU budget (SHMPIPE_WORKER_THREADS); `uploads`: packs a backup
    /// uploads at once (SHMPIPE_PACK_UPLOADS); `max_handles`: open handles a session may hold
    /// (the session's in-flight limit, like the store ops).
    pub fn new(store: Store, workers: usize, uploads: usize, max_handles: usize) -> Self {
        Self {
            store,
            workers: workers.max(1),
            uploads: uploads.max(1),
            max_handles,
            allow_weak_kdf: cfg!(test) || std::env::var_os("SHMPIPE_TEST_ALLOW_WEAK_KDF").is_some_and(|v| v == "1"),
            next: AtomicU64::new(1),
            handles: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        // A panic while holding the lock leaves plain map data; keep serving.
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, h: Handle) -> OpResult<u64> {
        let mut t = self.table();
        if t.len() >= self.max_handles {
            return Err(OpError::new(CODE_BUSY, format!("too many open handles (limit {})", self.max_handles)));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        t.insert(id, h);
        Ok(id)
    }

    fn wrong(&self, id: u64, want: &str) -> OpError {
        match self.table().get(&id) {
            None => OpError::new(CODE_INVALID_HANDLE, format!("no open handle {id}")),
            Some(h) => OpError::new(CODE_INVALID_HANDLE, format!("handle {id} is a {}, not a {want}", h.kind())),
        }
    }

    fn repo(&self, id: u64) -> OpResult<Repository> {
        if let Some(Handle::Repo(r)) = self.table().get(&id) {
            return Ok(r.clone());
        }
        Err(self.wrong(id, "repository"))
    }

    fn backup(&self, id: u64) -> OpResult<Arc<BackupSession>> {
        if let Some(Handle::Backup(s)) = self.table().get(&id) {
            return Ok(s.clone());
        }
        Err(self.wrong(id, "backup"))
    }

    /// The kind of an open handle (`repository`, `backup`, `file`, `entry listing`), for the
    /// dispatcher's up-front handle check (SPEC §7.3: a wrong handle is refused before the
    /// op takes its slot).
    pub fn handle_kind(&self, id: u64) -> Option<&'static str> {
        self.table().get(&id).map(Handle::kind)
    }

    /// Accepts KDF costs below the floor: for tests that embed the ops (integration tests
    /// link the library without `cfg(test)`); the sidecar binary only via its environment.
    pub fn allowing_weak_kdf_for_tests(mut self) -> Self {
        self.allow_weak_kdf = true;
        self
    }

    /// Open handles (any kind).
    pub fn open_handles(&self) -> usize {
        self.table().len()
    }

    /// REPO_INIT: creates a repository in the store and opens it.
    pub async fn repo_init(&self, request: &[u8]) -> OpResult<u64> {
        let req: RepoRequest = parse_json("repository request", request)?;
        let p = req.params.unwrap_or_default();
        let mut params = RepoParams::recommended();
        if let Some(level) = p.compression_level {
            if !(-7..=19).contains(&level) {
                return Err(OpError::malformed("compression_level must be in -7..=19"));
            }
            params.compression = if level == 0 { Compression::Off } else { Compression::Zstd(level) };
        }
        if let Some(mib) = p.pack_size_mib {
            if !(1..=128).contains(&mib) {
                return Err(OpError::malformed("pack_size_mib must be in 1..=128"));
            }
            params.pack_size = mib << 20;
        }
        if let Some(m) = p.kdf_m_kib {
            if !(64..=(4 << 20)).contains(&m) {
                return Err(OpError::malformed("kdf_m_kib must be in 64..=4194304"));
            }
            params.kdf.m_kib = m;
        }
        if let Some(t) = p.kdf_t {
            if !(1..=64).contains(&t) {
                return Err(OpError::malformed("kdf_t must be in 1..=64"));
            }
            params.kdf.t = t;
        }
        params.allow_weak_kdf = self.allow_weak_kdf;
        let opts = self.open_options(req.no_cache);
        let repo = Repository::init_with(self.store.clone(), req.password.as_bytes(), params, opts).await?;
        self.insert(Handle::Repo(repo))
    }

    /// REPO_OPEN.
    pub async fn repo_open(&self, request: &[u8]) -> OpResult<u64> {
        let req: RepoRequest = parse_json("repository request", request)?;
        if req.params.is_some() {
            return Err(OpError::malformed("params are for REPO_INIT only"));
        }
        let repo = Repository::open_with(self.store.clone(), req.password.as_bytes(), self.open_options(req.no_cache)).await?;
        self.insert(Handle::Repo(repo))
    }

    /// How repositories are opened: the sidecar's workers, and the metadata cache under
    /// `$SHMPIPE_CACHE_DIR` (`off`: none), else `$XDG_CACHE_HOME/shmpipe` or
    /// `~/.cache/shmpipe` (REPOSITORY.md §Cache), unless the request says `no_cache`.
    fn open_options(&self, no_cache: bool) -> OpenOptions {
        let cache_dir = match std::env::var_os("SHMPIPE_CACHE_DIR") {
            _ if no_cache => None,
            Some(v) if v == "off" => None,
            Some(v) if std::path::Path::new(&v).is_absolute() => Some(std::path::PathBuf::from(v)),
            _ => shmpipe_engine::cache::default_base(),
        };
        OpenOptions { workers: self.workers, cache_dir }
    }

    /// BACKUP_BEGIN on an open repository.
    pub async fn backup_begin(&self, repo: u64, request: &[u8]) -> OpResult<u64> {
        let repo = self.repo(repo)?;
        let req: BeginRequest = parse_json("backup request", request)?;
        let parent = req.parent.as_deref().map(parse_id).transpose()?;
        let compression = match req.compression_level {
            None => None,
            Some(0) => Some(Compression::Off),
            Some(level) if (-7..=19).contains(&level) => Some(Compression::Zstd(level)),
            Some(_) => return Err(OpError::malformed("compression_level must be in -7..=19")),
        };
        let pack_size = match req.pack_size_mib {
            None => None,
            Some(mib) if (1..=128).contains(&mib) => Some(mib << 20),
            Some(_) => return Err(OpError::malformed("pack_size_mib must be in 1..=128")),
        };
        let time_ns = req.time_ns.as_deref().map(|t| t.parse::<i64>().map_err(|_| OpError::malformed("time_ns must be a decimal integer (ns since the epoch)"))).transpose()?;
        let session = repo
            .begin_backup(BackupOptions {
                parent,
                host: req.host,
                tags: req.tags,
                paths: req.paths,
                compression,
                pack_size,
                time_ns,
                max_uploads: self.uploads,
                ..Default::default()
            })
            .await?;
        self.insert(Handle::Backup(Arc::new(session)))
    }

    /// FILE_OPEN: a writer for one file of a backup.
    pub fn file_open(&self, backup: u64) -> OpResult<u64> {
        let writer = self.backup(backup)?.file_writer()?;
        self.insert(Handle::File { backup, writer: Arc::new(Mutex::new(Some(writer))) })
    }

    fn writer(&self, file: u64) -> OpResult<WriterCell> {
        if let Some(Handle::File { writer, .. }) = self.table().get(&file) {
            return Ok(writer.clone());
        }
        Err(self.wrong(file, "file"))
    }

    /// FILE_WRITE: appends `data` (a slot lease; dropped once the engine has the bytes).
    /// Returns the file's size so far.
    pub async fn file_write(&self, file: u64, data: Bytes) -> OpResult<u64> {
        let cell = self.writer(file)?;
        let taken = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut w) = taken else {
            return Err(OpError::new(CODE_BUSY, format!("file {file} already has a write in progress")));
        };
        let result = w.write(data).await;
        let size = w.size();
        // A failed write poisons the writer (engine contract); keep it so FILE_FINISH reports it.
        *cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        result?;
        Ok(size)
    }

    /// FILE_FINISH: the file's content reference (hex) and size; the handle is closed whatever
    /// the outcome.
    pub async fn file_finish(&self, file: u64) -> OpResult<(String, u64)> {
        let cell = self.writer(file)?;
        let taken = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(w) = taken else {
            return Err(OpError::new(CODE_BUSY, format!("file {file} has a write in progress")));
        };
        self.table().remove(&file);
        let content = w.finish().await?;
        Ok((encode_content(&content), content.size()))
    }

    /// FILE_PUT: a whole small file in one go; its content reference (hex) and size. Every
    /// slice of `data` is dropped before this returns (its chunks are sealed).
    pub async fn file_put(&self, backup: u64, data: Bytes) -> OpResult<(String, u64)> {
        let mut w = self.backup(backup)?.file_writer()?;
        if !data.is_empty() {
            w.write(data).await?;
        }
        let content = w.finish().await?;
        Ok((encode_content(&content), content.size()))
    }

    /// ADD_ENTRIES: a JSON-lines batch; returns how many were added. The batch is checked as a
    /// whole before any entry is added.
    pub async fn add_entries(&self, backup: u64, batch: &[u8]) -> OpResult<u64> {
        let session = self.backup(backup)?;
        let entries = parse_entries(batch)?;
        let n = entries.len() as u64;
        for (e, change) in entries {
            session.add_entry(e, change).await?;
        }
        Ok(n)
    }

    /// Removes a backup and its open files from the table; the session is handed back only
    /// when no other op is using it.
    fn take_backup(&self, backup: u64) -> OpResult<BackupSession> {
        let mut t = self.table();
        let Some(Handle::Backup(s)) = t.remove(&backup) else {
            drop(t);
            return Err(self.wrong(backup, "backup"));
        };
        match Arc::try_unwrap(s) {
            Ok(s) => {
                t.retain(|_, h| !matches!(h, Handle::File { backup: b, .. } if *b == backup));
                Ok(s)
            }
            Err(s) => {
                t.insert(backup, Handle::Backup(s));
                Err(OpError::new(CODE_BUSY, format!("backup {backup} still has ops running; wait for them first")))
            }
        }
    }

    /// BACKUP_COMMIT: the summary JSON; the handle is closed whatever the outcome.
    pub async fn backup_commit(&self, backup: u64) -> OpResult<Vec<u8>> {
        let session = self.take_backup(backup)?;
        Ok(summary_json(&session.commit().await?))
    }

    /// BACKUP_ABORT.
    pub async fn backup_abort(&self, backup: u64) -> OpResult<()> {
        Ok(self.take_backup(backup)?.abort().await?)
    }

    /// Closes a repository, file, entry-listing or job handle (a backup: use BACKUP_ABORT).
    /// Closing a running job cancels it.
    pub fn close(&self, handle: u64) -> OpResult<()> {
        let mut t = self.table();
        match t.get(&handle) {
            Some(Handle::Backup(_)) | None => {
                drop(t);
                Err(self.wrong(handle, "repository, file, entry listing or job"))
            }
            Some(_) => {
                t.remove(&handle);
                Ok(())
            }
        }
    }

    /// SNAPSHOTS: `{"snapshots": [...]}`, oldest first.
    pub async fn snapshots(&self, repo: u64) -> OpResult<Vec<u8>> {
        let repo = self.repo(repo)?;
        repo.refresh_index().await?;
        let list = repo.list_snapshots().await?;
        Ok(serde_json::json!({ "snapshots": list.iter().map(super::jobs::snapshots::snapshot_json).collect::<Vec<_>>() }).to_string().into_bytes())
    }

    /// ENTRIES_OPEN: a cursor over a snapshot's entries (`latest` = the newest snapshot), and
    /// the snapshot's id (hex).
    pub async fn entries_open(&self, repo: u64, snapshot: &[u8]) -> OpResult<(u64, String)> {
        let repo = self.repo(repo)?;
        let text = std::str::from_utf8(snapshot).map_err(|_| OpError::malformed("snapshot id is not UTF-8"))?.trim();
        let id = if text == "latest" {
            repo.list_snapshots().await?.last().map(|s| s.id).ok_or_else(|| OpError::new("SHMPIPE_E_NOT_FOUND", "the repository has no snapshots"))?
        } else {
            parse_id(text)?
        };
        let reader = repo.entries_of(&id).await?;
        let cursor = self.insert(Handle::Entries(Arc::new(tokio::sync::Mutex::new(Cursor { reader, pending: None, done: false }))))?;
        Ok((cursor, id.to_hex()))
    }

    /// ENTRIES_NEXT: the next page of JSON lines, at most `max_bytes`, and whether the listing
    /// is complete (then the handle is closed). `OUT_OF_RANGE` if one entry alone does not fit.
    pub async fn entries_next(&self, cursor: u64, max_bytes: usize) -> OpResult<(Vec<u8>, bool)> {
        // Bound first: the table guard must be gone before `wrong` locks it again.
        let found = match self.table().get(&cursor) {
            Some(Handle::Entries(c)) => Some(c.clone()),
            _ => None,
        };
        let cell = found.ok_or_else(|| self.wrong(cursor, "entry listing"))?;
        let mut c = cell.try_lock().map_err(|_| OpError::new(CODE_BUSY, format!("listing {cursor} is being read")))?;
        let mut out = Vec::new();
        while !c.done {
            let e = match c.pending.take() {
                Some(e) => e,
                None => match c.reader.next().await? {
                    Some(e) => e,
                    None => {
                        c.done = true;
                        break;
                    }
                },
            };
            let mut line = serde_json::to_vec(&WireEntry::from_entry(&e)).map_err(|e| OpError::new("SHMPIPE_E_INTERNAL", e.to_string()))?;
            line.push(b'\n');
            if out.len() + line.len() > max_bytes {
                if out.is_empty() {
                    return Err(OpError::new(CODE_OUT_OF_RANGE, format!("entry {:?} needs {} bytes", e.path, line.len())));
                }
                c.pending = Some(e);
                break;
            }
            out.extend_from_slice(&line);
        }
        let done = c.done;
        drop(c);
        if done {
            self.table().remove(&cursor);
        }
        Ok((out, done))
    }

    /// CONTENT_READ: a reader of a file's verified plaintext, in order (the dispatcher streams
    /// it into slots).
    pub fn content_reader(&self, repo: u64, content: &[u8]) -> OpResult<ContentReader> {
        let repo = self.repo(repo)?;
        Ok(repo.open_content(&decode_content(content)?))
    }

    /// JOB_START: starts the job the request names on an open repository (`jobs`).
    pub fn job_start(&self, repo: u64, request: &[u8]) -> OpResult<u64> {
        let repo = self.repo(repo)?;
        if self.open_handles() >= self.max_handles {
            return Err(OpError::new(CODE_BUSY, format!("too many open handles (limit {})", self.max_handles)));
        }
        let job = super::jobs::start(repo, request)?;
        self.insert(Handle::Job(Arc::new(tokio::sync::Mutex::new(job))))
    }

    /// JOB_NEXT: the job's next lines (at most `max_bytes`), and whether it finished (the
    /// handle is then closed). A failed job's error closes the handle too.
    pub async fn job_next(&self, handle: u64, max_bytes: usize) -> OpResult<(Vec<u8>, bool)> {
        let found = match self.table().get(&handle) {
            Some(Handle::Job(j)) => Some(j.clone()),
            _ => None,
        };
        let cell = found.ok_or_else(|| self.wrong(handle, "job"))?;
        let mut job = cell.try_lock().map_err(|_| OpError::new(CODE_BUSY, format!("job {handle} is being read")))?;
        let r = job.next_page(max_bytes).await;
        drop(job);
        match &r {
            Ok((_, false)) | Err(OpError { code: CODE_OUT_OF_RANGE, .. }) => {}
            _ => {
                self.table().remove(&handle);
            }
        }
        r
    }

    /// CHECK: the report JSON (`ok` false when the repository is damaged).
    pub async fn check(&self, repo: u64, read_data: bool) -> OpResult<Vec<u8>> {
        self.check_subset(repo, read_data, None).await
    }

    /// CHECK reading only the packs `subset` selects (`check --read-data-subset`).
    pub async fn check_subset(&self, repo: u64, read_data: bool, subset: Option<shmpipe_engine::PackSubset>) -> OpResult<Vec<u8>> {
        let repo = self.repo(repo)?;
        Ok(check_json(&repo.check_subset(CheckOptions { read_data }, subset).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmpipe_store::{StoreConfig, StoreOptions};

    const INIT: &[u8] = br#"{"password":"pw","params":{"kdf_m_kib":64,"kdf_t":1}}"#;

    fn ops(max_handles: usize) -> BackupOps {
        let store = Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap();
        BackupOps::new(store, 2, 1, max_handles)
    }

    fn entry(path: &str, kind: &str, content: Option<&str>, x: &str) -> String {
        sized(path, kind, content, 0, x)
    }

    fn sized(path: &str, kind: &str, content: Option<&str>, size: u64, x: &str) -> String {
        let mut w = WireEntry {
            p: path.into(),
            k: kind.into(),
            m: 0o100644,
            u: 1,
            g: 2,
            t: "1700000000123456789".into(),
            s: size.to_string(),
            n: "18446744073709551615".into(),
            d: "66".into(),
            l: None,
            c: content.map(str::to_owned),
            x: Some(x.into()),
            ..WireEntry::default()
        };
        if kind == "symlink" {
            w.l = Some("target".into());
        }
        serde_json::to_string(&w).unwrap()
    }

    fn data(n: usize, seed: u8) -> Bytes {
        Bytes::from((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect::<Vec<_>>())
    }

    async fn read_all(o: &BackupOps, repo: u64, content: &str) -> Vec<u8> {
        o.content_reader(repo, content.as_bytes()).unwrap().read_to_end().await.unwrap()
    }

    async fn list_all(o: &BackupOps, repo: u64, snap: &str, page: usize) -> Vec<WireEntry> {
        let (cur, _) = o.entries_open(repo, snap.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        loop {
            let (bytes, done) = o.entries_next(cur, page).await.unwrap();
            assert!(bytes.len() <= page);
            for l in std::str::from_utf8(&bytes).unwrap().lines() {
                all.push(serde_json::from_str(l).unwrap());
            }
            if done {
                return all;
            }
        }
    }

    #[tokio::test]
    async fn backup_and_read_back_through_handles() {
        let o = ops(64);
        let repo = o.repo_init(INIT).await.unwrap();
        let b = o.backup_begin(repo, br#"{"host":"h","tags":["t"],"paths":["src"]}"#).await.unwrap();
        let small = o.file_put(b, data(1000, 1)).await.unwrap().0;
        let empty = o.file_put(b, Bytes::new()).await.unwrap().0;
        let f = o.file_open(b).unwrap();
        let big = data(3 << 20, 2);
        for part in [big.slice(..1 << 20), big.slice(1 << 20..)] {
            o.file_write(f, part).await.unwrap();
        }
        let big_ref = o.file_finish(f).await.unwrap().0;
        assert_eq!(o.file_write(f, Bytes::new()).await.unwrap_err().code, CODE_INVALID_HANDLE, "finish closes the file");
        let batch = [
            entry("src", "dir", None, "new"),
            sized("src/small", "file", Some(&small), 1000, "new"),
            entry("src/empty", "file", Some(&empty), "new"),
            sized("src/big", "file", Some(&big_ref), 3 << 20, "changed"),
            entry("src/link", "symlink", None, "new"),
        ]
        .join("\n");
        assert_eq!(o.add_entries(b, batch.as_bytes()).await.unwrap(), 5);
        let summary: serde_json::Value = serde_json::from_slice(&o.backup_commit(b).await.unwrap()).unwrap();
        assert_eq!(summary["entries"], 5);
        assert_eq!(summary["counts"]["files_new"], 2);
        assert_eq!(summary["counts"]["files_changed"], 1);
        assert_eq!(summary["counts"]["bytes_read"], 1000 + (3 << 20));
        assert_eq!(o.backup_commit(b).await.unwrap_err().code, CODE_INVALID_HANDLE);

        let list: serde_json::Value = serde_json::from_slice(&o.snapshots(repo).await.unwrap()).unwrap();
        let id = list["snapshots"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(id, summary["id"].as_str().unwrap());
        assert_eq!(list["snapshots"][0]["paths"][0], "src");

        // Small pages still return every entry, in order, with 64-bit numbers intact. The page
        // is as small as the longest entry line: a content ref's length depends on the chunk
        // count, which varies with the repository's random gear seed.
        let longest = {
            let (cur, _) = o.entries_open(repo, b"latest").await.unwrap();
            let (bytes, done) = o.entries_next(cur, 1 << 20).await.unwrap();
            assert!(done);
            std::str::from_utf8(&bytes).unwrap().lines().map(|l| l.len() + 1).max().unwrap()
        };
        let entries = list_all(&o, repo, "latest", longest).await;
        assert_eq!(entries.iter().map(|e| e.p.as_str()).collect::<Vec<_>>(), ["src", "src/small", "src/empty", "src/big", "src/link"]);
        assert_eq!(entries[1].n, "18446744073709551615");
        assert_eq!(entries[1].t, "1700000000123456789");
        assert_eq!(entries[4].l.as_deref(), Some("target"));
        assert_eq!(list_all(&o, repo, &id, 1 << 20).await, entries);
        assert_eq!(read_all(&o, repo, entries[1].c.as_deref().unwrap()).await, data(1000, 1));
        assert_eq!(read_all(&o, repo, entries[3].c.as_deref().unwrap()).await, big);
        assert!(read_all(&o, repo, entries[2].c.as_deref().unwrap()).await.is_empty());

        // An incremental backup records the big file by reference; the repository grows only
        // by the new snapshot and tree.
        let b2 = o.backup_begin(repo, format!(r#"{{"parent":"{id}"}}"#).as_bytes()).await.unwrap();
        o.add_entries(b2, sized("src/big", "file", Some(&big_ref), 3 << 20, "unchanged").as_bytes()).await.unwrap();
        let s2: serde_json::Value = serde_json::from_slice(&o.backup_commit(b2).await.unwrap()).unwrap();
        assert_eq!(s2["counts"]["files_unchanged"], 1);
        assert_eq!(s2["counts"]["bytes_read"], 0);
        assert!(s2["counts"]["blobs_added"].as_u64().unwrap() <= 1, "only the new tree blob: {s2}");
        assert!(s2["counts"]["bytes_added_packed"].as_u64().unwrap() < 4096, "{s2}");

        let report: serde_json::Value = serde_json::from_slice(&o.check(repo, true).await.unwrap()).unwrap();
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["snapshots"], 2);
        o.close(repo).unwrap();
        assert_eq!(o.open_handles(), 0);
    }

    #[tokio::test]
    async fn repository_errors_have_their_codes() {
        let o = ops(8);
        assert_eq!(o.repo_open(br#"{"password":"pw"}"#).await.unwrap_err().code, "SHMPIPE_E_NOT_A_REPOSITORY");
        o.repo_init(INIT).await.unwrap();
        assert_eq!(o.repo_init(INIT).await.unwrap_err().code, "SHMPIPE_E_REPO_EXISTS");
        let e = o.repo_open(br#"{"password":"nope"}"#).await.unwrap_err();
        assert_eq!(e.code, "SHMPIPE_E_WRONG_PASSWORD");
        assert!(e.message.contains("wrong password"), "{}", e.message);
        o.repo_open(br#"{"password":"pw"}"#).await.unwrap();
    }

    #[tokio::test]
    async fn malformed_requests_are_refused_before_anything_changes() {
        let o = ops(8);
        for bad in [&b"{"[..], br#"{"password":"pw","extra":1}"#, br#"{"password":"pw","params":{"kdf_t":0}}"#, br#"{"password":"pw","params":{"pack_size_mib":1000}}"#] {
            assert_eq!(o.repo_init(bad).await.unwrap_err().code, CODE_MALFORMED, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(o.repo_open(INIT).await.unwrap_err().code, CODE_MALFORMED, "params are for init only");
        let repo = o.repo_init(INIT).await.unwrap();
        assert_eq!(o.backup_begin(repo, br#"{"parent":"xyz"}"#).await.unwrap_err().code, CODE_MALFORMED);
        assert_eq!(o.backup_begin(repo, br#"{"bogus":true}"#).await.unwrap_err().code, CODE_MALFORMED);
        let b = o.backup_begin(repo, b"{}").await.unwrap();
        let content = o.file_put(b, data(10, 3)).await.unwrap().0;
        let bad_batches = [
            format!("{}\nnot json", entry("a", "dir", None, "new")),
            entry("a", "fifo", None, "new"),
            entry("a", "file", None, "new"),
            entry("a", "dir", Some(&content), "new"),
            entry("a", "file", Some("zz"), "new"),
            sized("a", "file", Some(&content), 10, "maybe"),
            entry("a", "dir", None, "new").replace("\"t\":\"1700000000123456789\"", "\"t\":1"),
        ];
        for batch in bad_batches {
            assert_eq!(o.add_entries(b, batch.as_bytes()).await.unwrap_err().code, CODE_MALFORMED, "{batch}");
        }
        // Nothing of the refused batches went in: the first one's valid line included.
        o.add_entries(b, entry("ok", "dir", None, "new").as_bytes()).await.unwrap();
        let s: serde_json::Value = serde_json::from_slice(&o.backup_commit(b).await.unwrap()).unwrap();
        assert_eq!(s["entries"], 1);
    }

    /// What a hostile agent (or a buggy one) could put in a path: every one is refused before
    /// anything of the batch is added, escaped forms included.
    #[tokio::test]
    async fn hostile_entry_names_are_refused_after_decoding() {
        let o = ops(8);
        let repo = o.repo_init(INIT).await.unwrap();
        let b = o.backup_begin(repo, b"{}").await.unwrap();
        for bad in [
            "..", "a/..", "a/../../etc", ".", "a/./b", "/etc/passwd", "a//b", "a/", "", "\\x2e\\x2e", "a/\\x2e\\x2e/b", "a\\x2fb",
            "a\\x00", "\\x61", "a\\q",
        ] {
            let batch = format!("{}\n{}", entry("ok", "dir", None, "new"), entry(bad, "dir", None, "new"));
            let e = o.add_entries(b, batch.as_bytes()).await.unwrap_err();
            assert_eq!(e.code, CODE_MALFORMED, "{bad:?}: {}", e.message);
        }
        let bad_target = entry("l", "symlink", None, "new").replace("\"l\":\"target\"", "\"l\":\"a\\\\x00\"");
        assert_eq!(o.add_entries(b, bad_target.as_bytes()).await.unwrap_err().code, CODE_MALFORMED, "{bad_target}");
        let no_target = entry("l", "symlink", None, "new").replace(",\"l\":\"target\"", "");
        assert_eq!(o.add_entries(b, no_target.as_bytes()).await.unwrap_err().code, CODE_MALFORMED, "{no_target}");
        // Literal backslashes, and names that only look like escapes once escaped, are fine.
        let fine = ["\\\\x2e\\\\x2e", "a\\\\x2fb", "back\\\\slash", "x\\xff", "..hidden"].map(|p| entry(p, "dir", None, "new")).join("\n");
        assert_eq!(o.add_entries(b, fine.as_bytes()).await.unwrap(), 5);
        let s: serde_json::Value = serde_json::from_slice(&o.backup_commit(b).await.unwrap()).unwrap();
        assert_eq!(s["entries"], 5, "nothing of a refused batch went in");
    }

    /// ctime, rdev, link count, xattrs and the sparse flag go in and come out as given; an
    /// entry without them lists without them (older snapshots read the same).
    #[tokio::test]
    async fn optional_entry_fields_round_trip() {
        let o = ops(8);
        let repo = o.repo_init(INIT).await.unwrap();
        let b = o.backup_begin(repo, b"{}").await.unwrap();
        let content = o.file_put(b, data(10, 3)).await.unwrap().0;
        let mut f: WireEntry = serde_json::from_str(&sized("f", "file", Some(&content), 10, "new")).unwrap();
        f.ct = Some("-1234567890123".into());
        f.nl = Some("3".into());
        f.sp = true;
        f.a = vec![("user.k\\xff".into(), "00ff10".into()), ("system.posix_acl_access".into(), String::new())];
        let mut dev: WireEntry = serde_json::from_str(&entry("dev", "other", None, "new")).unwrap();
        dev.r = Some("18446744073709551615".into());
        let plain = entry("d", "dir", None, "new");
        let batch = [serde_json::to_string(&f).unwrap(), serde_json::to_string(&dev).unwrap(), plain.clone()].join("\n");
        o.add_entries(b, batch.as_bytes()).await.unwrap();
        for bad in [
            (|w: &mut WireEntry| w.r = Some("1".into())) as fn(&mut WireEntry),
            |w| w.a = vec![("".into(), "00".into())],
            |w| w.a = vec![("a\\x00".into(), "00".into())],
            |w| w.a = vec![("user.x".into(), "zz".into())],
            |w| w.ct = Some("x".into()),
        ] {
            let mut w = f.clone();
            bad(&mut w);
            assert_eq!(o.add_entries(b, serde_json::to_string(&w).unwrap().as_bytes()).await.unwrap_err().code, CODE_MALFORMED, "{w:?}");
        }
        let id = serde_json::from_slice::<serde_json::Value>(&o.backup_commit(b).await.unwrap()).unwrap()["id"].as_str().unwrap().to_owned();
        let listed = list_all(&o, repo, &id, 1 << 20).await;
        f.x = None;
        dev.x = None;
        let mut plain: WireEntry = serde_json::from_str(&plain).unwrap();
        plain.x = None;
        assert_eq!(listed, [f, dev, plain]);
    }

    #[tokio::test]
    async fn handles_are_checked_by_kind_and_bounded() {
        let o = ops(3);
        let repo = o.repo_init(INIT).await.unwrap();
        let b = o.backup_begin(repo, b"{}").await.unwrap();
        for (what, code) in [
            (o.file_open(repo).unwrap_err(), CODE_INVALID_HANDLE),
            (o.backup_begin(b, b"{}").await.unwrap_err(), CODE_INVALID_HANDLE),
            (o.file_write(b, Bytes::new()).await.unwrap_err(), CODE_INVALID_HANDLE),
            (o.snapshots(999).await.unwrap_err(), CODE_INVALID_HANDLE),
            (o.close(b).unwrap_err(), CODE_INVALID_HANDLE),
            (o.entries_next(repo, 100).await.unwrap_err(), CODE_INVALID_HANDLE),
        ] {
            assert_eq!(what.code, code, "{}", what.message);
        }
        assert!(o.file_open(repo).unwrap_err().message.contains("is a repository, not a backup"));
        let f = o.file_open(b).unwrap();
        assert_eq!(o.file_open(b).unwrap_err().code, CODE_BUSY, "three handles open");
        // Committing closes the backup's open files too (their bytes are simply unreferenced).
        o.backup_commit(b).await.unwrap();
        assert_eq!(o.file_finish(f).await.unwrap_err().code, CODE_INVALID_HANDLE);
        assert_eq!(o.open_handles(), 1);
        assert_eq!(o.entries_open(repo, b"0123").await.unwrap_err().code, CODE_MALFORMED);
    }

    #[tokio::test]
    async fn a_dropped_session_leaves_the_repository_consistent() {
        let store = Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap();
        let o = BackupOps::new(store.clone(), 2, 1, 16);
        let repo = o.repo_init(INIT).await.unwrap();
        let b = o.backup_begin(repo, b"{}").await.unwrap();
        let f = o.file_open(b).unwrap();
        o.file_write(f, data(5 << 20, 9)).await.unwrap();
        drop(o); // the agent disconnected mid-backup
        let o = BackupOps::new(store, 2, 1, 16);
        let repo = o.repo_open(br#"{"password":"pw"}"#).await.unwrap();
        let report: serde_json::Value = serde_json::from_slice(&o.check(repo, true).await.unwrap()).unwrap();
        assert_eq!(report["ok"], true, "{report}");
        let list: serde_json::Value = serde_json::from_slice(&o.snapshots(repo).await.unwrap()).unwrap();
        assert_eq!(list["snapshots"].as_array().unwrap().len(), 0);
        let b = o.backup_begin(repo, b"{}").await.unwrap();
        o.backup_commit(b).await.unwrap();
    }
}
