//! JSON forms of repository objects for the browsing jobs (`cat`, `diff`, `stats`, `tag`): ids
//! as 64 hex digits (the engine serializes them as CBOR byte strings), blob kinds by name, and
//! the argument parsing they share.

use shmpipe_engine::index::IndexedPack;
use shmpipe_engine::pack::BlobEntry;
use shmpipe_engine::{BlobKind, Id, SnapshotFile};

use crate::ops::error::{OpError, OpResult, CODE_MALFORMED};

/// An id argument (64 hex digits).
pub fn id_arg(field: &str, text: &str) -> OpResult<Id> {
    Id::from_hex(text).map_err(|_| OpError { code: CODE_MALFORMED, message: format!("job arguments: {field} must be an id (64 hex digits), got {text:?}") })
}

pub fn kind_name(k: BlobKind) -> &'static str {
    match k {
        BlobKind::Data => "data",
        BlobKind::Tree => "tree",
        BlobKind::ChunkList => "chunk_list",
    }
}

pub fn blob_entry_json(b: &BlobEntry) -> serde_json::Value {
    serde_json::json!({ "type": kind_name(b.kind), "id": b.id.to_hex(), "offset": b.offset, "length": b.length, "raw_length": b.raw_len })
}

pub fn indexed_pack_json(p: &IndexedPack) -> serde_json::Value {
    serde_json::json!({ "id": p.id.to_hex(), "size": p.size, "blobs": p.blobs.iter().map(blob_entry_json).collect::<Vec<_>>() })
}

/// A snapshot object in full (with its tree blob ids), for `cat snapshot`.
pub fn snapshot_file_json(id: &Id, f: &SnapshotFile) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_hex(),
        "v": f.v,
        "time_ns": f.time_ns.to_string(),
        "host": f.host,
        "tags": f.tags,
        "paths": f.paths,
        "parent": f.parent.map(|p| p.to_hex()),
        "tree": f.tree.iter().map(Id::to_hex).collect::<Vec<_>>(),
        "entries": f.entries,
        "counts": f.counts,
        "duration_ms": f.duration_ms,
    })
}
