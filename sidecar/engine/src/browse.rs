//! Reading a repository for people and tools: what the sidecar's browsing and statistics jobs
//! (`cat`, `diff`, `stats`, `tag`) need beyond backup and restore — the blobs a snapshot uses
//! (with their sizes), a file's chunk list, single objects decrypted, and rewriting a
//! snapshot's tags.
//!
//! Nothing here writes except [`Repository::rewrite_snapshot`], which follows restic's `tag`:
//! the new snapshot object is written (under a fresh random id) before the old one is deleted,
//! so a crash in between leaves both (a duplicate the user can forget), never neither.

use std::collections::HashMap;

use crate::blob::BlobKind;
use crate::error::{EngineError, Result};
use crate::id::{BlobId, Id, PackId, SnapshotId};
use crate::index::IndexFile;
use crate::lock::LockFile;
use crate::objects;
use crate::pack::{self, BlobEntry};
use crate::repo::Repository;
use crate::snapshot::{self, ChunkRef, ContentRef, SnapshotFile, TreeEntry};

/// One blob a snapshot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedBlob {
    /// Data (a file's chunk) or metadata (a tree blob, a chunk list).
    pub kind: BlobKind,
    /// Plaintext length.
    pub raw_len: u32,
    /// Stored length (compressed, sealed) in its pack.
    pub stored_len: u32,
}

impl Repository {
    /// A file's chunks in order, reading the chunk-list blob when the content names one.
    pub async fn content_chunks(&self, content: &ContentRef) -> Result<Vec<ChunkRef>> {
        match content {
            ContentRef::Chunks { chunks, .. } => Ok(chunks.clone()),
            ContentRef::List { list, count, .. } => {
                let data = self.read_blob(list).await?;
                let chunks = snapshot::decode_chunk_list(&data, &format!("chunk list {list}"))?;
                if chunks.len() as u64 != *count {
                    return Err(EngineError::integrity(format!("chunk list {list}"), "chunk count differs from the content ref"));
                }
                Ok(chunks)
            }
        }
    }

    /// Every blob `snapshot` references — its tree blobs, its files' chunk lists and chunks —
    /// with their kinds and sizes from the index. Memory: one map entry per distinct blob.
    pub async fn snapshot_blobs(&self, snapshot: &SnapshotFile) -> Result<HashMap<BlobId, UsedBlob>> {
        let mut out = HashMap::new();
        for id in &snapshot.tree {
            self.note_blob(&mut out, id).await?;
        }
        let mut entries = self.entries(snapshot);
        while let Some(e) = entries.next().await? {
            let Some(content) = &e.content else { continue };
            if let ContentRef::List { list, .. } = content {
                self.note_blob(&mut out, list).await?;
            }
            for c in self.content_chunks(content).await? {
                if !out.contains_key(&c.id) {
                    self.note_blob(&mut out, &c.id).await?;
                }
            }
        }
        Ok(out)
    }

    async fn note_blob(&self, out: &mut HashMap<BlobId, UsedBlob>, id: &BlobId) -> Result<()> {
        if out.contains_key(id) {
            return Ok(());
        }
        let loc = self.locate(id).await?;
        out.insert(*id, UsedBlob { kind: loc.kind, raw_len: loc.raw_len, stored_len: loc.length });
        Ok(())
    }

    /// A tree blob's entries.
    pub async fn read_tree_blob(&self, id: &BlobId) -> Result<Vec<TreeEntry>> {
        let data = self.read_blob(id).await?;
        snapshot::decode_tree(&data, &format!("tree blob {id}"))
    }

    /// An index object, decrypted.
    pub async fn read_index_object(&self, id: &Id) -> Result<IndexFile> {
        objects::get_object(&self.inner.store, &self.inner.aead, &objects::index_key(id)).await
    }

    /// A lock object, decrypted.
    pub async fn read_lock_object(&self, id: &Id) -> Result<LockFile> {
        objects::get_object(&self.inner.store, &self.inner.aead, &objects::lock_key(id)).await
    }

    /// A pack's blob table, from its (authenticated) header; the whole pack is read.
    pub async fn read_pack_header(&self, id: &PackId) -> Result<Vec<BlobEntry>> {
        let key = objects::pack_key(id);
        let data = objects::read_all(&self.inner.store, &key).await?;
        pack::parse_pack(&self.inner.aead, id, &data, &key)
    }

    /// An object exactly as stored (for objects kept in plain text, such as key files).
    pub async fn read_raw_object(&self, key: &str) -> Result<bytes::Bytes> {
        objects::read_all(&self.inner.store, key).await
    }

    /// Writes `file` as a new snapshot (a fresh id), then deletes `old`: restic's way to
    /// change a snapshot (`tag`). Returns the new id.
    pub async fn rewrite_snapshot(&self, old: &SnapshotId, file: &SnapshotFile) -> Result<SnapshotId> {
        let id = SnapshotId::random();
        objects::put_object(&self.inner.store, &self.inner.aead, &objects::snapshot_key(&id), file).await?;
        self.inner.store.delete(&objects::snapshot_key(old)).await?;
        Ok(id)
    }
}
