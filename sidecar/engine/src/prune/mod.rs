//! `prune`: deletes what no snapshot uses and repacks packs that are mostly unused — restic's
//! prune, under restic's concurrency rule (an exclusive lock that backups honour;
//! REPOSITORY.md §Prune has the proof that a blob a snapshot uses is never deleted).
//!
//! Steps: lock → read every index object and snapshot (any unreadable one stops prune before
//! it changes anything) → mark the used blobs (usage.rs) → plan (plan.rs) → execute
//! (execute.rs) in the crash-safe order: delete packs no index lists → write new packs →
//! write the new index (every pack kept, compacted into few objects) → delete the old index
//! objects → delete the packs dropped. A crash at any point leaves a repository that check
//! accepts (at worst with unindexed packs, reported as info) and that the next prune cleans.

pub mod execute;
pub mod options;
pub mod plan;
pub mod usage;

use std::collections::HashMap;

use crate::error::{EngineError, Result};
use crate::id::{BlobId, PackId};
use crate::index::{IndexFile, IndexedPack};
use crate::lock::{LockKind, RepoLock};
use crate::objects::{self, INDEX, PACKS, SNAPSHOTS};
use crate::repo::Repository;
use crate::snapshot::{self, ContentRef, SnapshotFile};
pub use options::{parse_size, MaxUnused, PruneOptions};
pub use plan::{PackAction, PruneStats};
use usage::BlobUsage;

/// What prune did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// restic's statistics of the plan.
    pub stats: PruneStats,
    /// Snapshots read.
    pub snapshots: u64,
    /// Packs written by repacking.
    pub packs_written: u64,
    /// Index objects written / deleted.
    pub index_written: u64,
    /// Old index objects deleted.
    pub index_deleted: u64,
    /// Packs deleted (unreferenced, unused and repacked).
    pub packs_deleted: u64,
    /// Staging files of unfinished uploads deleted (file://).
    pub staging_deleted: u64,
    /// Bytes of the marking structures (positions and bits), for the memory bound.
    pub marking_bytes: u64,
}

/// The repository as prune found it.
pub(crate) struct Loaded {
    /// Keys of the index objects read (deleted once the new index is written).
    pub index_keys: Vec<String>,
    pub usage: BlobUsage,
    pub listed: HashMap<PackId, u64>,
    pub snapshots: u64,
}

impl Repository {
    /// Prunes the repository (see the module docs). Takes the exclusive lock (a shared one for
    /// `dry_run`), or fails with `Locked` while a backup or another prune holds one.
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let kind = if opts.dry_run { LockKind::Shared } else { LockKind::Exclusive };
        let lock = self.lock(kind, "prune").await?;
        let result = self.prune_locked(opts, &lock).await;
        let released = lock.release().await;
        let report = result?;
        released?;
        Ok(report)
    }

    /// [`Repository::prune`] for a caller that holds `lock` (exclusive unless `dry_run`;
    /// forget --prune keeps the one it deleted snapshots under).
    pub async fn prune_locked(&self, opts: &PruneOptions, lock: &RepoLock) -> Result<PruneReport> {
        let mut loaded = self.load_for_prune().await?;
        let plan = plan::plan(&mut loaded.usage, &loaded.listed, opts)?;
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            stats: plan.stats.clone(),
            snapshots: loaded.snapshots,
            marking_bytes: loaded.usage.marking_bytes() as u64,
            ..Default::default()
        };
        if !opts.dry_run {
            let done = execute::execute(self, lock, &loaded, &plan).await;
            // Whatever happened, this handle's cached index may name deleted packs.
            self.reset_index();
            let done = done?;
            report.packs_written = done.packs_written;
            report.index_written = done.index_written;
            report.index_deleted = done.index_deleted;
            report.packs_deleted = done.packs_deleted;
            report.staging_deleted = done.staging_deleted;
        }
        Ok(report)
    }

    async fn load_for_prune(&self) -> Result<Loaded> {
        let store = &self.inner.store;
        let aead = &self.inner.aead;
        let mut packs: Vec<IndexedPack> = Vec::new();
        let mut seen: std::collections::HashSet<PackId> = Default::default();
        let mut index_keys = Vec::new();
        for (key, _) in objects::list_keys(store, INDEX).await? {
            if objects::id_of_key(&key).is_none() {
                continue;
            }
            let f: IndexFile = objects::get_object(store, aead, &key).await.map_err(|e| stop("index object", &key, e))?;
            for p in f.packs {
                if seen.insert(p.id) {
                    packs.push(p);
                }
            }
            index_keys.push(key);
        }
        packs.sort_by_key(|p| p.id);
        let mut usage = BlobUsage::new(packs);
        let mut snapshots = 0;
        for (key, _) in objects::list_keys(store, SNAPSHOTS).await? {
            if objects::id_of_key(&key).is_none() {
                continue;
            }
            let snap: SnapshotFile = objects::get_object(store, aead, &key).await.map_err(|e| stop("snapshot", &key, e))?;
            self.mark_snapshot(&key, &snap, &mut usage).await?;
            snapshots += 1;
        }
        let mut listed = HashMap::new();
        for (key, size) in objects::list_keys(store, PACKS).await? {
            if let Some(id) = objects::id_of_key(&key).filter(|id| objects::pack_key(id) == key) {
                listed.insert(id, size);
            }
        }
        Ok(Loaded { index_keys, usage, listed, snapshots })
    }

    /// Marks everything one snapshot uses, reading each tree blob and chunk list not marked yet.
    async fn mark_snapshot(&self, key: &str, snap: &SnapshotFile, usage: &mut BlobUsage) -> Result<()> {
        for tid in &snap.tree {
            if self.mark(key, tid, usage)? {
                continue;
            }
            let data = self.read_for_prune(key, tid, usage).await?;
            for e in snapshot::decode_tree(&data, &format!("tree blob {tid}")).map_err(|e| stop("snapshot", key, e))? {
                match e.content {
                    None => {}
                    Some(ContentRef::Chunks { chunks, .. }) => {
                        for c in &chunks {
                            self.mark(key, &c.id, usage)?;
                        }
                    }
                    Some(ContentRef::List { list, .. }) => {
                        if self.mark(key, &list, usage)? {
                            continue;
                        }
                        let data = self.read_for_prune(key, &list, usage).await?;
                        for c in snapshot::decode_chunk_list(&data, "chunk list").map_err(|e| stop("snapshot", key, e))? {
                            self.mark(key, &c.id, usage)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks `id` used; whether it was already. A blob in no index stops prune.
    fn mark(&self, key: &str, id: &BlobId, usage: &mut BlobUsage) -> Result<bool> {
        usage.mark(id).ok_or_else(|| {
            EngineError::integrity(key, format!("uses blob {id}, which is in no index (run check; prune changed nothing)"))
        })
    }

    async fn read_for_prune(&self, key: &str, id: &BlobId, usage: &BlobUsage) -> Result<bytes::Bytes> {
        let loc = usage.location(id).expect("marked blobs are indexed");
        self.read_blob_at(id, &loc).await.map_err(|e| stop("snapshot", key, e))
    }
}

/// An error that stops prune before it changed anything, naming what it was reading.
fn stop(what: &str, key: &str, e: EngineError) -> EngineError {
    match e {
        EngineError::Integrity { what: w, reason } => {
            EngineError::integrity(key, format!("{what} unreadable ({w}: {reason}); prune changed nothing — run check"))
        }
        other => other,
    }
}
