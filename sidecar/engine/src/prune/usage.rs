//! Which indexed blobs the snapshots still use, in bounded memory: the index's pack tables
//! (which prune needs anyway to rewrite the index) plus an 8-byte *position* per blob copy —
//! (pack number, row) sorted by blob id, so a blob id is found by binary search without a
//! second copy of the ids — and two bits per position (`used`, and `owned`: the one copy of
//! a used blob that stays). Trees are never held whole: marking reads one tree blob (≤ 1 MiB)
//! or chunk list at a time, and skips a tree blob or chunk list already marked (unchanged
//! stretches of trees are shared between snapshots, so most of a repository's trees are
//! read once).

use crate::id::BlobId;
use crate::index::{BlobLocation, IndexedPack};

/// A fixed-size bitset.
#[derive(Debug, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// `n` zero bits.
    pub fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    /// Bit `i`.
    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; returns whether it was already set.
    pub fn set(&mut self, i: usize) -> bool {
        let was = self.get(i);
        self.0[i / 64] |= 1 << (i % 64);
        was
    }
}

/// The index's blobs and which of them are used.
#[derive(Debug)]
pub struct BlobUsage {
    /// Every indexed pack (each once), with its blob table.
    pub packs: Vec<IndexedPack>,
    /// (pack, row) of every blob copy, sorted by blob id (copies of one id are adjacent).
    positions: Vec<(u32, u32)>,
    /// Per position of an id's first copy: a snapshot uses the blob.
    used: Bits,
    /// Per position: this copy is the one kept (set by [`BlobUsage::claim`]).
    owned: Bits,
}

impl BlobUsage {
    /// Builds the position table over `packs`.
    pub fn new(packs: Vec<IndexedPack>) -> Self {
        let mut positions: Vec<(u32, u32)> = packs
            .iter()
            .enumerate()
            .flat_map(|(p, pack)| (0..pack.blobs.len()).map(move |r| (p as u32, r as u32)))
            .collect();
        positions.sort_unstable_by(|a, b| Self::id_in(&packs, *a).cmp(Self::id_in(&packs, *b)).then(a.cmp(b)));
        let n = positions.len();
        Self { packs, positions, used: Bits::new(n), owned: Bits::new(n) }
    }

    fn id_in(packs: &[IndexedPack], (p, r): (u32, u32)) -> &BlobId {
        &packs[p as usize].blobs[r as usize].id
    }

    fn id_at(&self, pos: usize) -> &BlobId {
        Self::id_in(&self.packs, self.positions[pos])
    }

    /// Position of the first copy of `id`, if indexed.
    fn find(&self, id: &BlobId) -> Option<usize> {
        let i = self.positions.partition_point(|&p| Self::id_in(&self.packs, p) < id);
        (i < self.positions.len() && self.id_at(i) == id).then_some(i)
    }

    /// Where the first indexed copy of `id` is.
    pub fn location(&self, id: &BlobId) -> Option<BlobLocation> {
        let (p, r) = self.positions[self.find(id)?];
        let pack = &self.packs[p as usize];
        let b = &pack.blobs[r as usize];
        Some(BlobLocation { pack: pack.id, offset: b.offset, length: b.length, raw_len: b.raw_len, kind: b.kind })
    }

    /// Blob copies indexed.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True with no blob.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Marks `id` used. `None`: not in the index; `Some(true)`: it was marked before.
    pub fn mark(&mut self, id: &BlobId) -> Option<bool> {
        let i = self.find(id)?;
        Some(self.used.set(i))
    }

    /// Whether `id` is used.
    pub fn is_used(&self, id: &BlobId) -> bool {
        self.find(id).is_some_and(|i| self.used.get(i))
    }

    /// For a used blob: claims this pack's copy as the one kept, unless a copy was claimed
    /// before (from another pack, or earlier in this one). True if this copy is now the kept one.
    pub fn claim(&mut self, id: &BlobId) -> bool {
        let Some(first) = self.find(id) else { return false };
        if !self.used.get(first) {
            return false;
        }
        let mut i = first;
        while i < self.positions.len() && self.id_at(i) == id {
            if self.owned.get(i) {
                return false;
            }
            i += 1;
        }
        self.owned.set(first);
        true
    }

    /// A used blob none of whose copies was claimed (all in missing packs), if any.
    pub fn first_unkept_used(&self) -> Option<BlobId> {
        let mut i = 0;
        while i < self.positions.len() {
            let id = *self.id_at(i);
            let mut j = i;
            let mut kept = false;
            while j < self.positions.len() && *self.id_at(j) == id {
                kept |= self.owned.get(j);
                j += 1;
            }
            if self.used.get(i) && !kept {
                return Some(id);
            }
            i = j;
        }
        None
    }

    /// Approximate heap bytes of the marking structures (positions and bits; the pack
    /// tables are the index itself).
    pub fn marking_bytes(&self) -> usize {
        self.positions.capacity() * 8 + 2 * self.positions.len().div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;
    use crate::id::Id;
    use crate::pack::BlobEntry;

    fn pack(n: u8, ids: &[u8]) -> IndexedPack {
        let blobs = ids
            .iter()
            .map(|&i| BlobEntry { kind: BlobKind::Data, id: Id([i; 32]), offset: 0, length: 1, raw_len: 1 })
            .collect();
        IndexedPack { id: Id([n; 32]), size: 1, blobs }
    }

    #[test]
    fn marks_and_claims_one_copy_of_each_used_blob() {
        let mut u = BlobUsage::new(vec![pack(1, &[5, 3, 9]), pack(2, &[3, 7]), pack(3, &[3])]);
        assert_eq!(u.len(), 6);
        assert_eq!(u.mark(&Id([3; 32])), Some(false));
        assert_eq!(u.mark(&Id([3; 32])), Some(true));
        assert_eq!(u.mark(&Id([7; 32])), Some(false));
        assert_eq!(u.mark(&Id([4; 32])), None);
        assert!(u.is_used(&Id([3; 32])) && !u.is_used(&Id([5; 32])));
        // The first pack to claim 3 keeps it; the other copies are unused.
        assert!(u.claim(&Id([3; 32])));
        assert!(!u.claim(&Id([3; 32])));
        assert!(!u.claim(&Id([5; 32])), "unused blobs are never kept");
        assert!(u.claim(&Id([7; 32])));
        assert!(u.marking_bytes() < 100);
    }
}
