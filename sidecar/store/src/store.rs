//! `Store`: the handle the sidecar's store ops use — PUT, streaming write, streaming read,
//! STAT, LIST, DELETE over one backend. Cheap to clone (an `Arc` inside); every clone shares
//! the backend, its HTTP connection pool and the background-abort tracker.
//!
//! Payload ownership: data comes in as `Bytes` (the sidecar wraps slot leases with
//! `Bytes::from_owner`, so dropping the last `Bytes` returns the slot). The store never
//! copies payload bytes on the way to a backend that only borrows them while writing (file://,
//! S3): it reads them once in place for the CRC and hands the very same `Bytes` to
//! object_store. memory:// keeps what it is given forever, so for it — and only for it — the
//! payload is copied into an owned buffer first and the caller's `Bytes` are dropped when the
//! call returns.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio_util::task::TaskTracker;

use crate::backend::{self, Backend};
use crate::checksum::{Checksum, Crc32c};
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::key::{parse_key, parse_prefix};
use crate::reader::Reader;
use crate::trailer::{Trailer, TRAILER_LEN};
use crate::writer::Writer;

/// Largest LIST page.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// What the store knows about one object. `size` is always the data size (the trailer is
/// never counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key.
    pub key: String,
    /// Data bytes.
    pub size: u64,
    /// CRC-32C of the data: known after PUT/commit and STAT; `None` in LIST entries (LIST
    /// does not read trailers).
    pub checksum: Option<Checksum>,
    /// The backend's entity tag, if it has one.
    pub e_tag: Option<String>,
    /// Last modification (STAT, LIST; not known after PUT).
    pub last_modified: Option<SystemTime>,
}

/// One LIST page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Objects in ascending key order.
    pub entries: Vec<ObjectInfo>,
    /// Pass back as `page_token` for the next page; `None` on the last page. Opaque to
    /// callers (it is the last key of this page).
    pub next_page_token: Option<String>,
}

/// Store handle. See the module docs.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub backend: Backend,
    pub part_size: usize,
    pub max_parts_in_flight: usize,
    pub read_chunk_size: usize,
    /// Bandwidth limits (ratelimit.rs).
    pub upload_limit: Option<Arc<crate::ratelimit::RateLimit>>,
    pub download_limit: Option<Arc<crate::ratelimit::RateLimit>>,
    /// Aborts of writers dropped without commit run here, so shutdown can wait for them.
    pub background: TaskTracker,
    pub description: String,
}

impl Store {
    /// Opens the store `config` names; S3 settings not in the options come from the process
    /// environment (`AWS_*`). Synchronous: makes no request (a bad bucket or credentials show
    /// up on the first operation).
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::open_with_env(config, std::env::vars())
    }

    /// [`Store::open`] with an explicit environment (for tests and embedding).
    pub fn open_with_env(
        config: &StoreConfig,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StoreError> {
        let backend = backend::build(config, env)?;
        Ok(Self::from_backend(backend, config, config.url.to_string()))
    }

    /// A store over any object_store implementation (tests wrap a backend to observe what it
    /// receives). `retains_payload`: the backend keeps the `Bytes` it is given (then they are
    /// copied first); `sorted_list`: its `list` yields keys in order.
    pub fn from_object_store(
        store: Arc<dyn ObjectStore>,
        config: &StoreConfig,
        retains_payload: bool,
        sorted_list: bool,
    ) -> Self {
        let backend = Backend { store, local: None, retains_payload, sorted_list };
        Self::from_backend(backend, config, "custom".into())
    }

    fn from_backend(backend: Backend, config: &StoreConfig, description: String) -> Self {
        let o = &config.options;
        Self {
            inner: Arc::new(Shared {
                backend,
                part_size: o.part_size,
                max_parts_in_flight: o.max_parts_in_flight,
                read_chunk_size: o.read_chunk_size,
                upload_limit: o.limit_upload.map(|b| Arc::new(crate::ratelimit::RateLimit::new(b))),
                download_limit: o.limit_download.map(|b| Arc::new(crate::ratelimit::RateLimit::new(b))),
                background: TaskTracker::new(),
                description,
            }),
        }
    }

    /// The store URL (no secrets), for logs.
    pub fn describe(&self) -> &str {
        &self.inner.description
    }

    /// The multipart part size writers use.
    pub fn part_size(&self) -> usize {
        self.inner.part_size
    }

    /// Bytes of payload one writer may hold at most (its buffer plus the parts in flight):
    /// the sidecar's slot budget for one streaming upload.
    pub fn max_writer_pinned_bytes(&self) -> usize {
        self.inner.part_size * (self.inner.max_parts_in_flight + 1)
    }

    /// Stores `chunks` (in order) as one object under `key`, atomically (replacing any object
    /// there). The chunks are not copied (except for memory://, see the module docs) and are
    /// all dropped by the time this returns.
    pub async fn put(
        &self,
        key: &str,
        chunks: impl IntoIterator<Item = Bytes>,
    ) -> Result<ObjectInfo, StoreError> {
        self.put_mode(key, chunks, PutMode::Overwrite).await
    }

    /// [`Store::put`], but only if nothing is stored under `key`: `AlreadyExists` otherwise,
    /// and the object there is left as it was. Atomic against a concurrent `put_if_absent` of
    /// the same key (exactly one succeeds): file:// publishes the staged file with `link(2)`
    /// (fails if the name exists), S3 sends `If-None-Match: *` (a server that ignores the
    /// header overwrites instead: callers that depend on it read the object back),
    /// memory:// checks under its lock.
    pub async fn put_if_absent(
        &self,
        key: &str,
        chunks: impl IntoIterator<Item = Bytes>,
    ) -> Result<ObjectInfo, StoreError> {
        self.put_mode(key, chunks, PutMode::Create).await
    }

    async fn put_mode(
        &self,
        key: &str,
        chunks: impl IntoIterator<Item = Bytes>,
        mode: PutMode,
    ) -> Result<ObjectInfo, StoreError> {
        let path = parse_key(key)?;
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let mut crc = Crc32c::new();
        for c in &chunks {
            crc.update(c);
        }
        let trailer = Trailer { data_len: crc.len(), checksum: crc.finish() };
        if let Some(l) = &self.inner.upload_limit {
            l.take(crc.len() as usize).await;
        }
        let payload = self.seal(chunks, &trailer);
        let res = self
            .inner
            .backend
            .store
            .put_opts(&path, payload, PutOptions { mode, ..PutOptions::default() })
            .await
            .map_err(|e| StoreError::from_object_store(e, key))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: trailer.data_len,
            checksum: Some(trailer.checksum),
            e_tag: res.e_tag,
            last_modified: None,
        })
    }

    /// Data chunks + trailer as the payload for one PUT (or the last part). For a backend
    /// that retains payloads, one owned copy; otherwise the same `Bytes`, no copy.
    pub(crate) fn seal(&self, chunks: Vec<Bytes>, trailer: &Trailer) -> PutPayload {
        let trailer = trailer.encode();
        if self.inner.backend.retains_payload {
            let len: usize = chunks.iter().map(Bytes::len).sum();
            let mut owned = Vec::with_capacity(len + TRAILER_LEN);
            for c in &chunks {
                owned.extend_from_slice(c);
            }
            owned.extend_from_slice(&trailer);
            PutPayload::from(owned)
        } else {
            chunks.into_iter().chain(std::iter::once(Bytes::copy_from_slice(&trailer))).collect()
        }
    }

    /// Starts a streaming upload to `key`. Nothing is visible under `key` until
    /// [`Writer::commit`] succeeds; dropping the writer without committing aborts it.
    pub fn open_write(&self, key: &str) -> Result<Writer, StoreError> {
        let path = parse_key(key)?;
        Ok(Writer::new(self.clone(), key.to_owned(), path))
    }

    /// Starts reading `key`: the whole data (`range: None`, checksum verified at the end) or
    /// the data bytes `range` (not verified: the checksum covers the whole object). Fails
    /// here with NotFound if there is no such object.
    pub async fn open_read(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Reader, StoreError> {
        let path = parse_key(key)?;
        Reader::open(self.clone(), key.to_owned(), path, range).await
    }

    /// Size, checksum, ETag and modification time of `key`, from its trailer (one ranged GET
    /// of the last 32 bytes; the trailer is validated).
    pub async fn stat(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let path = parse_key(key)?;
        let opts = GetOptions { range: Some(GetRange::Suffix(TRAILER_LEN as u64)), ..Default::default() };
        let res = self
            .inner
            .backend
            .store
            .get_opts(&path, opts)
            .await
            .map_err(|e| StoreError::from_object_store(e, key))?;
        let meta = res.meta.clone();
        let tail = res.bytes().await.map_err(|e| StoreError::from_object_store(e, key))?;
        let trailer = Trailer::decode(&tail, meta.size)
            .map_err(|reason| StoreError::Corrupt { key: key.to_owned(), reason })?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: trailer.data_len,
            checksum: Some(trailer.checksum),
            e_tag: meta.e_tag,
            last_modified: Some(meta.last_modified.into()),
        })
    }

    /// One page of the objects under `prefix` (whole path segments: `a/b` lists `a/b/x`, not
    /// `a/bx`; empty = everything), in ascending key order, starting after `page_token`.
    /// file:// sorts the whole listing under `prefix` for every page (O(n) per page).
    pub async fn list(
        &self,
        prefix: &str,
        page_token: Option<&str>,
        page_size: usize,
    ) -> Result<ListPage, StoreError> {
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(StoreError::InvalidArgument {
                message: format!("page size {page_size} outside 1..={MAX_PAGE_SIZE}"),
            });
        }
        let prefix_path = parse_prefix(prefix)?;
        let offset = page_token.map(parse_key).transpose()?;
        let store = &self.inner.backend.store;
        let stream = match &offset {
            Some(o) => store.list_with_offset(prefix_path.as_ref(), o),
            None => store.list(prefix_path.as_ref()),
        };
        let map_err = |e| StoreError::from_object_store(e, prefix);
        let mut metas: Vec<ObjectMeta> = if self.inner.backend.sorted_list {
            stream.take(page_size + 1).try_collect().await.map_err(map_err)?
        } else {
            let mut all: Vec<ObjectMeta> = stream.try_collect().await.map_err(map_err)?;
            all.sort_unstable_by(|a, b| a.location.cmp(&b.location));
            all.truncate(page_size + 1);
            all
        };
        let next_page_token = if metas.len() > page_size {
            metas.truncate(page_size);
            metas.last().map(|m| m.location.to_string())
        } else {
            None
        };
        let entries = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size.saturating_sub(TRAILER_LEN as u64),
                checksum: None,
                e_tag: m.e_tag,
                last_modified: Some(m.last_modified.into()),
            })
            .collect();
        Ok(ListPage { entries, next_page_token })
    }

    /// Deletes `key`. Idempotent, as on S3: deleting a missing key succeeds (use STAT to
    /// test existence).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = parse_key(key)?;
        match self.inner.backend.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(e, key)),
        }
    }

    /// Waits until the background aborts of writers dropped without commit have finished
    /// (the sidecar calls this during graceful shutdown; tests call it before checking that
    /// nothing was left behind).
    pub async fn wait_background(&self) {
        let t = &self.inner.background;
        t.close();
        t.wait().await;
        t.reopen();
    }
}
