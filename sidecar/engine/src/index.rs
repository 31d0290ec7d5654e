//! The index: where every blob is. On the store, `index/<id>` objects (sealed, objects.rs),
//! each listing some packs and their blob tables — written by a backup after those packs are
//! durable (every `index_every_packs` packs and at commit). In memory, [`MemIndex`]: every
//! blob id → (pack, offset, lengths, kind), built by loading all index objects, used for dedup
//! during a backup and for locating chunks on restore.
//!
//! Memory (REPOSITORY.md §Memory): **39 bytes per blob**. An entry is the first
//! [`KEY_LEN`] (23) bytes of the blob id, the pack's number in a pack table (30 bits, the kind
//! in the other 2) and the offset, envelope length and plaintext length (u32 each), as plain
//! byte arrays (alignment 1, no padding), in sorted `Vec`s: no hash table, no per-entry
//! allocation. Pack ids are stored once, in the pack table (30 bits: 2³⁰ packs, 16 PiB of
//! 16 MiB packs). A lookup compares the 23-byte
//! prefix only; every read then checks the blob's full id against its content (blob.rs), so
//! two ids sharing a prefix (≈ n²/2¹⁸⁵ by chance; ~2⁹² BLAKE3 evaluations for someone who holds
//! the id key) can only make a read fail its integrity check, never return wrong data.
//!
//! Three tiers, all sorted by (key, pack number) except `staging`:
//! - `sorted`: the bulk; `recent`: blobs added since the last merge (merged into `sorted` when
//!   it exceeds 1/8 of it, by a backward in-place merge after growing `sorted` by exactly
//!   `recent`'s length);
//! - `staging`: entries appended by [`MemIndex::stage_pack`] (a refresh loading index objects,
//!   check) and made visible by [`MemIndex::commit_staged`]: sorted in place, deduplicated,
//!   merged. Staging grows by 1/8 at a time (never doubling), and a merge allocates only the
//!   entries it adds, so **loading never holds two copies of the index**: a first load peaks at
//!   the final size plus 1/8, later merges at the index plus twice `recent` (≤ 1/4; tracked,
//!   from capacities, by [`MemIndex::peak_memory_bytes`]).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::blob::BlobKind;
use crate::error::{EngineError, Result};
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

/// Bytes of a blob id kept in memory (see the module comment).
pub const KEY_LEN: usize = 23;
/// Packs one in-memory index can number (the low 2 bits of the pack field hold the kind).
pub const MAX_PACKS: u32 = 1 << 30;
/// `recent` is merged into `sorted` once it holds more than this or 1/8 of `sorted`.
const MIN_MERGE: usize = 4096;

/// One blob's in-memory record: 39 bytes, alignment 1 (all fields are byte arrays).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C)]
struct Entry {
    key: [u8; KEY_LEN],
    /// Big endian: pack number << 2 | kind. Sorting by (key, this) puts the earliest-added
    /// pack of a duplicated blob first.
    pack_kind: [u8; 4],
    offset: [u8; 4],
    length: [u8; 4],
    raw_len: [u8; 4],
}

/// Bytes one blob costs in [`MemIndex`]'s arrays.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

fn key_of(id: &BlobId) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&id.0[..KEY_LEN]);
    k
}

impl Entry {
    fn new(pack: u32, b: &BlobEntry) -> Self {
        Entry {
            key: key_of(&b.id),
            pack_kind: (pack << 2 | u32::from(u8::from(b.kind))).to_be_bytes(),
            offset: b.offset.to_le_bytes(),
            length: b.length.to_le_bytes(),
            raw_len: b.raw_len.to_le_bytes(),
        }
    }

    fn pack(&self) -> u32 {
        u32::from_be_bytes(self.pack_kind) >> 2
    }

    fn kind(&self) -> BlobKind {
        // Only values made from a BlobKind are stored.
        BlobKind::try_from((u32::from_be_bytes(self.pack_kind) & 3) as u8).unwrap_or(BlobKind::Data)
    }
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
    sorted: Vec<Entry>,
    recent: Vec<Entry>,
    staging: Vec<Entry>,
    /// Index objects already loaded (by id).
    loaded: HashSet<Id>,
    peak: usize,
}

/// Grows `v` so that `more` entries fit, by at least 1/8 of its length (never doubling it).
fn reserve_gently(v: &mut Vec<Entry>, more: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.len() / 8));
    }
}

/// Merges sorted `src` into sorted `dst` in place, from the back: `dst` grows by exactly
/// `src.len()`, so the only extra memory is `src` itself.
fn merge_into(dst: &mut Vec<Entry>, src: Vec<Entry>) {
    if dst.is_empty() {
        *dst = src;
        return;
    }
    let (n, m) = (dst.len(), src.len());
    dst.reserve_exact(m);
    dst.resize(n + m, Entry::default());
    let (mut i, mut j) = (n, m);
    while j > 0 {
        let k = i + j - 1;
        if i > 0 && dst[i - 1] > src[j - 1] {
            dst[k] = dst[i - 1];
            i -= 1;
        } else {
            dst[k] = src[j - 1];
            j -= 1;
        }
    }
}

impl MemIndex {
    /// Adds one pack's blobs and makes them visible at once ([`MemIndex::stage_pack`] +
    /// [`MemIndex::commit_staged`]); a blob already known keeps its first location.
    pub fn add_pack(&mut self, p: &IndexedPack) -> Result<()> {
        self.stage_pack(p)?;
        self.commit_staged();
        Ok(())
    }

    /// Appends a pack's blobs to the staging area; they become visible at the next
    /// [`MemIndex::commit_staged`]. Fails only past [`MAX_PACKS`] packs.
    pub fn stage_pack(&mut self, p: &IndexedPack) -> Result<()> {
        let pack = match self.pack_no.get(&p.id) {
            Some(&n) => n,
            None => {
                let n = self.packs.len() as u32;
                if n >= MAX_PACKS {
                    return Err(EngineError::InvalidArgument { message: format!("the index lists more than {MAX_PACKS} packs") });
                }
                self.packs.push(p.id);
                self.pack_sizes.push(p.size);
                self.pack_no.insert(p.id, n);
                n
            }
        };
        reserve_gently(&mut self.staging, p.blobs.len());
        self.staging.extend(p.blobs.iter().map(|b| Entry::new(pack, b)));
        self.note_peak();
        Ok(())
    }

    /// Makes staged blobs visible: sorts them in place, keeps the first location of each id
    /// (the earliest-added pack) unless it is already known, and merges them in.
    pub fn commit_staged(&mut self) {
        if self.staging.is_empty() {
            return;
        }
        let mut add = std::mem::take(&mut self.staging);
        add.sort_unstable();
        add.dedup_by(|b, a| a.key == b.key);
        add.retain(|e| self.find_key(&e.key).is_none());
        add.shrink_to_fit();
        // Each merge grows its destination by exactly the entries it adds, while the source
        // is still alive: that moment is the peak.
        // (Into an empty destination a merge is a move.)
        let grows = |dst: &Vec<Entry>, by: usize| if dst.is_empty() { 0 } else { by * ENTRY_BYTES };
        self.note_peak_with(add.capacity() * ENTRY_BYTES + grows(&self.recent, add.len()));
        merge_into(&mut self.recent, add);
        if self.recent.len() > MIN_MERGE.max(self.sorted.len() / 8) {
            self.note_peak_with(grows(&self.sorted, self.recent.len()));
            let recent = std::mem::take(&mut self.recent);
            merge_into(&mut self.sorted, recent);
        }
        self.note_peak();
    }

    fn note_peak(&mut self) {
        self.note_peak_with(0);
    }

    fn note_peak_with(&mut self, extra: usize) {
        self.peak = self.peak.max(self.memory_bytes() + extra);
    }

    fn find_key(&self, key: &[u8; KEY_LEN]) -> Option<&Entry> {
        for tier in [&self.sorted, &self.recent] {
            if let Ok(i) = tier.binary_search_by(|e| e.key.cmp(key)) {
                return Some(&tier[i]);
            }
        }
        None
    }

    /// Whether the blob is known (staged blobs are not, until committed).
    pub fn contains(&self, id: &BlobId) -> bool {
        self.find_key(&key_of(id)).is_some()
    }

    /// Where the blob is.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.find_key(&key_of(id)).map(|e| BlobLocation {
            pack: self.packs[e.pack() as usize],
            offset: u32::from_le_bytes(e.offset),
            length: u32::from_le_bytes(e.length),
            raw_len: u32::from_le_bytes(e.raw_len),
            kind: e.kind(),
        })
    }

    /// Whether an index object was loaded already.
    pub fn is_loaded(&self, index_id: &Id) -> bool {
        self.loaded.contains(index_id)
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

    /// Heap bytes held, counted from capacities (deterministic: what the allocator was asked
    /// for, hash tables at hashbrown's bucket count of 8/7 × capacity with one control byte per
    /// bucket). For stats and the memory-bound tests.
    pub fn memory_bytes(&self) -> usize {
        let table = |cap: usize, item: usize| cap * 8 / 7 * (item + 1);
        (self.sorted.capacity() + self.recent.capacity() + self.staging.capacity()) * ENTRY_BYTES
            + self.packs.capacity() * 32
            + self.pack_sizes.capacity() * 8
            + table(self.pack_no.capacity(), 32 + 4)
            + table(self.loaded.capacity(), 32)
    }

    /// The highest [`MemIndex::memory_bytes`] seen so far, including the transient buffers of
    /// merges (what loading costs at its worst).
    pub fn peak_memory_bytes(&self) -> usize {
        self.peak.max(self.memory_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_id(i: u32) -> Id {
        // Spread over the key space the way hashes are, deterministically.
        let mut id = *blake3::hash(&i.to_le_bytes()).as_bytes();
        id[28..].copy_from_slice(&i.to_be_bytes());
        Id(id)
    }

    fn pack(n: u32, ids: std::ops::Range<u32>) -> IndexedPack {
        let mut pid = [0u8; 32];
        pid[..4].copy_from_slice(&n.to_be_bytes());
        IndexedPack {
            id: Id(pid),
            size: 100,
            blobs: ids
                .map(|i| BlobEntry { kind: if i % 3 == 0 { BlobKind::Tree } else { BlobKind::Data }, id: blob_id(i), offset: i, length: i + 1, raw_len: i + 2 })
                .collect(),
        }
    }

    #[test]
    fn lookups_across_tiers_and_first_location_wins() {
        let mut m = MemIndex::default();
        for p in 0..10 {
            m.add_pack(&pack(p, p * 1000..(p + 1) * 1000)).unwrap();
        }
        m.add_pack(&pack(99, 0..10)).unwrap(); // duplicates of pack 0's first blobs
        assert_eq!(m.len(), 10_000);
        for i in [0u32, 3, 999, 1000, 5555, 9999] {
            let l = m.get(&blob_id(i)).unwrap();
            assert_eq!(l.pack, pack(i / 1000, 0..0).id);
            assert_eq!((l.offset, l.length, l.raw_len), (i, i + 1, i + 2));
            assert_eq!(l.kind, if i % 3 == 0 { BlobKind::Tree } else { BlobKind::Data });
        }
        assert!(!m.contains(&Id([0xff; 32])));
        // Staged blobs are invisible until committed; duplicates across staged packs keep the
        // earliest pack.
        m.stage_pack(&pack(20, 20_000..20_010)).unwrap();
        m.stage_pack(&pack(21, 20_005..20_020)).unwrap();
        assert!(!m.contains(&blob_id(20_000)));
        m.commit_staged();
        assert_eq!(m.len(), 10_020);
        assert_eq!(m.get(&blob_id(20_007)).unwrap().pack, pack(20, 0..0).id);
        assert_eq!(m.get(&blob_id(20_015)).unwrap().pack, pack(21, 0..0).id);
    }

    /// Ids equal in their first KEY_LEN bytes are one entry: the second counts as known and
    /// resolves to the first's location (a read of it then fails its full-id check in blob.rs).
    #[test]
    fn ids_sharing_the_key_prefix_resolve_to_the_first() {
        let mut m = MemIndex::default();
        let a = pack(1, 0..1);
        let mut b = pack(2, 0..1);
        b.blobs[0].id.0[31] ^= 0xff;
        b.blobs[0].offset = 77;
        m.add_pack(&a).unwrap();
        m.add_pack(&b).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m.contains(&b.blobs[0].id));
        assert_eq!(m.get(&b.blobs[0].id).unwrap().pack, a.id);
        let mut other = b.blobs[0].id;
        other.0[KEY_LEN - 1] ^= 1;
        assert!(!m.contains(&other));
    }

    /// The bound REPOSITORY.md §Memory states: ≤ 40 bytes per blob once loaded, and loading
    /// (index objects staged one by one, as `refresh_index` does, then a backup's additions)
    /// never needs more than 1/8 over the final size.
    #[test]
    fn memory_per_blob_is_at_most_40_bytes_and_loading_never_doubles() {
        assert_eq!(ENTRY_BYTES, 39);
        let mut m = MemIndex::default();
        let (per_pack, packs) = (2_000u32, 150u32);
        for obj in 0..(packs / 10) {
            for p in obj * 10..(obj + 1) * 10 {
                m.stage_pack(&pack(p, p * per_pack..(p + 1) * per_pack)).unwrap();
            }
        }
        m.commit_staged();
        // A backup session then publishes its packs one index object at a time.
        for p in packs..packs + 20 {
            m.add_pack(&pack(p, p * per_pack..(p + 1) * per_pack)).unwrap();
        }
        let blobs = m.len();
        assert_eq!(blobs, ((packs + 20) * per_pack) as usize);
        let per_blob = m.memory_bytes() as f64 / blobs as f64;
        assert!(per_blob <= 40.0, "{per_blob:.2} bytes per blob");
        let peak = m.peak_memory_bytes() as f64 / (blobs * ENTRY_BYTES) as f64;
        println!("{blobs} blobs: {per_blob:.2} bytes per blob, loading peaked at {peak:.3}× the entries");
        assert!(peak <= 1.3, "loading peaked at {peak:.2}× the final size");
        for i in [0, 1, per_pack * packs - 1, per_pack * (packs + 20) - 1] {
            assert_eq!(m.get(&blob_id(i)).unwrap().offset, i);
        }
    }
}
