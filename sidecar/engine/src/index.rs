//! The index: where every blob is. On the store, `index/<id>` objects (sealed, objects.rs),
//! each listing some packs and their blob tables — written by a backup after those packs are
//! durable (every `index_every_packs` packs and at commit). In memory, [`MemIndex`]: every
//! blob id → (pack, offset, lengths, kind), built by loading all index objects, used for dedup
//! during a backup and for locating chunks on restore.
//!
//! Memory: a sorted `Vec<(Id, Location)>` — 52 bytes per blob, no per-entry allocation or
//! hash-table slack — plus a small hash map of blobs added since the last merge (merged when
//! it reaches 1/8 of the sorted part). With ~1 MiB chunks that is ~50 MB per TiB of unique
//! data; see REPOSITORY.md §Memory for how this is meant to move to disk for huge
//! repositories.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::blob::BlobKind;
use crate::id::{BlobId, Id, PackId};
use crate::pack::BlobEntry;

/// One index object's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IndexFile {
    /// Format version (1).
    pub v: u32,
    /// Packs described.
    pub packs: Vec<IndexedPack>,
}

/// One pack in an index object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    /// The pack's id.
    pub id: PackId,
    /// Its size in bytes (data, without the store trailer).
    pub size: u64,
    /// Its blob table (as in its header).
    pub blobs: Vec<BlobEntry>,
}

/// In-memory location of a blob; `pack` indexes [`MemIndex`]'s pack table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    pack: u32,
    offset: u32,
    length: u32,
    raw_len: u32,
    kind: BlobKind,
}

/// Where a blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack holding it.
    pub pack: PackId,
    /// Envelope offset in the pack.
    pub offset: u32,
    /// Envelope length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Its kind.
    pub kind: BlobKind,
}

/// Every known blob's location.
#[derive(Debug, Default)]
pub struct MemIndex {
    packs: Vec<PackId>,
    pack_sizes: Vec<u64>,
    pack_no: HashMap<PackId, u32>,
    sorted: Vec<(Id, Location)>,
    recent: HashMap<Id, Location>,
    /// Index objects already loaded (by id).
    loaded: HashSet<Id>,
}

impl MemIndex {
    /// Adds a pack's blobs (a blob already known elsewhere keeps its first location).
    pub fn add_pack(&mut self, p: &IndexedPack) {
        let pack = match self.pack_no.get(&p.id) {
            Some(&n) => n,
            None => {
                let n = self.packs.len() as u32;
                self.packs.push(p.id);
                self.pack_sizes.push(p.size);
                self.pack_no.insert(p.id, n);
                n
            }
        };
        for b in &p.blobs {
            if !self.contains(&b.id) {
                let loc = Location { pack, offset: b.offset, length: b.length, raw_len: b.raw_len, kind: b.kind };
                self.recent.insert(b.id, loc);
            }
        }
        if self.recent.len() > 1024 && self.recent.len() > self.sorted.len() / 8 {
            self.merge();
        }
    }

    fn merge(&mut self) {
        self.sorted.extend(self.recent.drain());
        self.sorted.sort_unstable_by_key(|e| e.0);
        self.sorted.shrink_to_fit();
    }

    fn find(&self, id: &BlobId) -> Option<Location> {
        if let Some(l) = self.recent.get(id) {
            return Some(*l);
        }
        self.sorted.binary_search_by(|e| e.0.cmp(id)).ok().map(|i| self.sorted[i].1)
    }

    /// Whether the blob is known.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.find(id).is_some()
    }

    /// Where the blob is.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.find(id).map(|l| BlobLocation {
            pack: self.packs[l.pack as usize],
            offset: l.offset,
            length: l.length,
            raw_len: l.raw_len,
            kind: l.kind,
        })
    }

    /// Whether an index object was loaded already.
    pub fn is_loaded(&self, index_id: &Id) -> bool {
        self.loaded.contains(index_id)
    }

    /// The index objects loaded so far.
    pub fn loaded_ids(&self) -> impl Iterator<Item = &Id> + '_ {
        self.loaded.iter()
    }

    /// Records an index object as loaded.
    pub fn mark_loaded(&mut self, index_id: Id) {
        self.loaded.insert(index_id);
    }

    /// Known blobs.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// True with no blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Known packs with their sizes.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs.iter().copied().zip(self.pack_sizes.iter().copied())
    }

    /// Approximate heap bytes held (for stats and the memory-bound test).
    pub fn memory_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<(Id, Location)>()
            + self.recent.capacity() * (std::mem::size_of::<(Id, Location)>() + 1)
            + self.packs.capacity() * (32 + 8 + 48)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u32, ids: std::ops::Range<u32>) -> IndexedPack {
        IndexedPack {
            id: Id([n as u8; 32]),
            size: 100,
            blobs: ids
                .map(|i| {
                    let mut id = [0u8; 32];
                    id[..4].copy_from_slice(&i.to_be_bytes());
                    BlobEntry { kind: BlobKind::Data, id: Id(id), offset: i, length: 1, raw_len: 1 }
                })
                .collect(),
        }
    }

    #[test]
    fn lookups_across_merges_and_first_location_wins() {
        let mut m = MemIndex::default();
        for p in 0..10 {
            m.add_pack(&pack(p, p * 1000..(p + 1) * 1000));
        }
        m.add_pack(&pack(99, 0..10)); // duplicates of pack 0's first blobs
        assert_eq!(m.len(), 10_000);
        for i in [0u32, 999, 1000, 5555, 9999] {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let l = m.get(&Id(id)).unwrap();
            assert_eq!(l.pack, Id([(i / 1000) as u8; 32]));
            assert_eq!(l.offset, i);
        }
        assert!(!m.contains(&Id([0xff; 32])));
        assert_eq!(std::mem::size_of::<(Id, Location)>(), 52);
        assert!(m.memory_bytes() < 10_000 * 52 * 2, "{}", m.memory_bytes());
    }
}
