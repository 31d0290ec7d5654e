//! Snapshots: the manifest model and its encoding.
//!
//! A snapshot object (`snapshots/<id>`, sealed, objects.rs) holds metadata (time, host, tags,
//! paths, parent, counts) and the ids of its *tree blobs*. The tree — one [`TreeEntry`] per
//! path, in the order the agent added them — is a CBOR sequence cut into tree blobs of up to
//! ~1 MiB (content-defined: a blob ends after an entry whose path hash has 9 low zero bits once
//! it holds ≥ 64 KiB), stored in packs like file chunks (compressed, encrypted, content
//! addressed). Unchanged stretches of a tree therefore dedup across snapshots, a tree of any
//! size streams in and out in bounded memory, and restore can list entries without loading
//! the whole tree.
//!
//! A file's content is a [`ContentRef`]: its size and chunk list inline, or — above
//! [`INLINE_CHUNKS`] chunks (~64 MiB) — a pointer to a ChunkList blob, so a ContentRef the
//! agent holds stays small for files of any size.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::id::{BlobId, SnapshotId};

/// Above this many chunks a file's chunk list goes into its own blob.
pub const INLINE_CHUNKS: usize = 64;
/// A tree blob is closed at a content-defined point once it holds this much...
pub const TREE_BLOB_MIN: usize = 64 * 1024;
/// ...and unconditionally at this size.
pub const TREE_BLOB_MAX: usize = 1024 * 1024;

/// What a tree entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Regular file (has content).
    File,
    /// Directory.
    Dir,
    /// Symbolic link (has target).
    Symlink,
    /// Device, FIFO, socket: metadata only.
    Other,
}

/// One chunk of a file: its blob id and plaintext length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Blob id (keyed BLAKE3 of the chunk).
    #[serde(rename = "i")]
    pub id: BlobId,
    /// Chunk length.
    #[serde(rename = "n")]
    pub len: u32,
}

/// A file's content, as stored: what `FileWriter::finish` returns, what a snapshot's entry
/// carries, what `open_content` reads. Opaque to the agent (it passes it back by reference for
/// unchanged files); `encode`/`decode` give it a compact byte form for the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentRef {
    /// Chunk list inline (≤ INLINE_CHUNKS chunks; empty for an empty file).
    #[serde(rename = "c")]
    Chunks {
        /// File size (sum of chunk lengths).
        size: u64,
        /// Chunks in file order.
        chunks: Vec<ChunkRef>,
    },
    /// Chunk list in a ChunkList blob.
    #[serde(rename = "l")]
    List {
        /// File size.
        size: u64,
        /// Number of chunks.
        count: u64,
        /// The ChunkList blob's id.
        list: BlobId,
    },
}

impl ContentRef {
    /// The empty file.
    pub fn empty() -> Self {
        Self::Chunks { size: 0, chunks: Vec::new() }
    }

    /// File size.
    pub fn size(&self) -> u64 {
        match self {
            Self::Chunks { size, .. } | Self::List { size, .. } => *size,
        }
    }

    /// Compact byte form (CBOR), for the sidecar's wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        ciborium::into_writer(self, &mut v).expect("encoding to a Vec cannot fail");
        v
    }

    /// Parses [`ContentRef::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        ciborium::from_reader(bytes)
            .map_err(|e| EngineError::InvalidArgument { message: format!("bad content ref: {e}") })
    }
}

/// One path of a snapshot. The engine does not touch the filesystem: the agent fills this in
/// from `lstat` and gets it back on restore, bit for bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Path relative to the backup root, `/`-separated (UTF-8; the agent escapes anything else).
    #[serde(rename = "p")]
    pub path: String,
    /// Type.
    #[serde(rename = "k")]
    pub kind: EntryKind,
    /// st_mode (permission and type bits).
    #[serde(rename = "m")]
    pub mode: u32,
    /// Owner.
    #[serde(rename = "u")]
    pub uid: u32,
    /// Group.
    #[serde(rename = "g")]
    pub gid: u32,
    /// Modification time, ns since the epoch.
    #[serde(rename = "t")]
    pub mtime_ns: i64,
    /// Size in bytes (files: content size; others as lstat says).
    #[serde(rename = "s")]
    pub size: u64,
    /// Inode number (for the agent's unchanged-file test).
    #[serde(rename = "n")]
    pub inode: u64,
    /// Device number.
    #[serde(rename = "d")]
    pub dev: u64,
    /// Symlink target.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// File content (files only).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentRef>,
}

/// Counts and sizes of one backup, stored in its snapshot and returned by commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCounts {
    /// Files not in the parent (as the agent said).
    pub files_new: u64,
    /// Files in the parent whose content was read again.
    pub files_changed: u64,
    /// Files recorded by reference to the parent's content, not read.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks and other entries.
    pub others: u64,
    /// Bytes streamed in through file writers.
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs (not found by dedup).
    pub bytes_added: u64,
    /// Bytes written to the repository (packs incl. headers, index, snapshot).
    pub bytes_added_packed: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Packs written.
    pub packs_added: u64,
}

/// A snapshot object's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Format version (1).
    pub v: u32,
    /// When the backup began, ns since the epoch.
    pub time_ns: i64,
    /// Host that made it.
    pub host: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// The paths backed up (as the agent names them).
    pub paths: Vec<String>,
    /// The snapshot this one was compared against.
    pub parent: Option<SnapshotId>,
    /// Tree blob ids, in order.
    pub tree: Vec<BlobId>,
    /// Number of tree entries.
    pub entries: u64,
    /// What the backup did.
    pub counts: SnapshotCounts,
    /// Seconds the backup took.
    pub duration_ms: u64,
}

/// A snapshot's metadata, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its id.
    pub id: SnapshotId,
    /// The manifest (without the tree's entries, which are in blobs).
    pub file: SnapshotFile,
}

/// Whether a tree blob should end after an entry with this path (content-defined, so an
/// insertion early in the tree does not shift every later blob).
pub fn tree_cut_after(path: &str, buffered: usize) -> bool {
    if buffered >= TREE_BLOB_MAX {
        return true;
    }
    if buffered < TREE_BLOB_MIN {
        return false;
    }
    let h = blake3::hash(path.as_bytes());
    (u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) & 0x1ff) == 0
}

/// Appends one entry to a tree blob's CBOR sequence.
pub fn encode_entry(e: &TreeEntry, out: &mut Vec<u8>) {
    ciborium::into_writer(e, out).expect("encoding to a Vec cannot fail");
}

/// Decodes a tree blob's CBOR sequence.
pub fn decode_tree(blob: &[u8], what: &str) -> Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        let e: TreeEntry =
            ciborium::from_reader(&mut rest).map_err(|e| EngineError::integrity(what, format!("tree entry: {e}")))?;
        out.push(e);
    }
    Ok(out)
}

/// Encodes a ChunkList blob.
pub fn encode_chunk_list(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut v = Vec::with_capacity(chunks.len() * 42);
    ciborium::into_writer(chunks, &mut v).expect("encoding to a Vec cannot fail");
    v
}

/// Decodes a ChunkList blob.
pub fn decode_chunk_list(blob: &[u8], what: &str) -> Result<Vec<ChunkRef>> {
    ciborium::from_reader(blob).map_err(|e| EngineError::integrity(what, format!("chunk list: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn entry(path: &str, content: Option<ContentRef>) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: if content.is_some() { EntryKind::File } else { EntryKind::Dir },
            mode: 0o100644,
            uid: 1000,
            gid: 1000,
            mtime_ns: -1_234_567_890_123,
            size: content.as_ref().map_or(4096, ContentRef::size),
            inode: u64::MAX,
            dev: 66,
            target: None,
            content,
        }
    }

    #[test]
    fn tree_sequence_round_trips() {
        let c = ContentRef::Chunks { size: 5, chunks: vec![ChunkRef { id: Id([1; 32]), len: 5 }] };
        let l = ContentRef::List { size: 1 << 40, count: 1 << 20, list: Id([2; 32]) };
        let mut link = entry("日本語/ссылка → x", None);
        link.kind = EntryKind::Symlink;
        link.target = Some("../🦀".into());
        let entries = vec![entry("a", Some(c.clone())), entry("b/c", Some(l)), link, entry("", None)];
        let mut buf = Vec::new();
        for e in &entries {
            encode_entry(e, &mut buf);
        }
        assert_eq!(decode_tree(&buf, "t").unwrap(), entries);
        assert!(decode_tree(&buf[..buf.len() - 1], "t").is_err());
        assert_eq!(ContentRef::decode(&c.encode()).unwrap(), c);
        assert!(ContentRef::decode(b"\xff").is_err());
    }

    #[test]
    fn tree_cuts_are_content_defined_and_bounded() {
        assert!(!tree_cut_after("anything", 10));
        assert!(tree_cut_after("anything", TREE_BLOB_MAX));
        let cuts = (0..100_000).filter(|i| tree_cut_after(&format!("dir/file{i}"), TREE_BLOB_MIN)).count();
        assert!((100..400).contains(&cuts), "~1/512 of paths cut: {cuts}");
    }
}
