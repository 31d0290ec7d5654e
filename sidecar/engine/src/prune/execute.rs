//! Carrying out a prune plan, in the order that keeps every intermediate state valid
//! (REPOSITORY.md §Prune):
//!
//! 1. delete packs no index lists (nothing refers to them) and file:// staging files (uploads
//!    a killed process never finished; no writer is running under the exclusive lock);
//! 2. repack: copy the kept blobs of the packs to repack — sealed envelopes moved unchanged
//!    (the pack is not in a blob's associated data), each verified first — into new packs;
//! 3. write the new index: every pack kept plus the new ones, in objects of at most
//!    [`INDEX_BLOBS_PER_OBJECT`] blobs (so prune also compacts the index);
//! 4. delete the old index objects;
//! 5. delete the packs removed and repacked.
//!
//! Before each deletion (and before the new index) the exclusive lock must still be held
//! ([`RepoLock::ensure_held`]): if it ever looked stale, a backup may have started and
//! deduplicated against what is about to go, so prune stops.
//!
//! Until 3 completes, the old index describes packs that all still exist; between 3 and 4
//! both indexes do (duplicates are allowed); from 5 on, no index object names a deleted pack.

use bytes::Bytes;

use super::plan::{PackAction, PrunePlan};
use super::Loaded;
use crate::error::Result;
use crate::id::Id;
use crate::index::{IndexFile, IndexedPack};
use crate::objects;
use crate::pack::PackBuilder;
use crate::lock::RepoLock;
use crate::repo::Repository;

/// Blobs per index object written by prune.
pub const INDEX_BLOBS_PER_OBJECT: usize = 50_000;

/// What execution did.
#[derive(Debug, Default)]
pub struct Executed {
    pub packs_written: u64,
    pub index_written: u64,
    pub index_deleted: u64,
    pub packs_deleted: u64,
    pub staging_deleted: u64,
}

pub(crate) async fn execute(repo: &Repository, lock: &RepoLock, loaded: &Loaded, plan: &PrunePlan) -> Result<Executed> {
    let store = &repo.inner.store;
    let mut done = Executed::default();
    let changes = plan.actions.iter().any(|a| *a != PackAction::Keep);
    let kept: Vec<&IndexedPack> =
        loaded.usage.packs.iter().zip(&plan.actions).filter(|(_, a)| **a == PackAction::Keep).map(|(p, _)| p).collect();
    let kept_blobs: usize = kept.iter().map(|p| p.blobs.len()).sum();
    let compact = loaded.index_keys.len() > kept_blobs.div_ceil(INDEX_BLOBS_PER_OBJECT).max(1);

    // 1. Crash leftovers: staging files of uploads a killed process never finished (file://),
    // and packs in no index.
    for prefix in [objects::PACKS, objects::INDEX, objects::SNAPSHOTS] {
        lock.ensure_held()?;
        done.staging_deleted += store.remove_staging(prefix, std::time::Duration::ZERO).await?.len() as u64;
    }
    for id in &plan.unreferenced {
        lock.ensure_held()?;
        store.delete(&objects::pack_key(id)).await?;
        done.packs_deleted += 1;
    }
    if !changes && !compact {
        return Ok(done);
    }

    // 2. Repack.
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let pack_size = u64::from(repo.inner.settings.pack_size);
    let mut builder = PackBuilder::default();
    for (p, action) in plan.actions.iter().enumerate() {
        if *action != PackAction::Repack {
            continue;
        }
        let pack = &loaded.usage.packs[p];
        let key = objects::pack_key(&pack.id);
        let data = objects::read_all(store, &key).await?;
        for &row in &plan.copy_rows[&p] {
            let b = pack.blobs[row as usize];
            let (s, e) = (b.offset as usize, b.offset as usize + b.length as usize);
            if e > data.len() {
                return Err(crate::EngineError::integrity(&key, "pack is shorter than its index says"));
            }
            let env: Bytes = data.slice(s..e);
            let check = repo.clone();
            let verify = env.clone();
            repo.inner.cpu.run(move || check.open_blob(b.kind, &b.id, b.raw_len, verify).map(drop)).await??;
            builder.add_sealed(b.kind, b.id, b.raw_len, &env);
            if builder.size() >= pack_size {
                let full = std::mem::take(&mut builder);
                new_packs.push(write_pack(repo, full).await?);
                done.packs_written += 1;
            }
        }
    }
    if !builder.is_empty() {
        new_packs.push(write_pack(repo, builder).await?);
        done.packs_written += 1;
    }

    // 3. The new index.
    lock.ensure_held()?;
    let mut batch: Vec<IndexedPack> = Vec::new();
    let mut blobs = 0usize;
    for p in kept.into_iter().cloned().chain(new_packs) {
        blobs += p.blobs.len();
        batch.push(p);
        if blobs >= INDEX_BLOBS_PER_OBJECT {
            write_index(repo, std::mem::take(&mut batch)).await?;
            done.index_written += 1;
            blobs = 0;
        }
    }
    if !batch.is_empty() {
        write_index(repo, batch).await?;
        done.index_written += 1;
    }

    // 4. The old index.
    for key in &loaded.index_keys {
        lock.ensure_held()?;
        store.delete(key).await?;
        done.index_deleted += 1;
    }

    // 5. Packs dropped.
    for (p, action) in plan.actions.iter().enumerate() {
        if matches!(action, PackAction::Remove | PackAction::Repack) {
            lock.ensure_held()?;
            store.delete(&objects::pack_key(&loaded.usage.packs[p].id)).await?;
            done.packs_deleted += 1;
        }
    }
    Ok(done)
}

async fn write_pack(repo: &Repository, builder: PackBuilder) -> Result<IndexedPack> {
    let finished = builder.finish(&repo.inner.aead)?;
    let key = objects::pack_key(&finished.id);
    repo.inner.store.put(&key, [Bytes::from(finished.data)]).await?;
    Ok(IndexedPack { id: finished.id, size: finished.size, blobs: finished.entries })
}

async fn write_index(repo: &Repository, packs: Vec<IndexedPack>) -> Result<()> {
    let key = objects::index_key(&Id::random());
    objects::put_object(&repo.inner.store, &repo.inner.aead, &key, &IndexFile { v: 1, packs }).await?;
    Ok(())
}
