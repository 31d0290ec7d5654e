//! Repair (restic's `repair index` and `repair snapshots`), each under an exclusive lock.
//!
//! `repair index` rebuilds the index from the packs themselves: it reads every pack's header
//! (two ranged reads: the tail, then the authenticated header), writes new index objects for
//! every pack whose header opens, then deletes every index object that existed before. Packs
//! an interrupted backup left unindexed become indexed (their blobs usable again); damaged or
//! unreadable index objects are gone; packs whose header does not open are reported (their
//! blobs are no longer indexed, so `check` names the files that lose data and `repair
//! snapshots` can drop them). Crash-safe: until the old objects are deleted the index is the
//! union of old and new (a blob listed twice is fine, REPOSITORY.md §Index).
//!
//! `repair snapshots` rewrites every snapshot that references data the index no longer has:
//! files whose content (a chunk, or the chunk list) is not indexed, and the entries of tree
//! blobs that are lost, are dropped; the new snapshot keeps the original's time, host, paths
//! and tags plus the tag `repaired`. The original stays unless `forget` (restic's semantics),
//! and so do snapshot objects that cannot be read at all (removed only with `forget`).

use std::collections::HashSet;

use serde::Serialize;

use crate::backup::{BackupOptions, Change};
use crate::error::{EngineError, Result};
use crate::id::{Id, PackId, SnapshotId};
use crate::index::{IndexFile, IndexedPack, MemIndex};
use crate::lock::LockKind;
use crate::objects::{self, INDEX, PACKS, SNAPSHOTS};
use crate::pack;
use crate::repo::Repository;
use crate::snapshot::{ContentRef, EntryKind, SnapshotFile};

/// Packs per new index object.
const PACKS_PER_INDEX: usize = 1000;

/// What `repair index` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexReport {
    /// Packs now indexed.
    pub packs: u64,
    /// Blobs now indexed.
    pub blobs: u64,
    /// Packs that were in no readable index before (left by interrupted backups).
    pub packs_added: u64,
    /// Index objects written.
    pub index_written: u64,
    /// Old index objects removed (readable or not).
    pub index_removed: u64,
    /// Old index objects that could not be read (`"<key>: <why>"`), among those removed.
    pub index_unreadable: Vec<String>,
    /// Packs whose header could not be read (`"<key>: <why>"`): not indexed.
    pub packs_unreadable: Vec<String>,
}

/// One snapshot as `repair snapshots` saw it.
#[derive(Clone, Debug, Serialize)]
pub struct RepairedSnapshot {
    /// The snapshot (hex).
    pub snapshot: String,
    /// The repaired copy (none: unchanged, unreadable, or a dry run).
    pub new: Option<String>,
    /// The snapshot object itself could not be read (`"<why>"`).
    pub unreadable: Option<String>,
    /// Paths dropped because their data is lost.
    pub dropped: Vec<String>,
    /// Tree blobs lost (their entries are gone; how many is unknown).
    pub lost_tree_blobs: u64,
    /// The original was removed (`forget`, and not a dry run).
    pub removed: bool,
}

impl Repository {
    /// `repair index` (see the module docs).
    pub async fn repair_index(&self) -> Result<RepairIndexReport> {
        let lock = self.lock(LockKind::Exclusive, "repair index").await?;
        let r = self.repair_index_locked().await;
        let released = lock.release().await;
        let r = r?;
        released?;
        Ok(r)
    }

    async fn repair_index_locked(&self) -> Result<RepairIndexReport> {
        let store = &self.inner.store;
        let aead = &self.inner.aead;
        let mut report = RepairIndexReport::default();
        // Index objects first: each lists only packs that existed before it (and so before
        // the pack listing below).
        let old_index: Vec<String> = objects::list_keys(store, INDEX).await?.into_iter().map(|(k, _)| k).collect();
        let mut known: HashSet<PackId> = HashSet::new();
        for key in &old_index {
            match objects::get_object::<IndexFile>(store, aead, key).await {
                Ok(f) => known.extend(f.packs.iter().map(|p| p.id)),
                Err(EngineError::NotFound { .. }) => {}
                Err(e) if e.is_damage() => report.index_unreadable.push(format!("{key}: {e}")),
                Err(e) => return Err(e),
            }
        }
        let mut packs = Vec::new();
        for (key, size) in objects::list_keys(store, PACKS).await? {
            let Some(id) = objects::id_of_key(&key).filter(|id| objects::pack_key(id) == key) else { continue };
            match self.pack_table(&id, size).await {
                Ok(blobs) => {
                    report.blobs += blobs.len() as u64;
                    report.packs_added += u64::from(!known.contains(&id));
                    packs.push(IndexedPack { id, size, blobs });
                }
                Err(EngineError::NotFound { .. }) => {}
                Err(e) if e.is_damage() => report.packs_unreadable.push(format!("{key}: {e}")),
                Err(e) => return Err(e),
            }
        }
        report.packs = packs.len() as u64;
        for group in packs.chunks(PACKS_PER_INDEX) {
            let file = IndexFile { v: 1, packs: group.to_vec() };
            objects::put_object(store, aead, &objects::index_key(&Id::random()), &file).await?;
            report.index_written += 1;
        }
        for key in &old_index {
            store.delete(key).await?;
            report.index_removed += 1;
        }
        self.reload_index().await?;
        self.inner.unreadable.lock().expect("unreadable").retain(|k, _| !k.starts_with(INDEX));
        Ok(report)
    }

    /// A pack's blob table from its header: the 12-byte tail, then the header (authenticated).
    async fn pack_table(&self, id: &PackId, size: u64) -> Result<Vec<pack::BlobEntry>> {
        let key = objects::pack_key(id);
        if size < pack::TAIL_LEN as u64 {
            return Err(EngineError::integrity(&key, "shorter than a pack tail"));
        }
        let tail = objects::read_range(&self.inner.store, &key, size - pack::TAIL_LEN as u64..size).await?;
        let range = pack::header_range(&tail, size, &key)?;
        let header = objects::read_range(&self.inner.store, &key, range.clone()).await?;
        pack::open_header(&self.inner.aead, id, &header, range.start, &key)
    }

    /// Drops the in-memory index and loads every index object afresh.
    async fn reload_index(&self) -> Result<()> {
        {
            let _g = self.inner.refresh.lock().await;
            *self.inner.index.write().expect("index lock") = MemIndex::default();
        }
        self.refresh_index().await
    }

    /// `repair snapshots` (see the module docs). `dry_run`: report only.
    pub async fn repair_snapshots(&self, forget: bool, dry_run: bool) -> Result<Vec<RepairedSnapshot>> {
        let lock = self.lock(LockKind::Exclusive, "repair snapshots").await?;
        let r = self.repair_snapshots_locked(forget, dry_run).await;
        let released = lock.release().await;
        let r = r?;
        released?;
        Ok(r)
    }

    async fn repair_snapshots_locked(&self, forget: bool, dry_run: bool) -> Result<Vec<RepairedSnapshot>> {
        self.reload_index().await?;
        let mut out = Vec::new();
        for (key, _) in objects::list_keys(&self.inner.store, SNAPSHOTS).await? {
            let Some(sid) = objects::id_of_key(&key) else { continue };
            let mut r = RepairedSnapshot { snapshot: sid.to_hex(), new: None, unreadable: None, dropped: Vec::new(), lost_tree_blobs: 0, removed: false };
            let file = match self.snapshot(&sid).await {
                Ok(f) => f,
                Err(EngineError::NotFound { .. }) => continue,
                Err(e) if e.is_damage() => {
                    r.unreadable = Some(e.to_string());
                    if forget && !dry_run {
                        self.inner.store.delete(&key).await?;
                        r.removed = true;
                        self.inner.unreadable.lock().expect("unreadable").remove(&key);
                    }
                    out.push(r);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (kept, lost_trees, dropped) = self.salvage(&file).await?;
            if lost_trees == 0 && dropped.is_empty() {
                continue;
            }
            r.lost_tree_blobs = lost_trees;
            r.dropped = dropped;
            if !dry_run {
                let new = self.write_repaired(&file, kept, &mut r.dropped).await?;
                r.new = Some(new.to_hex());
                if forget {
                    self.inner.store.delete(&key).await?;
                    r.removed = true;
                }
            }
            out.push(r);
        }
        Ok(out)
    }

    /// The entries of `file` whose data is all indexed, the number of lost tree blobs, and the
    /// paths dropped.
    async fn salvage(&self, file: &SnapshotFile) -> Result<(Vec<crate::snapshot::TreeEntry>, u64, Vec<String>)> {
        let (mut kept, mut lost, mut dropped) = (Vec::new(), 0u64, Vec::new());
        for tid in &file.tree {
            let entries = match self.read_tree_blob(tid).await {
                Ok(e) => e,
                Err(e) if e.is_damage() || matches!(e, EngineError::NotFound { .. }) => {
                    lost += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in entries {
                let intact = match &e.content {
                    None => true,
                    Some(c) => self.content_indexed(c).await?,
                };
                if intact {
                    kept.push(e);
                } else {
                    dropped.push(e.path);
                }
            }
        }
        Ok((kept, lost, dropped))
    }

    /// Whether every blob of a content is in the index (the chunk list is read for that).
    async fn content_indexed(&self, c: &ContentRef) -> Result<bool> {
        let has = |id: &Id| self.inner.index.read().expect("index lock").contains(id);
        if let ContentRef::List { list, .. } = c {
            if !has(list) {
                return Ok(false);
            }
        }
        let chunks = match self.content_chunks(c).await {
            Ok(c) => c,
            Err(e) if e.is_damage() || matches!(e, EngineError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(chunks.iter().all(|c| has(&c.id)))
    }

    async fn write_repaired(&self, file: &SnapshotFile, kept: Vec<crate::snapshot::TreeEntry>, dropped: &mut Vec<String>) -> Result<SnapshotId> {
        let mut tags = file.tags.clone();
        if !tags.iter().any(|t| t == "repaired") {
            tags.push("repaired".into());
        }
        let parent = match file.parent {
            Some(p) if self.snapshot(&p).await.is_ok() => Some(p),
            _ => None,
        };
        let session = self
            .begin_backup(BackupOptions {
                parent,
                host: Some(file.host.clone()),
                tags,
                paths: file.paths.clone(),
                time_ns: Some(file.time_ns),
                // This operation holds the exclusive lock.
                lock: false,
                ..BackupOptions::default()
            })
            .await?;
        for e in kept {
            let change = if e.kind == EntryKind::File { Change::Unchanged } else { Change::New };
            let path = e.path.clone();
            match session.add_entry(e, change).await {
                Ok(()) => {}
                // An entry no writer should have made (sizes disagree, content on a non-file).
                Err(EngineError::InvalidArgument { .. } | EngineError::NotFound { .. }) => dropped.push(path),
                Err(e) => return Err(e),
            }
        }
        Ok(session.commit().await?.id)
    }
}
