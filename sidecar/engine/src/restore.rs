//! Reading a snapshot back: its entries (for restore, and for the agent's comparison with the
//! parent in an incremental backup) and a file's content as plaintext `Bytes` in order.
//!
//! [`ContentReader`] keeps up to `read_ahead` chunks in flight (ranged GET from the pack, then
//! authenticate + decompress + id check on a worker), and yields them in file order: memory
//! per open file is `read_ahead` × chunk size (4 × ~1 MiB by default). Every chunk is verified
//! before it is handed out: a damaged chunk fails that call with `SHMPIPE_E_INTEGRITY`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::error::{EngineError, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::{self, ChunkRef, ContentRef, SnapshotFile, TreeEntry};

/// Default chunks in flight per content reader.
pub const DEFAULT_READ_AHEAD: usize = 4;

/// Streams a snapshot's tree entries, in the order they were added, one tree blob
/// (≤ ~1 MiB of entries) in memory at a time.
#[derive(Debug)]
pub struct EntryReader {
    repo: Repository,
    tree: Vec<crate::id::BlobId>,
    next_blob: usize,
    buffered: VecDeque<TreeEntry>,
}

impl EntryReader {
    /// The next entry, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<TreeEntry>> {
        while self.buffered.is_empty() {
            let Some(id) = self.tree.get(self.next_blob).copied() else { return Ok(None) };
            self.next_blob += 1;
            let data = self.repo.read_blob(&id).await?;
            self.buffered = snapshot::decode_tree(&data, &format!("tree blob {id}"))?.into();
        }
        Ok(self.buffered.pop_front())
    }

    /// Every remaining entry (convenience for small trees and tests).
    pub async fn collect(mut self) -> Result<Vec<TreeEntry>> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await? {
            out.push(e);
        }
        Ok(out)
    }
}

/// What the agent needs of a parent snapshot's file to decide "unchanged".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentFile {
    /// Size.
    pub size: u64,
    /// mtime, ns.
    pub mtime_ns: i64,
    /// Inode.
    pub inode: u64,
    /// Device.
    pub dev: u64,
    /// Content to reference if unchanged.
    pub content: ContentRef,
}

impl Repository {
    /// The entries of a snapshot.
    pub fn entries(&self, snapshot: &SnapshotFile) -> EntryReader {
        EntryReader { repo: self.clone(), tree: snapshot.tree.clone(), next_blob: 0, buffered: VecDeque::new() }
    }

    /// The entries of the snapshot with this id.
    pub async fn entries_of(&self, id: &SnapshotId) -> Result<EntryReader> {
        Ok(self.entries(&self.snapshot(id).await?))
    }

    /// path → (size, mtime, inode, dev, content) of every file of a snapshot: what the agent
    /// compares against in an incremental backup. Held in memory (~150 B + path per file); a
    /// streaming merge over [`Repository::entries_of`] avoids that for huge trees when the agent
    /// walks in the same order.
    pub async fn parent_files(&self, id: &SnapshotId) -> Result<HashMap<String, ParentFile>> {
        let mut r = self.entries_of(id).await?;
        let mut out = HashMap::new();
        while let Some(e) = r.next().await? {
            if let Some(content) = e.content {
                out.insert(e.path, ParentFile { size: e.size, mtime_ns: e.mtime_ns, inode: e.inode, dev: e.dev, content });
            }
        }
        Ok(out)
    }

    /// A reader of a file's plaintext.
    pub fn open_content(&self, content: &ContentRef) -> ContentReader {
        self.open_content_with(content, DEFAULT_READ_AHEAD)
    }

    /// [`Repository::open_content`] with a read-ahead depth (≥ 1).
    pub fn open_content_with(&self, content: &ContentRef, read_ahead: usize) -> ContentReader {
        let (chunks, list) = match content {
            ContentRef::Chunks { chunks, .. } => (Some(chunks.clone()), None),
            ContentRef::List { list, count, .. } => (None, Some((*list, *count))),
        };
        ContentReader {
            repo: self.clone(),
            size: content.size(),
            chunks,
            list,
            next: 0,
            inflight: VecDeque::new(),
            read_ahead: read_ahead.max(1),
            delivered: 0,
            rest: Bytes::new(),
        }
    }
}

/// Yields a file's plaintext chunk by chunk, verified, with bounded read-ahead. Dropping it
/// cancels the reads in flight.
#[derive(Debug)]
pub struct ContentReader {
    repo: Repository,
    size: u64,
    chunks: Option<Vec<ChunkRef>>,
    list: Option<(crate::id::BlobId, u64)>,
    next: usize,
    inflight: VecDeque<(JoinHandle<Result<Bytes>>, ChunkRef)>,
    read_ahead: usize,
    delivered: u64,
    /// Part of a chunk not yet copied out by `read_into`.
    rest: Bytes,
}

impl Drop for ContentReader {
    fn drop(&mut self) {
        for (h, _) in &self.inflight {
            h.abort();
        }
    }
}

impl ContentReader {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk of plaintext, or `None` at the end (after checking the total size).
    /// Do not mix with `read_into` (which keeps the unread part of a chunk).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.chunks.is_none() {
            let (list, count) = self.list.expect("either chunks or a list");
            let data = self.repo.read_blob(&list).await?;
            let chunks = snapshot::decode_chunk_list(&data, &format!("chunk list {list}"))?;
            if chunks.len() as u64 != count {
                return Err(EngineError::integrity(format!("chunk list {list}"), "chunk count differs from the content ref"));
            }
            self.chunks = Some(chunks);
        }
        let chunks = self.chunks.as_ref().expect("loaded above");
        while self.inflight.len() < self.read_ahead && self.next < chunks.len() {
            let c = chunks[self.next];
            self.next += 1;
            let repo = self.repo.clone();
            self.inflight.push_back((tokio::spawn(async move { repo.read_blob(&c.id).await }), c));
        }
        let Some((h, c)) = self.inflight.pop_front() else {
            if self.delivered != self.size {
                return Err(EngineError::integrity("content", format!("chunks add up to {} bytes, not {}", self.delivered, self.size)));
            }
            return Ok(None);
        };
        let data = h.await??;
        if data.len() != c.len as usize {
            return Err(EngineError::integrity(format!("blob {}", c.id), "chunk length differs from the content ref"));
        }
        self.delivered += data.len() as u64;
        Ok(Some(data))
    }

    /// Fills `buf` (a slot) with the next bytes of the file, across chunk boundaries; returns
    /// how many bytes were written — fewer than `buf.len()` only at the end of the file (0 once
    /// it is done). The one copy of restore: verified plaintext → slot.
    pub async fn read_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            if self.rest.is_empty() {
                match self.next_chunk().await? {
                    Some(b) => self.rest = b,
                    None => break,
                }
            }
            let k = self.rest.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&self.rest[..k]);
            bytes::Buf::advance(&mut self.rest, k);
            n += k;
        }
        Ok(n)
    }

    /// The whole file in memory (tests, small files).
    pub async fn read_to_end(mut self) -> Result<Vec<u8>> {
        // The size comes from the repository: reserve no more than a chunk's worth up front (a
        // hostile content ref claiming 1 TiB must fail as integrity, not abort the process).
        let mut out = Vec::with_capacity(self.size.min(8 << 20) as usize);
        while let Some(b) = self.next_chunk().await? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }
}
