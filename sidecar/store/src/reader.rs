//! `Reader`: one streaming download (OPEN_READ key \[range\] → the sidecar fills slots …).
//!
//! Two ways to consume it:
//! - [`Reader::read_into`] fills a caller-owned buffer (the sidecar passes a slot lease). For
//!   file:// this is a `pread` from the file straight into the slot — the one unavoidable
//!   copy (page cache → slot). For S3 the bytes arrive in the HTTP client's buffers (object_
//!   store has no read-into-caller-buffer API) and are copied once from there into the slot;
//!   that copy plus the kernel's socket copy is the minimum object_store allows.
//! - [`Reader::next_chunk`] / [`Reader::into_stream`] hand out `Bytes` as the backend
//!   produces them (S3: the HTTP client's buffers, no copy; file://: freshly read chunks of
//!   `read_chunk_size`).
//!
//! Integrity: a full read (`range: None`) runs a CRC-32C over every data byte as it is
//! delivered and, before the last byte is handed out, compares it and the length with the
//! trailer; a mismatch fails that last call with `Integrity` (or `Corrupt` for a damaged
//! trailer), so a stream that ends cleanly has been verified. Data handed out earlier is
//! provisional until then. A ranged read is NOT verified: the checksum covers the whole
//! object and a range does not read it all (its bounds are checked against the data size,
//! so the trailer is never returned as data). Per-part/per-block checksums would allow
//! verified ranges; not implemented.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::checksum::Crc32c;
use crate::error::StoreError;
use crate::store::Store;
use crate::trailer::{Trailer, TRAILER_LEN};

/// How much a [`Reader::read_into`] call delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filled {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// The read is complete (and, for a full read, verified): no more calls needed.
    pub end: bool,
}

/// A streaming download. See the module docs.
pub struct Reader {
    key: String,
    /// Data offsets to deliver.
    range: Range<u64>,
    /// Next data offset to deliver.
    pos: u64,
    /// Data size of the object.
    object_size: u64,
    /// Running CRC for full reads; `None` for ranged reads.
    verify: Option<Crc32c>,
    source: Source,
    done: bool,
    /// The store's download limit (ratelimit.rs), paid per chunk handed on.
    limit: Option<std::sync::Arc<crate::ratelimit::RateLimit>>,
}

enum Source {
    /// file://: the trailer was read at open.
    File { file: Arc<File>, trailer: Trailer, chunk: usize },
    /// Other backends: the GET body; for a full read it ends with the trailer.
    Stream {
        body: BoxStream<'static, object_store::Result<Bytes>>,
        /// Received data not yet delivered.
        pending: Bytes,
        /// Object offset of the next byte the body yields.
        body_pos: u64,
        /// Trailer bytes collected from the end of a full read.
        tail: Vec<u8>,
    },
    /// Nothing to read (empty range).
    Empty,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("key", &self.key)
            .field("range", &self.range)
            .field("pos", &self.pos)
            .field("verified", &self.verify.is_some())
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) async fn open(store: Store, key: String, path: Path, range: Option<Range<u64>>) -> Result<Self, StoreError> {
        let limit = store.inner.download_limit.clone();
        let mut r = Self::open_unlimited(store, key, path, range).await?;
        r.limit = limit;
        Ok(r)
    }

    async fn open_unlimited(
        store: Store,
        key: String,
        path: Path,
        range: Option<Range<u64>>,
    ) -> Result<Self, StoreError> {
        if let Some(r) = &range {
            if r.start > r.end {
                return Err(StoreError::InvalidRange { key, start: r.start, end: r.end, size: 0 });
            }
        }
        if let Some(fs) = &store.inner.backend.local {
            let file_path = fs.path_to_filesystem(&path).map_err(|e| StoreError::from_object_store(e, &key))?;
            let k = key.clone();
            let (file, trailer) = tokio::task::spawn_blocking(move || open_local(&file_path, &k)).await??;
            let chunk = store.inner.read_chunk_size;
            let size = trailer.data_len;
            let data = checked_range(&key, range.clone(), size)?;
            let source = Source::File { file: Arc::new(file), trailer, chunk };
            return Ok(Self::new(key, data, size, range.is_none(), source));
        }
        let os = &store.inner.backend.store;
        match range {
            None => {
                let res = os
                    .get_opts(&path, GetOptions::default())
                    .await
                    .map_err(|e| StoreError::from_object_store(e, &key))?;
                let Some(size) = res.meta.size.checked_sub(TRAILER_LEN as u64) else {
                    return Err(StoreError::Corrupt {
                        key,
                        reason: format!("object of {} bytes is shorter than its trailer", res.meta.size),
                    });
                };
                let body = res.into_stream();
                let source = Source::Stream { body, pending: Bytes::new(), body_pos: 0, tail: Vec::new() };
                Ok(Self::new(key, 0..size, size, true, source))
            }
            Some(r) if r.is_empty() => {
                let info = store.stat(&key).await?;
                let data = checked_range(&key, Some(r), info.size)?;
                Ok(Self::new(key, data, info.size, false, Source::Empty))
            }
            Some(r) => {
                let opts = GetOptions { range: Some(GetRange::Bounded(r.clone())), ..Default::default() };
                let res = match os.get_opts(&path, opts).await {
                    Ok(res) => res,
                    Err(e @ object_store::Error::NotFound { .. }) => {
                        return Err(StoreError::from_object_store(e, &key))
                    }
                    Err(e) => {
                        // Most likely the range is past the end (416 / invalid range): say so
                        // if the object exists, else report the store's error.
                        let err = StoreError::from_object_store(e, &key);
                        return match store.stat(&key).await {
                            Ok(info) => Err(checked_range(&key, Some(r), info.size).err().unwrap_or(err)),
                            Err(_) => Err(err),
                        };
                    }
                };
                let size = res.meta.size.saturating_sub(TRAILER_LEN as u64);
                let data = checked_range(&key, Some(r.clone()), size)?;
                let body = res.into_stream();
                let source = Source::Stream { body, pending: Bytes::new(), body_pos: r.start, tail: Vec::new() };
                Ok(Self::new(key, data, size, false, source))
            }
        }
    }

    fn new(key: String, range: Range<u64>, object_size: u64, full: bool, source: Source) -> Self {
        Self {
            key,
            pos: range.start,
            range,
            object_size,
            verify: full.then(Crc32c::new),
            source,
            done: false,
            limit: None,
        }
    }

    /// The key being read.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The data range this reader delivers.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Data bytes still to deliver.
    pub fn remaining(&self) -> u64 {
        self.range.end - self.pos
    }

    /// Data size of the whole object.
    pub fn object_size(&self) -> u64 {
        self.object_size
    }

    /// True for a full read (verified at the end).
    pub fn is_verified_read(&self) -> bool {
        self.verify.is_some()
    }

    /// Fills the start of `buf` with the next data bytes (as many as fit, or all that remain)
    /// and gives `buf` back. `end` is set on the call that delivers the last byte (after
    /// verification, for a full read) and on every call after it. An error ends the read.
    pub async fn read_into<B>(&mut self, mut buf: B) -> Result<(B, Filled), StoreError>
    where
        B: AsMut<[u8]> + Send + 'static,
    {
        if self.done || self.pos == self.range.end {
            self.finish().await?;
            return Ok((buf, Filled { len: 0, end: true }));
        }
        let want = (buf.as_mut().len() as u64).min(self.remaining()) as usize;
        if want == 0 {
            return Ok((buf, Filled { len: 0, end: false }));
        }
        match &mut self.source {
            Source::File { file, .. } => {
                let file = file.clone();
                let pos = self.pos;
                let mut crc = self.verify.take();
                let key = self.key.clone();
                let (b, crc_back) = tokio::task::spawn_blocking(move || {
                    let dst = &mut buf.as_mut()[..want];
                    file.read_exact_at(dst, pos).map_err(|e| io_error(&key, e))?;
                    if let Some(c) = crc.as_mut() {
                        c.update(dst);
                    }
                    Ok::<_, StoreError>((buf, crc))
                })
                .await??;
                buf = b;
                self.verify = crc_back;
            }
            Source::Stream { .. } => {
                let mut filled = 0;
                while filled < want {
                    let piece = self.next_stream_piece(want - filled).await?;
                    buf.as_mut()[filled..filled + piece.len()].copy_from_slice(&piece);
                    if let Some(c) = self.verify.as_mut() {
                        c.update(&piece);
                    }
                    filled += piece.len();
                }
            }
            Source::Empty => unreachable!("empty sources have an empty range"),
        }
        self.pos += want as u64;
        let end = self.pos == self.range.end;
        if end {
            self.finish().await?;
        }
        Ok((buf, Filled { len: want, end }))
    }

    /// The next chunk of data, or `None` once everything was delivered (and, for a full read,
    /// verified — the last chunk is only returned after verification passed).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        if self.done || self.pos == self.range.end {
            self.finish().await?;
            return Ok(None);
        }
        let chunk = match &self.source {
            Source::File { file, chunk, .. } => {
                let n = (*chunk as u64).min(self.remaining()) as usize;
                let file = file.clone();
                let pos = self.pos;
                let key = self.key.clone();
                tokio::task::spawn_blocking(move || {
                    let mut b = BytesMut::zeroed(n);
                    file.read_exact_at(&mut b, pos).map_err(|e| io_error(&key, e))?;
                    Ok::<_, StoreError>(b.freeze())
                })
                .await??
            }
            Source::Stream { .. } => {
                let max = self.remaining().min(usize::MAX as u64) as usize;
                self.next_stream_piece(max).await?
            }
            Source::Empty => unreachable!("empty sources have an empty range"),
        };
        if let Some(l) = &self.limit {
            l.take(chunk.len()).await;
        }
        if let Some(c) = self.verify.as_mut() {
            c.update(&chunk);
        }
        self.pos += chunk.len() as u64;
        if self.pos == self.range.end {
            self.finish().await?;
        }
        Ok(Some(chunk))
    }

    /// The reader as a `Stream` of chunks (ends after verification; an error ends it).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        futures::stream::try_unfold(self, |mut r| async move {
            Ok(r.next_chunk().await?.map(|c| (c, r)))
        })
    }

    /// Up to `max` (> 0) data bytes from the body, without copying.
    async fn next_stream_piece(&mut self, max: usize) -> Result<Bytes, StoreError> {
        let data_end = self.range.end;
        let Source::Stream { body, pending, body_pos, tail } = &mut self.source else {
            unreachable!("stream source")
        };
        while pending.is_empty() {
            let Some(next) = body.next().await else {
                return Err(StoreError::Store {
                    message: format!(
                        "object {:?}: body ended at byte {body_pos}, before byte {data_end}",
                        self.key
                    ),
                    transient: true,
                });
            };
            let mut chunk = next.map_err(|e| StoreError::from_object_store(e, &self.key))?;
            let start = *body_pos;
            *body_pos += chunk.len() as u64;
            if *body_pos > data_end {
                // The part past the data is trailer (full read) — keep it (≤ 32 bytes).
                let data_part = data_end.saturating_sub(start) as usize;
                tail.extend_from_slice(&chunk[data_part..]);
                chunk.truncate(data_part);
            }
            *pending = chunk;
        }
        let n = max.min(pending.len());
        Ok(pending.split_to(n))
    }

    /// All data delivered: for a full read, read the rest of the trailer and verify.
    async fn finish(&mut self) -> Result<(), StoreError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let Some(crc) = self.verify.as_ref() else { return Ok(()) };
        let key = &self.key;
        let trailer = match &mut self.source {
            Source::File { trailer, .. } => *trailer,
            Source::Stream { body, tail, .. } => {
                while let Some(next) = body.next().await {
                    let chunk = next.map_err(|e| StoreError::from_object_store(e, key))?;
                    if tail.len() + chunk.len() > TRAILER_LEN {
                        return Err(StoreError::Corrupt {
                            key: key.clone(),
                            reason: "object is longer than its size said".into(),
                        });
                    }
                    tail.extend_from_slice(&chunk);
                }
                Trailer::decode(tail, self.object_size + TRAILER_LEN as u64)
                    .map_err(|reason| StoreError::Corrupt { key: key.clone(), reason })?
            }
            Source::Empty => unreachable!("empty sources are only used for ranged reads"),
        };
        if crc.len() != trailer.data_len || crc.finish() != trailer.checksum {
            return Err(StoreError::Integrity {
                key: key.clone(),
                expected: trailer.checksum,
                actual: crc.finish(),
            });
        }
        Ok(())
    }
}

/// Opens an object file and reads and validates its trailer.
fn open_local(file_path: &std::path::Path, key: &str) -> Result<(File, Trailer), StoreError> {
    let file = match File::open(file_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound { key: key.to_owned(), message: e.to_string() })
        }
        Err(e) => return Err(io_error(key, e)),
    };
    let meta = file.metadata().map_err(|e| io_error(key, e))?;
    if !meta.is_file() {
        return Err(StoreError::NotFound { key: key.to_owned(), message: "not a file".into() });
    }
    let size = meta.len();
    let corrupt = |reason: String| StoreError::Corrupt { key: key.to_owned(), reason };
    if size < TRAILER_LEN as u64 {
        return Err(corrupt(format!("object of {size} bytes is shorter than its trailer")));
    }
    let mut tail = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut tail, size - TRAILER_LEN as u64).map_err(|e| io_error(key, e))?;
    let trailer = Trailer::decode(&tail, size).map_err(corrupt)?;
    Ok((file, trailer))
}

/// The data range to deliver: the whole data, or `r` if it lies within it.
fn checked_range(key: &str, r: Option<Range<u64>>, size: u64) -> Result<Range<u64>, StoreError> {
    match r {
        None => Ok(0..size),
        Some(r) if r.start <= r.end && r.end <= size => Ok(r),
        Some(r) => Err(StoreError::InvalidRange { key: key.to_owned(), start: r.start, end: r.end, size }),
    }
}

fn io_error(key: &str, e: std::io::Error) -> StoreError {
    StoreError::Store { message: format!("object {key:?}: {e}"), transient: false }
}
