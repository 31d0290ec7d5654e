//! `check`: verifies a repository's structure and, with `read_data`, every byte.
//!
//! Structure: every index object opens; every pack an index names exists with the indexed
//! size; every snapshot opens, its tree blobs read and decode, and every chunk (and chunk
//! list) of every file is in the index. Packs no index names are *info*, not errors: they are
//! what an interrupted backup leaves (uploaded, never indexed, never referenced).
//!
//! `read_data`: every indexed pack is read in full (the store's CRC-32C covers the object),
//! its header is opened and compared with the index, and every blob is authenticated,
//! decompressed and checked against its id. When a pack fails as a whole (checksum, header),
//! its blobs are re-read one by one with ranged reads, so the report names exactly the blobs
//! that are damaged — and the files that use them. Files whose blobs are intact still
//! restore, even from a damaged pack.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;

use crate::blob::{self, BlobKind};
use crate::error::{EngineError, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::{IndexFile, IndexedPack, MemIndex};
use crate::objects::{self, INDEX, PACKS, SNAPSHOTS};
use crate::pack;
use crate::repo::Repository;
use crate::snapshot::{self, ContentRef, SnapshotFile};

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Read and verify every blob of every pack.
    pub read_data: bool,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckIssue {
    /// The object (key) or blob concerned.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// A file whose content cannot be restored intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffectedFile {
    /// Snapshot containing it.
    pub snapshot: SnapshotId,
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Errors: the repository is damaged.
    pub errors: Vec<CheckIssue>,
    /// Informational findings (e.g. unreferenced packs from interrupted backups).
    pub infos: Vec<CheckIssue>,
    /// Files that cannot be restored intact.
    pub affected_files: Vec<AffectedFile>,
    /// Index objects read.
    pub index_objects: u64,
    /// Packs known to the index.
    pub packs: u64,
    /// Blobs known to the index.
    pub blobs: u64,
    /// Blobs read and verified (read_data).
    pub blobs_verified: u64,
    /// Pack bytes read (read_data).
    pub bytes_read: u64,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Tree entries walked.
    pub entries: u64,
}

impl CheckReport {
    /// No errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CheckIssue { object: object.into(), message: message.into() });
    }

    fn info(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.infos.push(CheckIssue { object: object.into(), message: message.into() });
    }
}

/// Result of verifying one pack's data.
struct PackVerdict {
    bytes_read: u64,
    verified: u64,
    errors: Vec<CheckIssue>,
    bad_blobs: Vec<BlobId>,
}

impl Repository {
    /// Checks the repository (see the module docs). Fails only if the store itself fails;
    /// damage is reported in the [`CheckReport`].
    pub async fn check(&self, opts: CheckOptions) -> Result<CheckReport> {
        self.check_subset(opts, None).await
    }

    /// [`Repository::check`], reading only the packs `subset` selects (`check
    /// --read-data-subset`; subset.rs); `Some` implies reading data.
    /// Takes a shared lock, so a prune (which deletes) cannot run meanwhile and show up as
    /// missing packs.
    pub async fn check_subset(&self, opts: CheckOptions, subset: Option<crate::subset::PackSubset>) -> Result<CheckReport> {
        let lock = self.lock(crate::lock::LockKind::Shared, "check").await?;
        let report = self.check_locked(opts, subset).await;
        let released = lock.release().await;
        let report = report?;
        released?;
        Ok(report)
    }

    async fn check_locked(&self, opts: CheckOptions, subset: Option<crate::subset::PackSubset>) -> Result<CheckReport> {
        if let Some(s) = &subset {
            s.validate()?;
        }
        let mut report = CheckReport::default();
        let store = &self.inner.store;
        let aead = &self.inner.aead;

        // 1. Index objects (read afresh: the check must not trust the cached index).
        let mut index = MemIndex::default();
        let mut indexed: BTreeMap<PackId, IndexedPack> = BTreeMap::new();
        for (key, _) in objects::list_keys(store, INDEX).await? {
            match objects::get_object::<IndexFile>(store, aead, &key).await {
                Ok(f) => match crate::limits::index_problem(&f) {
                    // Not loaded: its numbers would be used to read and allocate.
                    Some(why) => report.error(&key, format!("index object unusable: {why}")),
                    None => {
                        report.index_objects += 1;
                        for p in f.packs {
                            index.stage_pack(&p)?;
                            indexed.entry(p.id).or_insert(p);
                        }
                    }
                },
                Err(e @ EngineError::Store(_)) if e.code() != crate::error::CODE_INTEGRITY => return Err(e),
                Err(e) => report.error(&key, format!("index object unreadable: {e}")),
            }
        }
        index.commit_staged();
        report.packs = indexed.len() as u64;
        report.blobs = index.len() as u64;

        // 2. Packs: present, right size; unindexed ones are garbage from interrupted backups.
        let mut listed: HashMap<PackId, u64> = HashMap::new();
        for (key, size) in objects::list_keys(store, PACKS).await? {
            match objects::id_of_key(&key).filter(|id| objects::pack_key(id) == key) {
                Some(id) => {
                    listed.insert(id, size);
                }
                None => report.info(&key, "unexpected object under packs/"),
            }
        }
        let mut missing_packs: HashSet<PackId> = HashSet::new();
        for (id, p) in &indexed {
            let key = objects::pack_key(id);
            match listed.get(id) {
                None => {
                    report.error(&key, "pack listed in the index is missing");
                    missing_packs.insert(*id);
                }
                Some(&size) if size != p.size => {
                    report.error(&key, format!("pack is {size} bytes, the index says {}", p.size));
                }
                Some(_) => {}
            }
        }
        let mut unreferenced: Vec<_> = listed.keys().filter(|id| !indexed.contains_key(id)).copied().collect();
        unreferenced.sort();
        for id in unreferenced {
            report.info(
                objects::pack_key(&id),
                "pack is in no index (left by an interrupted backup; unreferenced, safe to delete)",
            );
        }

        // 3. Data.
        let mut bad_blobs: HashSet<BlobId> = HashSet::new();
        if opts.read_data || subset.is_some() {
            let chosen = subset.map(|s| s.select(&indexed.values().map(|p| (p.id, p.size)).collect::<Vec<_>>()));
            let packs: Vec<IndexedPack> = indexed.values().filter(|p| !missing_packs.contains(&p.id) && chosen.as_ref().is_none_or(|c| c.contains(&p.id))).cloned().collect();
            let mut verdicts = futures::stream::iter(packs)
                .map(|p| {
                    let repo = self.clone();
                    async move { repo.verify_pack(&p).await }
                })
                .buffer_unordered(2);
            while let Some(v) = verdicts.next().await {
                let v = v?;
                report.bytes_read += v.bytes_read;
                report.blobs_verified += v.verified;
                report.errors.extend(v.errors);
                bad_blobs.extend(v.bad_blobs);
            }
        }

        // 4. Snapshots: trees and every file's chunks.
        for (key, _) in objects::list_keys(store, SNAPSHOTS).await? {
            let Some(sid) = objects::id_of_key(&key) else {
                report.info(&key, "unexpected object under snapshots/");
                continue;
            };
            let snap: SnapshotFile = match objects::get_object::<SnapshotFile>(store, aead, &key).await {
                Ok(s) if s.v != 1 => {
                    report.error(&key, format!("snapshot version {}", s.v));
                    continue;
                }
                Ok(s) => s,
                Err(e @ EngineError::Store(_)) if e.code() != crate::error::CODE_INTEGRITY => return Err(e),
                Err(e) => {
                    report.error(&key, format!("snapshot unreadable: {e}"));
                    continue;
                }
            };
            report.snapshots += 1;
            self.check_snapshot(sid, &snap, &index, &missing_packs, &bad_blobs, &mut report).await?;
        }
        Ok(report)
    }

    /// Reads a blob through a given index (the check's own), verifying it. The kind is not
    /// compared: ids are content hashes, so a tree blob whose bytes equal an existing data
    /// chunk was (correctly) deduplicated against it and is indexed under the chunk's kind.
    async fn check_read_blob(&self, index: &MemIndex, id: &BlobId) -> Result<Bytes> {
        let loc = index.get(id).ok_or_else(|| EngineError::NotFound { what: format!("blob {id}") })?;
        self.read_blob_at(id, &loc).await
    }

    async fn check_snapshot(
        &self,
        sid: SnapshotId,
        snap: &SnapshotFile,
        index: &MemIndex,
        missing_packs: &HashSet<PackId>,
        bad_blobs: &HashSet<BlobId>,
        report: &mut CheckReport,
    ) -> Result<()> {
        let skey = objects::snapshot_key(&sid);
        // Why a blob is unusable, if it is.
        let problem = |id: &BlobId| -> Option<String> {
            match index.get(id) {
                None => Some(format!("blob {id} is in no index")),
                Some(l) if missing_packs.contains(&l.pack) => Some(format!("blob {id}: its pack {} is missing", l.pack)),
                Some(_) if bad_blobs.contains(id) => Some(format!("blob {id} is damaged")),
                Some(_) => None,
            }
        };
        let mut entries = 0u64;
        for tid in &snap.tree {
            if let Some(p) = problem(tid) {
                report.error(&skey, format!("tree: {p}"));
                continue;
            }
            let data = match self.check_read_blob(index, tid).await {
                Ok(d) => d,
                Err(e @ EngineError::Store(_)) if e.code() != crate::error::CODE_INTEGRITY => return Err(e),
                Err(e) => {
                    report.error(&skey, format!("tree blob {tid}: {e}"));
                    continue;
                }
            };
            let tree = match snapshot::decode_tree(&data, &format!("tree blob {tid}")) {
                Ok(t) => t,
                Err(e) => {
                    report.error(&skey, e.to_string());
                    continue;
                }
            };
            for e in tree {
                entries += 1;
                let Some(content) = &e.content else { continue };
                let mut reasons: Vec<String> = Vec::new();
                match content {
                    ContentRef::Chunks { chunks, .. } => {
                        reasons.extend(chunks.iter().filter_map(|c| problem(&c.id)));
                    }
                    ContentRef::List { list, count, .. } => match problem(list) {
                        Some(p) => reasons.push(format!("chunk list: {p}")),
                        None => match self.check_read_blob(index, list).await {
                            Ok(d) => match snapshot::decode_chunk_list(&d, "chunk list") {
                                Ok(chunks) if chunks.len() as u64 == *count => {
                                    reasons.extend(chunks.iter().filter_map(|c| problem(&c.id)));
                                }
                                Ok(_) => reasons.push(format!("chunk list {list}: wrong chunk count")),
                                Err(err) => reasons.push(err.to_string()),
                            },
                            Err(err @ EngineError::Store(_)) if err.code() != crate::error::CODE_INTEGRITY => return Err(err),
                            Err(err) => reasons.push(format!("chunk list {list}: {err}")),
                        },
                    },
                }
                if !reasons.is_empty() {
                    let reason = reasons.join("; ");
                    // Missing blobs are errors in their own right; damaged ones were reported with their pack.
                    if reasons.iter().any(|r| !r.ends_with("is damaged")) {
                        report.error(&skey, format!("{:?}: {reason}", e.path));
                    }
                    report.affected_files.push(AffectedFile { snapshot: sid, path: e.path.clone(), reason });
                }
            }
        }
        if entries != snap.entries {
            report.error(&skey, format!("tree has {entries} entries, the snapshot says {}", snap.entries));
        }
        report.entries += entries;
        Ok(())
    }

    /// read_data for one pack.
    async fn verify_pack(&self, p: &IndexedPack) -> Result<PackVerdict> {
        let key = objects::pack_key(&p.id);
        let mut v = PackVerdict { bytes_read: 0, verified: 0, errors: Vec::new(), bad_blobs: Vec::new() };
        let whole = match objects::read_all(&self.inner.store, &key).await {
            Ok(b) => Some(b),
            Err(e) if e.code() == crate::error::CODE_INTEGRITY => {
                v.errors.push(crate::check::CheckIssue { object: key.clone(), message: format!("pack data damaged: {e}") });
                None
            }
            Err(e) => return Err(e),
        };
        let Some(data) = whole else {
            // Pinpoint the damaged blobs with ranged reads; intact ones stay usable.
            for b in &p.blobs {
                let start = u64::from(b.offset);
                let env = objects::read_range(&self.inner.store, &key, start..start + u64::from(b.length)).await;
                v.bytes_read += u64::from(b.length);
                match env.and_then(|env| self.open_blob_verified(b.kind, &b.id, b.raw_len, env)) {
                    Ok(()) => v.verified += 1,
                    Err(e) => {
                        v.errors.push(CheckIssue { object: format!("{key} blob {}", b.id), message: e.to_string() });
                        v.bad_blobs.push(b.id);
                    }
                }
            }
            return Ok(v);
        };
        v.bytes_read += data.len() as u64;
        match pack::parse_pack(&self.inner.aead, &p.id, &data, &key) {
            Ok(table) if table == p.blobs => {}
            Ok(_) => v.errors.push(CheckIssue { object: key.clone(), message: "pack header differs from the index".into() }),
            Err(e) => v.errors.push(CheckIssue { object: key.clone(), message: e.to_string() }),
        }
        // Decrypt and verify on workers, a pack's blobs at a time.
        let repo = self.clone();
        let blobs = p.blobs.clone();
        let results = {
            self.inner.cpu.run(move || {
                blobs
                    .iter()
                    .map(|b| {
                        let (s, e) = (b.offset as usize, b.offset as usize + b.length as usize);
                        let r = if e <= data.len() {
                            repo.open_blob_verified(b.kind, &b.id, b.raw_len, data.slice(s..e))
                        } else {
                            Err(EngineError::integrity(format!("blob {}", b.id), "past the end of its pack"))
                        };
                        (b.id, r)
                    })
                    .collect::<Vec<_>>()
            })
            .await?
        };
        for (id, r) in results {
            match r {
                Ok(()) => v.verified += 1,
                Err(e) => {
                    v.errors.push(CheckIssue { object: format!("{key} blob {id}"), message: e.to_string() });
                    v.bad_blobs.push(id);
                }
            }
        }
        Ok(v)
    }

    fn open_blob_verified(&self, kind: BlobKind, id: &BlobId, raw_len: u32, env: Bytes) -> Result<()> {
        blob::open(&self.inner.aead, Some(&self.inner.settings.id_key.0), kind, id, raw_len, env).map(drop)
    }
}
