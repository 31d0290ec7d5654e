//! `Writer`: one streaming upload (OPEN_WRITE key → WRITE … → COMMIT | ABORT).
//!
//! Chunks are buffered without copying (a queue of `Bytes`) and cut into parts of exactly
//! `part_size` bytes (a part is a multi-chunk `PutPayload`; a chunk straddling two parts is
//! split with `Bytes::split_to`, which shares the allocation). The multipart upload is created
//! only when more than one part's worth of data has arrived; an object that never exceeds
//! `part_size` is a single PUT at commit. Either way nothing is visible under the key before
//! commit: S3 shows a multipart object only on CompleteMultipartUpload; file:// writes a
//! `key#N` staging file (hidden from LIST/GET) and renames it on completion.
//!
//! Parts upload as spawned tasks (they progress while the sidecar waits for the agent's next
//! WRITE), at most `max_parts_in_flight` at once: `write` awaits a finished part when the
//! budget is used (backpressure; the agent's WRITE completes later). A failed part fails the
//! next `write`/`commit`, which aborts the upload before returning the error.
//!
//! Cancellation: every remote step (creating the upload, the parts) is a task owned by the
//! writer, and the buffer changes only after the last await of a `write`, so a `write` future
//! dropped before completion has not taken its chunk (the writer is unchanged). A writer
//! dropped without `commit`/`abort` (agent disconnected, session torn down, commit future
//! dropped) aborts in the background: in-flight parts are cancelled and awaited, then the
//! multipart upload is aborted (S3) / the staging file removed (file://); buffered chunks are
//! released at once, chunks inside parts when the backend lets go of them (file:// part writes
//! already running on the blocking pool finish first). That needs a tokio runtime at drop
//! time; without one the abort is only logged (configure an S3 lifecycle rule for incomplete
//! multipart uploads as the safety net). [`crate::Store::wait_background`] waits for these.

use std::collections::VecDeque;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, PutMultipartOptions, PutPayload};
use tokio::task::{JoinHandle, JoinSet};

use crate::checksum::Crc32c;
use crate::config::MAX_PARTS;
use crate::error::StoreError;
use crate::store::{ObjectInfo, Store};
use crate::trailer::Trailer;

type PartResult = object_store::Result<()>;
type CreateResult = object_store::Result<Box<dyn MultipartUpload>>;

/// A streaming upload. See the module docs.
#[derive(Debug)]
pub struct Writer {
    state: Option<State>,
}

#[derive(Debug)]
struct State {
    store: Store,
    key: String,
    path: Path,
    crc: Crc32c,
    buffer: VecDeque<Bytes>,
    buffered: usize,
    upload: Upload,
    parts: JoinSet<PartResult>,
    parts_started: usize,
    /// Set after a failure: the upload has been aborted and the writer only reports it.
    failed: Option<String>,
}

#[derive(Debug)]
enum Upload {
    /// No multipart upload (yet): a commit now is a single PUT.
    None,
    Creating(JoinHandle<CreateResult>),
    Ready(Box<dyn MultipartUpload>),
}

impl Writer {
    pub(crate) fn new(store: Store, key: String, path: Path) -> Self {
        Self {
            state: Some(State {
                store,
                key,
                path,
                crc: Crc32c::new(),
                buffer: VecDeque::new(),
                buffered: 0,
                upload: Upload::None,
                parts: JoinSet::new(),
                parts_started: 0,
                failed: None,
            }),
        }
    }

    /// The key being written.
    pub fn key(&self) -> &str {
        self.state.as_ref().map_or("", |s| s.key.as_str())
    }

    /// Data bytes written so far.
    pub fn len(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.crc.len())
    }

    /// True before the first non-empty write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in the buffer, not yet in a part (their `Bytes` — slots — are pinned).
    pub fn buffered_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.buffered)
    }

    /// Parts uploading now (each pins `part_size` bytes of `Bytes` until it finishes).
    pub fn parts_in_flight(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.parts.len())
    }

    /// Appends `chunk`. Returns once the chunk is buffered or handed to a part upload. If the
    /// chunk completes a part and `max_parts_in_flight` parts are already uploading, it first
    /// waits for one to finish (backpressure). Cancel-safe: if this future is dropped before
    /// it completes, the chunk was not taken (the writer is as before; write it again). The
    /// chunk (its slot) is released when the part containing it has been uploaded (or at
    /// commit/abort). On error the upload is already aborted and the writer is dead.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let st = self.state.as_mut().expect("writer state is present until commit/abort");
        st.check_failed()?;
        if chunk.is_empty() {
            return Ok(());
        }
        let part_size = st.store.inner.part_size;
        let total = st.buffered + chunk.len();
        // Parts this chunk completes; the buffer always keeps 1..=part_size bytes back, so the
        // last part is cut at commit and the trailer can join it.
        let parts = if total > part_size { (total - 1) / part_size } else { 0 };
        if parts > 0 {
            // Keep two for commit: the remainder plus the trailer may need a full and a last part.
            if st.parts_started + parts + 2 > MAX_PARTS {
                let e = StoreError::internal(format!(
                    "object exceeds {MAX_PARTS} parts of {part_size} bytes; raise the part size"
                ));
                return st.fail_on_error(Err(e)).await;
            }
            let r = st.make_room(parts).await;
            st.fail_on_error(r).await?;
        }
        // No await from here on: the chunk is either not taken or fully accounted for.
        let chunk = if st.store.inner.backend.retains_payload {
            // memory:// keeps what it is given: copy so the slot goes back now.
            Bytes::copy_from_slice(&chunk)
        } else {
            chunk
        };
        st.crc.update(&chunk);
        st.buffered += chunk.len();
        st.buffer.push_back(chunk);
        for _ in 0..parts {
            st.start_part(part_size);
        }
        Ok(())
    }

    /// Finishes the upload and makes the object visible (replacing any object under the
    /// key). Dropping this future before it completes aborts the upload (whether a
    /// CompleteMultipartUpload already sent is then applied is up to the server).
    pub async fn commit(mut self) -> Result<ObjectInfo, StoreError> {
        let st = self.state.as_mut().expect("writer state is present until commit/abort");
        st.check_failed()?;
        let trailer = Trailer { data_len: st.crc.len(), checksum: st.crc.finish() };
        let result = if matches!(st.upload, Upload::None) {
            let chunks: Vec<Bytes> = st.buffer.drain(..).collect();
            st.buffered = 0;
            let store = &st.store.inner.backend.store;
            let payload = st.store.seal(chunks, &trailer);
            store
                .put_opts(&st.path, payload, Default::default())
                .await
                .map_err(|e| StoreError::from_object_store(e, &st.key))
        } else {
            let r = st.finish_multipart(&trailer).await;
            st.fail_on_error(r).await
        };
        let put = result?;
        let st = self.state.take().expect("present");
        Ok(ObjectInfo {
            key: st.key,
            size: trailer.data_len,
            checksum: Some(trailer.checksum),
            e_tag: put.e_tag,
            last_modified: None,
        })
    }

    /// Abandons the upload: cancels parts in flight and aborts the multipart upload, so no
    /// part and no object remains. Returns the store's error if the abort request failed.
    pub async fn abort(mut self) -> Result<(), StoreError> {
        let mut st = self.state.take().expect("writer state is present until commit/abort");
        st.buffer.clear();
        st.spawn_abort().await?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let Some(mut st) = self.state.take() else { return };
        if !st.has_remote() {
            return; // never reached the store: nothing to undo
        }
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!(key = %st.key, "writer dropped outside a tokio runtime: its multipart upload is not aborted");
            return;
        }
        let key = st.key.clone();
        let handle = st.spawn_abort();
        st.store.inner.background.spawn(async move {
            match handle.await {
                Ok(Ok(())) => tracing::debug!(key = %key, "abandoned upload aborted"),
                Ok(Err(e)) => tracing::warn!(key = %key, error = %e, "abort of an abandoned upload failed"),
                Err(e) => tracing::warn!(key = %key, error = %e, "abort task failed"),
            }
        });
    }
}

impl State {
    fn check_failed(&self) -> Result<(), StoreError> {
        match &self.failed {
            Some(reason) => Err(StoreError::Aborted { key: self.key.clone(), reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn has_remote(&self) -> bool {
        !matches!(self.upload, Upload::None) || !self.parts.is_empty()
    }

    /// On error: remember it, abort what exists remotely, drop buffered chunks (release
    /// slots), and pass the error on.
    async fn fail_on_error<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
            self.buffer.clear();
            self.buffered = 0;
            // Awaiting the task's handle (not the abort itself) keeps this cancel-safe: if
            // this future is dropped, the abort still runs to the end.
            match self.spawn_abort().await {
                Ok(Ok(())) => {}
                Ok(Err(abort_err)) => {
                    tracing::warn!(key = %self.key, error = %abort_err, "abort after a failed upload failed")
                }
                Err(join_err) => tracing::warn!(key = %self.key, error = %join_err, "abort task failed"),
            }
        }
        r
    }

    /// Moves the remote state (parts in flight, the multipart upload) into a background
    /// task that aborts it; the task is tracked so shutdown can wait for it.
    fn spawn_abort(&mut self) -> JoinHandle<Result<(), StoreError>> {
        let parts = std::mem::take(&mut self.parts);
        let upload = std::mem::replace(&mut self.upload, Upload::None);
        let key = self.key.clone();
        self.store.inner.background.spawn(async move {
            abort_upload(parts, upload).await.map_err(|e| match e {
                StoreError::Store { message, transient } => StoreError::Store {
                    message: format!("aborting the upload of {key:?}: {message}"),
                    transient,
                },
                other => other,
            })
        })
    }

    /// Waits until the upload exists and `parts` more parts fit in the in-flight budget (or
    /// nothing is in flight, for a chunk larger than the whole budget). Cancel-safe.
    async fn make_room(&mut self, parts: usize) -> Result<(), StoreError> {
        self.ensure_upload().await?;
        self.reap()?;
        let max = self.store.inner.max_parts_in_flight;
        while !self.parts.is_empty() && self.parts.len() + parts > max {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Cuts the next part (`n` bytes, at most what is buffered) and starts its upload.
    fn start_part(&mut self, n: usize) {
        let payload = self.take_front(n.min(self.buffered));
        let Upload::Ready(upload) = &mut self.upload else { unreachable!("make_room created it") };
        let limit = self.store.inner.upload_limit.clone();
        let len = payload.content_length();
        let part = upload.put_part(payload);
        self.parts.spawn(async move {
            if let Some(l) = limit {
                l.take(len).await;
            }
            part.await
        });
        self.parts_started += 1;
    }

    /// `n` bytes off the front of the buffer as one part, splitting a chunk if needed (no copy).
    fn take_front(&mut self, n: usize) -> PutPayload {
        let mut part = Vec::new();
        let mut need = n;
        while need > 0 {
            let front = self.buffer.front_mut().expect("buffered >= n");
            if front.len() <= need {
                need -= front.len();
                part.push(self.buffer.pop_front().expect("front exists"));
            } else {
                part.push(front.split_to(need));
                need = 0;
            }
        }
        self.buffered -= n;
        part.into_iter().collect()
    }

    async fn ensure_upload(&mut self) -> Result<(), StoreError> {
        if let Upload::None = self.upload {
            let store = self.store.inner.backend.store.clone();
            let path = self.path.clone();
            self.upload = Upload::Creating(tokio::spawn(async move {
                store.put_multipart_opts(&path, PutMultipartOptions::default()).await
            }));
        }
        if let Upload::Creating(handle) = &mut self.upload {
            // Awaiting `&mut JoinHandle` is cancel-safe: the handle stays in `self`.
            let created = handle.await;
            self.upload = Upload::None;
            let upload = created?.map_err(|e| StoreError::from_object_store(e, &self.key))?;
            self.upload = Upload::Ready(upload);
        }
        Ok(())
    }

    /// Surfaces failures of parts that already finished.
    fn reap(&mut self) -> Result<(), StoreError> {
        while let Some(r) = self.parts.try_join_next() {
            r?.map_err(|e| StoreError::from_object_store(e, &self.key))?;
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StoreError> {
        if let Some(r) = self.parts.join_next().await {
            r?.map_err(|e| StoreError::from_object_store(e, &self.key))?;
        }
        Ok(())
    }

    async fn finish_multipart(&mut self, trailer: &Trailer) -> Result<object_store::PutResult, StoreError> {
        let part_size = self.store.inner.part_size;
        self.buffer.push_back(Bytes::copy_from_slice(&trailer.encode()));
        self.buffered += crate::trailer::TRAILER_LEN;
        // The remainder plus trailer: one last part, or a full one and a small last one.
        while self.buffered > 0 {
            self.make_room(1).await?;
            self.start_part(part_size);
        }
        while !self.parts.is_empty() {
            self.join_one().await?;
        }
        let Upload::Ready(upload) = &mut self.upload else { unreachable!("multipart started") };
        let put = upload.complete().await.map_err(|e| StoreError::from_object_store(e, &self.key))?;
        // Completed: nothing left to abort if the writer is dropped now.
        self.upload = Upload::None;
        Ok(put)
    }
}

/// Cancels the parts (and waits until they are gone, so none lands after the abort), then
/// aborts the multipart upload.
async fn abort_upload(mut parts: JoinSet<PartResult>, upload: Upload) -> Result<(), StoreError> {
    parts.shutdown().await;
    let upload = match upload {
        Upload::None => None,
        Upload::Ready(u) => Some(u),
        Upload::Creating(handle) => match handle.await {
            Ok(Ok(u)) => Some(u),
            _ => None, // creation failed: nothing to abort
        },
    };
    if let Some(mut u) = upload {
        u.abort().await.map_err(|e| StoreError::from_object_store(e, ""))?;
    }
    Ok(())
}
