//! Bounds on every size and count a reader takes from a repository, checked before anything
//! is allocated or trusted on their word (REPOSITORY.md §Limits). Authenticated decryption
//! proves an object was written by a key holder, not that its numbers are sane: another host
//! with the password may be buggy or hostile. A value out of bounds is a typed
//! `SHMPIPE_E_INTEGRITY` error naming the object, never a panic or an allocation it asked for.
//!
//! Each bound is far above what this engine writes, and the writer keeps to it (it closes a
//! pack and writes an index object before they reach the blob counts below, and refuses a
//! tree entry or chunk list that would not fit), so no honest repository meets one.

use crate::blob::BlobKind;
use crate::crypto::OVERHEAD;
use crate::index::{IndexFile, IndexedPack};
use crate::pack::{BlobEntry, TAIL_LEN};

/// The `config` object (plain JSON: a few hundred bytes in practice).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A sealed object (index, snapshot, lock) as stored.
pub const MAX_OBJECT_BYTES: u64 = 256 << 20;
/// A sealed object's decompressed CBOR (a zstd frame may claim, or expand to, anything).
pub const MAX_OBJECT_PLAIN: u64 = 256 << 20;
/// A pack header's envelope (~60 bytes per blob).
pub const MAX_PACK_HEADER: u64 = 128 << 20;
/// Blobs in one pack; the writer closes a pack when it holds this many, whatever its size.
pub const MAX_PACK_BLOBS: usize = 1 << 20;
/// Blobs listed by one index object; the writer writes an index object before its packs
/// hold this many (at ~60 bytes of CBOR each: ≤ ~130 MB, under [`MAX_OBJECT_PLAIN`]).
pub const MAX_INDEX_BLOBS: usize = 2 << 20;
/// A pack's size: blob offsets and lengths are u32.
pub const MAX_PACK_SIZE: u64 = u32::MAX as u64;
/// A data blob's plaintext: fastcdc's largest `max_size` (the repository's own is smaller).
pub const MAX_DATA_BLOB: u32 = fastcdc::v2020::MAXIMUM_MAX;
/// A tree blob's plaintext: cut at 1 MiB, plus the one entry that crossed it.
pub const MAX_TREE_BLOB: u32 = 64 << 20;
/// A chunk-list blob's plaintext (~42 bytes per chunk: ~25 M chunks, ~25 TiB at 1 MiB chunks).
pub const MAX_CHUNK_LIST_BLOB: u32 = 1 << 30;

/// The largest plaintext a blob of `kind` may have.
pub fn max_blob_len(kind: BlobKind) -> u32 {
    match kind {
        BlobKind::Data => MAX_DATA_BLOB,
        BlobKind::Tree => MAX_TREE_BLOB,
        BlobKind::ChunkList => MAX_CHUNK_LIST_BLOB,
    }
}

/// Why one blob-table row (a pack header's or an index's) cannot be what this engine
/// writes: its plaintext over its kind's bound, or a stored length no envelope has — at
/// least nonce + mode byte + tag, and at most the plaintext stored raw (the writer keeps a
/// compressed payload only when it is smaller). Offsets are checked by [`tiling_problem`].
pub fn blob_entry_problem(b: &BlobEntry) -> Option<String> {
    let max = max_blob_len(b.kind);
    if b.raw_len > max {
        return Some(format!("{:?} blob {} claims {} bytes (at most {max})", b.kind, b.id, b.raw_len));
    }
    let stored_max = u64::from(b.raw_len) + OVERHEAD as u64 + 1;
    if u64::from(b.length) < OVERHEAD as u64 + 1 || u64::from(b.length) > stored_max {
        return Some(format!("blob {} is stored in {} bytes, impossible for {} bytes of plaintext", b.id, b.length, b.raw_len));
    }
    None
}

/// Why a blob table does not tile `0..data_end` (each blob where the previous ended, the last
/// ending at the header) with valid rows, or `None`.
pub fn tiling_problem(blobs: &[BlobEntry], data_end: u64) -> Option<String> {
    if blobs.len() > MAX_PACK_BLOBS {
        return Some(format!("{} blobs in one pack (at most {MAX_PACK_BLOBS})", blobs.len()));
    }
    let mut pos = 0u64;
    for b in blobs {
        if let Some(p) = blob_entry_problem(b) {
            return Some(p);
        }
        if u64::from(b.offset) != pos {
            return Some("blob table has gaps or overlaps".into());
        }
        pos += u64::from(b.length);
    }
    (pos != data_end).then(|| "blob table does not end at the header".into())
}

/// Why an indexed pack is impossible: size out of range, or a blob table that does not tile
/// the pack's data area (which ends, before at least an empty header's envelope and the
/// tail, at most `size - OVERHEAD - TAIL_LEN`).
pub fn indexed_pack_problem(p: &IndexedPack) -> Option<String> {
    let floor = (OVERHEAD + TAIL_LEN) as u64;
    if !(floor..=MAX_PACK_SIZE).contains(&p.size) {
        return Some(format!("pack {} has size {}", p.id, p.size));
    }
    if p.blobs.len() > MAX_PACK_BLOBS {
        return Some(format!("pack {} lists {} blobs (at most {MAX_PACK_BLOBS})", p.id, p.blobs.len()));
    }
    let data_end = p.blobs.last().map_or(0, |b| u64::from(b.offset) + u64::from(b.length));
    if data_end > p.size - floor {
        return Some(format!("pack {}: its blobs run past its size {}", p.id, p.size));
    }
    tiling_problem(&p.blobs, data_end).map(|why| format!("pack {}: {why}", p.id))
}

/// Why an index object is not one this engine writes, or `None`.
pub fn index_problem(f: &IndexFile) -> Option<String> {
    if f.v != 1 {
        return Some(format!("index version {}", f.v));
    }
    let blobs: usize = f.packs.iter().map(|p| p.blobs.len()).sum();
    if blobs > MAX_INDEX_BLOBS {
        return Some(format!("{blobs} blobs in one index object (at most {MAX_INDEX_BLOBS})"));
    }
    f.packs.iter().find_map(indexed_pack_problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn row(kind: BlobKind, offset: u32, length: u32, raw_len: u32) -> BlobEntry {
        BlobEntry { kind, id: Id([1; 32]), offset, length, raw_len }
    }

    #[test]
    fn rows_and_tables_out_of_bounds_are_named() {
        assert_eq!(blob_entry_problem(&row(BlobKind::Data, 0, 129, 100)), None, "raw: plaintext + 29");
        assert_eq!(blob_entry_problem(&row(BlobKind::Data, 0, 40, 1000)), None, "compressed");
        for bad in [
            row(BlobKind::Data, 0, 29, MAX_DATA_BLOB + 1),
            row(BlobKind::Tree, 0, 29, MAX_TREE_BLOB + 1),
            row(BlobKind::ChunkList, 0, 29, u32::MAX),
            row(BlobKind::Data, 0, 28, 0),
            row(BlobKind::Data, 0, 131, 100),
            row(BlobKind::Data, 0, u32::MAX, 10),
        ] {
            assert!(blob_entry_problem(&bad).is_some(), "{bad:?}");
        }
        let ok = [row(BlobKind::Data, 0, 129, 100), row(BlobKind::Tree, 129, 30, 1)];
        assert_eq!(tiling_problem(&ok, 159), None);
        assert!(tiling_problem(&ok, 160).is_some());
        assert!(tiling_problem(&[ok[1]], 30).is_some(), "does not start at 0");
        let pack = |size, blobs: &[BlobEntry]| IndexedPack { id: Id([2; 32]), size, blobs: blobs.to_vec() };
        assert_eq!(indexed_pack_problem(&pack(159 + 40 + 12, &ok)), None);
        assert!(indexed_pack_problem(&pack(159, &ok)).is_some(), "no room for the header");
        assert!(indexed_pack_problem(&pack(u64::MAX, &ok)).is_some());
        assert!(indexed_pack_problem(&pack(0, &[])).is_some());
        assert_eq!(index_problem(&IndexFile { v: 1, packs: vec![pack(1000, &ok)] }), None);
        assert!(index_problem(&IndexFile { v: 2, packs: vec![] }).is_some());
    }
}
