//! Snapshots: the manifest model and its encoding.
//!
//! A snapshot object (`snapshots/<id>`, sealed, objects.rs) holds metadata (time, host, tags,
//! paths, parent, counts) and the ids of its *tree blobs*. The tree — one [`TreeEntry`] per
//! path, in the order the agent added them — is a CBOR sequence cut into tree blobs of up to
//! ~1 MiB (content-defined: a blob ends after an entry whose path hash — keyed in format 2 —
//! has 9 low zero bits once it holds ≥ 64 KiB), stored in packs like file chunks (compressed, encrypted, content
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Regular file (has content).
    #[default]
    File,
    /// Directory.
    Dir,
    /// Symbolic link (has target).
    Symlink,
    /// Device, FIFO, socket: the type is in `mode`, a device's number in `rdev`.
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
/// from `lstat` and gets it back on restore, bit for bit. The fields after `content` came after
/// format version 1's first release: optional, absent when empty, so older trees still read
/// (REPOSITORY.md, Snapshots). Build literals with `..TreeEntry::default()` so a new optional
/// field does not break them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Status change time, ns since the epoch (the agent's unchanged-file test: a change that
    /// keeps size and mtime still moves ctime).
    #[serde(rename = "ct", default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<i64>,
    /// Device number of a character or block device (`st_rdev`).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Hard link count (`st_nlink`) of a file with more than one link: restore links the
    /// entries with the same `dev` and `inode` to the first one restored.
    #[serde(rename = "nl", default, skip_serializing_if = "Option::is_none")]
    pub links: Option<u64>,
    /// Extended attributes (POSIX ACLs included, as `system.posix_acl_*`), in the order read.
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// The file had holes at backup (fewer blocks allocated than its size): restore leaves
    /// runs of zeros as holes.
    #[serde(rename = "sp", default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
}

/// One extended attribute of a tree entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Its name, escaped like a file name (names need not be UTF-8).
    #[serde(rename = "n")]
    pub name: String,
    /// Its value (a CBOR byte string).
    #[serde(rename = "v", with = "cbor_bytes")]
    pub value: Vec<u8>,
}

/// `Vec<u8>` as a CBOR byte string (serde's default is an array of integers, ~2x the size).
mod cbor_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// The longest entry path restore accepts, in decoded bytes (Linux's PATH_MAX): a backup reads
/// every file by its path, so an honest snapshot never holds a longer one.
pub const PATH_MAX: usize = 4096;

/// Decodes one escaped name (REPOSITORY.md, "Names": `\\` is a backslash, `\xNN` a byte that
/// is not part of valid UTF-8, everything else is itself) to its bytes; `None` if it is not in
/// the canonical form an agent writes (an unknown escape, or `\xNN` for a byte that needs none:
/// two spellings of one name would defeat duplicate checks).
pub fn unescape_name(text: &str) -> Option<Vec<u8>> {
    decode_escapes(text).filter(|b| !text.contains('\\') || escape_name(b) == text)
}

/// The bytes of an escaped name, or `None` for an escape no agent writes (canonical or not).
fn decode_escapes(text: &str) -> Option<Vec<u8>> {
    if !text.contains('\\') {
        return Some(text.as_bytes().to_vec());
    }
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = b.get(i + 2..i + 4)?;
                if !hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The agent's escaping of a name's bytes (the inverse of [`unescape_name`]).
pub fn escape_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Why `path` is not an entry path an honest agent writes, or `None` if it is one: relative,
/// `/`-separated, every name canonically escaped and, decoded, not empty, not `.` or `..`,
/// without `/` or NUL, and at most [`PATH_MAX`] bytes in all. The sidecar refuses such entries
/// in ADD_ENTRIES (defence in depth: restore checks again, as it trusts no repository); the
/// library's [`crate::BackupSession::add_entry`] writes whatever it is given.
pub fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("the path is empty".into());
    }
    if path.len() > 4 * PATH_MAX {
        return Some(format!("the path is longer than {PATH_MAX} bytes"));
    }
    let mut total = 0usize;
    for name in path.split('/') {
        // Decoded first, so an escaped `..` or `/` is named as what it is.
        let Some(bytes) = decode_escapes(name) else {
            return Some(format!("name {name:?} has an escape no agent writes"));
        };
        if let Some(why) = name_problem(&bytes) {
            return Some(format!("name {name:?} {why}"));
        }
        if name.contains('\\') && escape_name(&bytes) != name {
            return Some(format!("name {name:?} is not canonically escaped"));
        }
        total += bytes.len() + 1;
    }
    (total - 1 > PATH_MAX).then(|| format!("the path is longer than {PATH_MAX} bytes"))
}

/// Why one decoded name cannot be a directory entry, or `None`.
fn name_problem(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [] => Some("is empty"),
        b"." | b".." => Some("is a dot name"),
        _ if bytes.contains(&b'/') => Some("contains '/'"),
        _ if bytes.contains(&0) => Some("contains NUL"),
        _ => None,
    }
}

/// Why `target` is not a symlink target an honest agent writes (canonically escaped, not
/// empty, no NUL once decoded), or `None`. Targets may be absolute or contain `..`: restore
/// creates links, it never follows them.
pub fn target_problem(target: &str) -> Option<String> {
    match decode_escapes(target) {
        None => Some(format!("target {target:?} has an escape no agent writes")),
        Some(b) if b.is_empty() => Some("the target is empty".into()),
        Some(b) if b.contains(&0) => Some(format!("target {target:?} contains NUL")),
        Some(b) if target.contains('\\') && escape_name(&b) != target => Some(format!("target {target:?} is not canonically escaped")),
        Some(_) => None,
    }
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
/// insertion early in the tree does not shift every later blob). `key` is the repository's
/// tree-cut key (format 2, [`crate::chunker::Cdc::tree_key`]): the path is hashed with keyed
/// BLAKE3, so tree blob sizes say nothing about which paths a tree holds to anyone without
/// it. `None` (format 1): unkeyed BLAKE3.
pub fn tree_cut_after(path: &str, buffered: usize, key: Option<&[u8; 32]>) -> bool {
    if buffered >= TREE_BLOB_MAX {
        return true;
    }
    if buffered < TREE_BLOB_MIN {
        return false;
    }
    let h = match key {
        Some(k) => blake3::keyed_hash(k, path.as_bytes()),
        None => blake3::hash(path.as_bytes()),
    };
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
            ..TreeEntry::default()
        }
    }

    #[test]
    fn tree_sequence_round_trips() {
        let c = ContentRef::Chunks { size: 5, chunks: vec![ChunkRef { id: Id([1; 32]), len: 5 }] };
        let l = ContentRef::List { size: 1 << 40, count: 1 << 20, list: Id([2; 32]) };
        let mut link = entry("日本語/ссылка → x", None);
        link.kind = EntryKind::Symlink;
        link.target = Some("../🦀".into());
        let mut special = entry("dev", None);
        special.kind = EntryKind::Other;
        special.rdev = Some(0x0801);
        special.ctime_ns = Some(-5);
        special.xattrs = vec![Xattr { name: "user.k\\xff".into(), value: vec![0, 1, 255] }];
        let mut linked = entry("hard", Some(c.clone()));
        linked.links = Some(2);
        linked.sparse = true;
        let entries = vec![entry("a", Some(c.clone())), entry("b/c", Some(l)), link, entry("", None), special, linked];
        let mut buf = Vec::new();
        for e in &entries {
            encode_entry(e, &mut buf);
        }
        assert_eq!(decode_tree(&buf, "t").unwrap(), entries);
        assert!(decode_tree(&buf[..buf.len() - 1], "t").is_err());
        // The optional fields cost nothing when absent: an entry without them encodes as before
        // (so trees written before they existed decode, and dedup with new ones).
        let mut plain = Vec::new();
        encode_entry(&entry("a", Some(c.clone())), &mut plain);
        let keys: std::collections::BTreeMap<String, ciborium::Value> = ciborium::from_reader(&plain[..]).unwrap();
        assert_eq!(keys.keys().map(String::as_str).collect::<Vec<_>>(), ["c", "d", "g", "k", "m", "n", "p", "s", "t", "u"]);
        assert_eq!(ContentRef::decode(&c.encode()).unwrap(), c);
        assert!(ContentRef::decode(b"\xff").is_err());
    }

    #[test]
    fn names_decode_canonically_and_hostile_paths_are_named() {
        for ok in ["a", "a/b", "back\\\\slash", "\\\\x2e\\\\x2e", "a\\\\x2fb", "x\\xffy", "日本/ü", "..a", "a..", "\u{fffd}"] {
            assert_eq!(path_problem(ok), None, "{ok}");
            let bytes = unescape_name(ok.rsplit('/').next().unwrap()).unwrap();
            assert_eq!(escape_name(&bytes), ok.rsplit('/').next().unwrap());
        }
        assert_eq!(unescape_name("back\\\\slash").unwrap(), b"back\\slash");
        assert_eq!(unescape_name("\\\\x2e\\\\x2e").unwrap(), b"\\x2e\\x2e");
        let long = ["n"; 2049].join("/");
        for bad in [
            "", "/", "/etc/passwd", "a/", "a//b", ".", "..", "a/../../b", "a/./b", "\\x2e\\x2e", "x/\\x2e\\x2e/y",
            "a\\x2fb", "a\\x00b", "\\x41", "a\\q", "a\\", "a\\x4", "a\\xFF", long.as_str(),
        ] {
            assert!(path_problem(bad).is_some(), "{bad:?} must be refused");
        }
        assert_eq!(target_problem("../../etc/passwd"), None);
        assert_eq!(target_problem("/abs\\xfe"), None);
        for bad in ["", "a\\x00", "\\x2f"] {
            assert!(target_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn tree_cuts_are_content_defined_and_bounded() {
        for key in [None, Some(&[1u8; 32])] {
            assert!(!tree_cut_after("anything", 10, key));
            assert!(tree_cut_after("anything", TREE_BLOB_MAX, key));
            let cuts = (0..100_000).filter(|i| tree_cut_after(&format!("dir/file{i}"), TREE_BLOB_MIN, key)).count();
            assert!((100..400).contains(&cuts), "~1/512 of paths cut: {cuts}");
        }
    }

    #[test]
    fn keyed_tree_cuts_depend_on_the_key() {
        let cut_paths = |key: Option<&[u8; 32]>| -> Vec<usize> {
            (0..20_000).filter(|i| tree_cut_after(&format!("home/u/file{i}"), TREE_BLOB_MIN, key)).collect()
        };
        let (a, b, plain) = (cut_paths(Some(&[1; 32])), cut_paths(Some(&[2; 32])), cut_paths(None));
        assert_eq!(a, cut_paths(Some(&[1; 32])), "deterministic given the key");
        assert_ne!(a, b, "another key cuts elsewhere");
        assert_ne!(a, plain, "unkeyed hashing (format 1) cuts elsewhere");
    }
}
