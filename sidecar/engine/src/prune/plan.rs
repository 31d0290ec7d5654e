//! Prune's plan: from the blob usage and the pack listing, what happens to each pack —
//! kept, repacked (its kept blobs copied into new packs), deleted — and restic's statistics.
//!
//! Each used blob keeps exactly one copy. Copies are claimed first from packs whose every blob
//! is used (so a pack an interrupted prune already wrote, all of whose blobs are duplicates,
//! is the one kept), then from the others, in pack-id order. Packs with nothing kept are
//! deleted; packs with some unused space are repacked, most-unused first, until the unused
//! space left is within `--max-unused` or `--max-repack-size` is reached (restic's rules).
//! Packs under `packs/` that no index lists are deleted (crash leftovers: prune runs under
//! the exclusive lock, so no backup is between its pack upload and its index write).

use std::collections::HashMap;

use serde::Serialize;

use super::options::PruneOptions;
use super::usage::BlobUsage;
use crate::error::{EngineError, Result};
use crate::id::PackId;
use crate::objects;

/// restic's `PruneStats`, with restic's JSON names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Blob counts.
    pub blobs: BlobStats,
    /// Byte counts (stored, i.e. encrypted sizes).
    pub bytes: ByteStats,
    /// Pack counts.
    pub packfiles: PackStats,
}

/// Blob counts of [`PruneStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BlobStats {
    /// Used by a snapshot (one copy each).
    pub used: u64,
    /// Further copies of used blobs.
    pub duplicate: u64,
    /// Used by no snapshot.
    pub unused: u64,
    /// Every indexed copy.
    pub total: u64,
    /// In packs to repack.
    pub repack: u64,
    /// Of those, dropped by the repack.
    pub repack_remove: u64,
    /// In packs to delete.
    pub remove: u64,
    /// `repack_remove + remove`.
    pub remove_total: u64,
    /// Left after prune.
    pub remaining: u64,
}

/// Byte counts of [`PruneStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ByteStats {
    /// Used blobs, plus pack headers of packs with used blobs.
    pub used: u64,
    /// Further copies of used blobs.
    pub duplicate: u64,
    /// Unused blobs (duplicates included).
    pub unused: u64,
    /// Packs in no index.
    pub unreferenced: u64,
    /// Every indexed pack.
    pub total: u64,
    /// Packs to repack.
    pub repack: u64,
    /// Of those, dropped by the repack.
    pub repack_remove: u64,
    /// Packs to delete (indexed).
    pub remove: u64,
    /// `repack_remove + remove + unreferenced`.
    pub remove_total: u64,
    /// Indexed bytes left after prune.
    pub remaining: u64,
    /// Unused bytes left after prune.
    pub remaining_unused: u64,
}

/// Pack counts of [`PruneStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PackStats {
    /// Every blob kept.
    pub used: u64,
    /// No blob kept.
    pub unused: u64,
    /// Some kept, some not.
    pub partly_used: u64,
    /// In no index.
    pub unreferenced: u64,
    /// Indexed and present.
    pub total: u64,
    /// Left as they are.
    pub keep: u64,
    /// Rewritten.
    pub repack: u64,
    /// Deleted (indexed).
    pub remove: u64,
    /// Deleted in all (`remove + repack + unreferenced`).
    pub remove_total: u64,
}

/// One indexed pack's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackAction {
    /// Left as it is (and listed in the new index).
    Keep,
    /// Its kept blobs are copied into new packs; then it is deleted.
    Repack,
    /// Deleted: nothing in it is kept.
    Remove,
    /// Listed in the index but absent from the store, with nothing kept: dropped from the index.
    Forget,
}

/// What prune will do.
#[derive(Debug)]
pub struct PrunePlan {
    /// Per pack of [`BlobUsage::packs`].
    pub actions: Vec<PackAction>,
    /// For repacked packs: the rows of the blobs to copy.
    pub copy_rows: HashMap<usize, Vec<u32>>,
    /// Packs in no index (deleted).
    pub unreferenced: Vec<PackId>,
    /// The numbers.
    pub stats: PruneStats,
}

struct PackTally {
    kept_blobs: u64,
    kept_bytes: u64,
    unused_blobs: u64,
    unused_bytes: u64,
    kept_rows: Vec<u32>,
}

/// Plans prune over `usage` (marked) and the listing of `packs/` (key → size).
pub fn plan(usage: &mut BlobUsage, listed: &HashMap<PackId, u64>, opts: &PruneOptions) -> Result<PrunePlan> {
    let n = usage.packs.len();
    let mut stats = PruneStats::default();
    let present: Vec<bool> = usage.packs.iter().map(|p| listed.contains_key(&p.id)).collect();
    // Claim one copy of each used blob: first from packs whose every blob is used.
    let all_used: Vec<bool> = usage.packs.iter().map(|p| p.blobs.iter().all(|b| usage.is_used(&b.id))).collect();
    let mut tallies: Vec<Option<PackTally>> = (0..n).map(|_| None).collect();
    for pass in [true, false] {
        for p in 0..n {
            if all_used[p] != pass || !present[p] {
                continue;
            }
            let mut t = PackTally { kept_blobs: 0, kept_bytes: 0, unused_blobs: 0, unused_bytes: 0, kept_rows: Vec::new() };
            let blobs = usage.packs[p].blobs.clone();
            for (row, b) in blobs.iter().enumerate() {
                if usage.claim(&b.id) {
                    t.kept_blobs += 1;
                    t.kept_bytes += u64::from(b.length);
                    t.kept_rows.push(row as u32);
                } else {
                    t.unused_blobs += 1;
                    t.unused_bytes += u64::from(b.length);
                    if usage.is_used(&b.id) {
                        stats.blobs.duplicate += 1;
                        stats.bytes.duplicate += u64::from(b.length);
                    }
                }
            }
            tallies[p] = Some(t);
        }
    }
    if let Some(lost) = usage.first_unkept_used() {
        return Err(EngineError::integrity(
            format!("blob {lost}"),
            "a snapshot uses it but every pack the index lists it in is missing (run check; prune changed nothing)",
        ));
    }
    let mut actions = vec![PackAction::Keep; n];
    let mut candidates: Vec<(usize, u64, u64)> = Vec::new(); // (pack, kept bytes, unused bytes)
    let mut removed_unused = 0u64; // unused blob bytes in deleted packs
    for p in 0..n {
        let pack = &usage.packs[p];
        let Some(t) = &tallies[p] else {
            actions[p] = PackAction::Forget;
            continue;
        };
        let blob_bytes: u64 = pack.blobs.iter().map(|b| u64::from(b.length)).sum();
        let header = pack.size.saturating_sub(blob_bytes);
        let real = listed[&pack.id];
        if real != pack.size && t.kept_blobs > 0 {
            return Err(EngineError::integrity(
                objects::pack_key(&pack.id),
                format!("pack is {real} bytes, the index says {} (run check; prune changed nothing)", pack.size),
            ));
        }
        stats.packfiles.total += 1;
        stats.bytes.total += pack.size;
        stats.blobs.total += pack.blobs.len() as u64;
        stats.blobs.used += t.kept_blobs;
        stats.blobs.unused += t.unused_blobs;
        stats.bytes.unused += t.unused_bytes;
        if t.kept_blobs == 0 {
            stats.packfiles.unused += 1;
            actions[p] = PackAction::Remove;
            stats.packfiles.remove += 1;
            stats.blobs.remove += t.unused_blobs;
            stats.bytes.remove += pack.size;
            removed_unused += t.unused_bytes;
        } else {
            stats.bytes.used += t.kept_bytes + header;
            if t.unused_blobs == 0 {
                stats.packfiles.used += 1;
            } else {
                stats.packfiles.partly_used += 1;
                candidates.push((p, t.kept_bytes + header, t.unused_bytes));
            }
        }
    }
    // Most unused share first: a*(b_total) > b*(a_total) without division.
    candidates.sort_by(|a, b| {
        let (ta, tb) = (u128::from(a.1 + a.2), u128::from(b.1 + b.2));
        (u128::from(b.2) * ta).cmp(&(u128::from(a.2) * tb)).then(a.0.cmp(&b.0))
    });
    let allowed = opts.max_unused.allowed(stats.bytes.used);
    let max_repack = opts.max_repack_bytes.unwrap_or(u64::MAX);
    let mut copy_rows = HashMap::new();
    for (p, kept, unused) in candidates {
        let size = kept + unused;
        let left_unused = stats.bytes.unused - removed_unused - stats.bytes.repack_remove;
        let reached_unused = left_unused <= allowed;
        let reached_repack = stats.bytes.repack + size > max_repack;
        if reached_unused || reached_repack {
            continue;
        }
        let t = tallies[p].take().expect("tallied");
        actions[p] = PackAction::Repack;
        copy_rows.insert(p, t.kept_rows);
        stats.packfiles.repack += 1;
        stats.blobs.repack += t.kept_blobs + t.unused_blobs;
        stats.blobs.repack_remove += t.unused_blobs;
        stats.bytes.repack += usage.packs[p].size;
        stats.bytes.repack_remove += t.unused_bytes;
    }
    stats.packfiles.keep = actions.iter().filter(|a| **a == PackAction::Keep).count() as u64;
    let indexed: std::collections::HashSet<PackId> = usage.packs.iter().map(|p| p.id).collect();
    let mut unreferenced: Vec<PackId> = listed.keys().filter(|id| !indexed.contains(id)).copied().collect();
    unreferenced.sort();
    stats.packfiles.unreferenced = unreferenced.len() as u64;
    stats.bytes.unreferenced = unreferenced.iter().map(|id| listed[id]).sum();
    stats.packfiles.remove_total = stats.packfiles.remove + stats.packfiles.repack + stats.packfiles.unreferenced;
    stats.blobs.remove_total = stats.blobs.remove + stats.blobs.repack_remove;
    stats.blobs.remaining = stats.blobs.total - stats.blobs.remove_total;
    stats.bytes.remove_total = stats.bytes.remove + stats.bytes.repack_remove + stats.bytes.unreferenced;
    stats.bytes.remaining = stats.bytes.total - stats.bytes.remove - stats.bytes.repack_remove;
    stats.bytes.remaining_unused = stats.bytes.unused - removed_unused - stats.bytes.repack_remove;
    Ok(PrunePlan { actions, copy_rows, unreferenced, stats })
}
