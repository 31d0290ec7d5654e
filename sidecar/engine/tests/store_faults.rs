//! The engine against a store that stalls or fails: backpressure bounds what a writer can
//! get ahead of a stuck upload, and a store failure mid-backup fails the commit and leaves the
//! repository consistent. No timing assertions: the test waits for the writer to stop making
//! progress, then asserts how far it got.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

#[derive(Debug)]
struct Faults {
    /// Pack PUTs wait for a permit here (when `gated`).
    gate: tokio::sync::Semaphore,
    gated: AtomicBool,
    /// Pack PUTs fail.
    fail_packs: AtomicBool,
    /// Lock PUTs (and so lock refreshes) fail.
    fail_locks: AtomicBool,
    /// Pack PUTs currently waiting at the gate.
    waiting: AtomicUsize,
    /// Most pack PUTs in flight at once.
    max_in_flight: AtomicUsize,
    in_flight: AtomicUsize,
}

#[derive(Debug)]
struct FaultStore {
    inner: InMemory,
    faults: Arc<Faults>,
}

impl std::fmt::Display for FaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faults({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        if location.as_ref().starts_with("packs/") {
            let f = &self.faults;
            let n = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            f.max_in_flight.fetch_max(n, Ordering::SeqCst);
            if f.gated.load(Ordering::SeqCst) {
                f.waiting.fetch_add(1, Ordering::SeqCst);
                f.gate.acquire().await.unwrap().forget();
                f.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            f.in_flight.fetch_sub(1, Ordering::SeqCst);
            if f.fail_packs.load(Ordering::SeqCst) {
                return Err(object_store::Error::Generic { store: "faults", source: "injected pack PUT failure".into() });
            }
        }
        if location.as_ref().starts_with("locks/") && self.faults.fail_locks.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic { store: "faults", source: "injected lock PUT failure".into() });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<Path>>) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn fault_store() -> (Store, Arc<Faults>) {
    let faults = Arc::new(Faults {
        gate: tokio::sync::Semaphore::new(0),
        gated: AtomicBool::new(false),
        fail_packs: AtomicBool::new(false),
        fail_locks: AtomicBool::new(false),
        waiting: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let os = Arc::new(FaultStore { inner: InMemory::new(), faults: faults.clone() });
    let config = StoreConfig::new("memory://", StoreOptions::default()).unwrap();
    (Store::from_object_store(os, &config, true, true), faults)
}

fn params() -> RepoParams {
    RepoParams {
        chunker: Some(ChunkerParams { min_size: 16 << 10, avg_size: 64 << 10, max_size: 256 << 10, normalization: 1, gear_seed: 1 }),
        pack_size: 1 << 20,
        ..RepoParams::insecure_for_tests()
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .take(len)
        .collect()
}

fn file_entry(path: &str, c: ContentRef) -> TreeEntry {
    TreeEntry {
        path: path.into(),
        kind: EntryKind::File,
        mode: 0o100600,
        uid: 0,
        gid: 0,
        mtime_ns: 1,
        size: c.size(),
        inode: 1,
        dev: 1,
        target: None,
        content: Some(c),
        ..TreeEntry::default()
    }
}

/// Waits until `progress` stops changing (the writer is blocked), with an overall cap.
async fn settle(progress: &AtomicU64) -> u64 {
    let mut last = progress.load(Ordering::SeqCst);
    let mut still = 0;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = progress.load(Ordering::SeqCst);
        if now == last {
            still += 1;
            if still == 8 {
                break;
            }
        } else {
            still = 0;
            last = now;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_upload_stops_the_writer_within_the_memory_bound() {
    let (store, faults) = fault_store();
    let repo = Repository::init(store, b"pw", params()).await.unwrap();
    faults.gated.store(true, Ordering::SeqCst);
    let session = Arc::new(repo.begin_backup(BackupOptions::default()).await.unwrap());
    let data = Bytes::from(noise(3, 48 << 20));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (s, d, w) = (session.clone(), data.clone(), written.clone());
        tokio::spawn(async move {
            let mut fw = s.file_writer().unwrap();
            for piece in d.chunks(256 << 10) {
                fw.write(d.slice_ref(piece)).await.unwrap();
                w.fetch_add(piece.len() as u64, Ordering::SeqCst);
            }
            fw.finish().await.unwrap()
        })
    };
    let got_to = settle(&written).await;
    // One pack uploading (stuck), one full pack waiting for the upload slot, chunk tasks
    // (workers + 2 = 4 × ≤ 256 KiB) and the chunker's buffer: a few MiB, not 48.
    assert_eq!(faults.waiting.load(Ordering::SeqCst), 1, "max_uploads = 1");
    assert!(got_to <= 6 << 20, "writer got {got_to} bytes ahead of a stuck upload");
    assert!(got_to >= 1 << 20, "it did fill a pack first ({got_to})");
    faults.gated.store(false, Ordering::SeqCst);
    faults.gate.add_permits(1000);
    let content = writer.await.unwrap();
    session.add_entry(file_entry("big", content.clone()), Change::New).await.unwrap();
    Arc::into_inner(session).unwrap().commit().await.unwrap();
    assert_eq!(faults.max_in_flight.load(Ordering::SeqCst), 1);
    assert!(repo.open_content(&content).read_to_end().await.unwrap() == data);
    assert!(repo.check(CheckOptions { read_data: true }).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_mid_backup_fails_the_commit_and_the_repository_stays_consistent() {
    let (store, faults) = fault_store();
    let repo = Repository::init(store, b"pw", params()).await.unwrap();
    let first = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let mut w = first.file_writer().unwrap();
    w.write(Bytes::from(noise(1, 3 << 20))).await.unwrap();
    let c = w.finish().await.unwrap();
    first.add_entry(file_entry("a", c), Change::New).await.unwrap();
    let first = first.commit().await.unwrap();

    faults.fail_packs.store(true, Ordering::SeqCst);
    let session = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let mut w = session.file_writer().unwrap();
    let mut err = None;
    for i in 0..16u64 {
        if let Err(e) = w.write(Bytes::from(noise(100 + i, 1 << 20))).await {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => w.finish().await.map(drop).and(session.commit().await.map(drop)).unwrap_err(),
    };
    assert_eq!(err.code(), "SHMPIPE_E_STORE", "{err}");
    faults.fail_packs.store(false, Ordering::SeqCst);

    assert_eq!(repo.list_snapshots().await.unwrap().len(), 1);
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    let again = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let mut w = again.file_writer().unwrap();
    w.write(Bytes::from(noise(7, 2 << 20))).await.unwrap();
    let c = w.finish().await.unwrap();
    again.add_entry(file_entry("b", c.clone()), Change::New).await.unwrap();
    again.commit().await.unwrap();
    assert!(repo.open_content(&c).read_to_end().await.unwrap() == noise(7, 2 << 20));
    let entries = repo.entries_of(&first.id).await.unwrap().collect().await.unwrap();
    assert_eq!(entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_that_cannot_be_refreshed_aborts_the_backup_before_it_could_expire() {
    let (store, faults) = fault_store();
    let repo = Repository::init(store, b"pw", params()).await.unwrap();
    let timing =
        LockTiming { refresh_every: Duration::from_millis(20), retry_every: Duration::from_millis(10), give_up_after: Duration::from_millis(200) };
    let session = repo.begin_backup(BackupOptions { lock_timing: timing, ..BackupOptions::default() }).await.unwrap();
    let mut w = session.file_writer().unwrap();
    w.write(Bytes::from(noise(5, 1 << 20))).await.unwrap();
    let c = w.finish().await.unwrap();
    session.add_entry(file_entry("a", c), Change::New).await.unwrap();
    // The store now refuses lock writes: every refresh fails until the holder gives up.
    faults.fail_locks.store(true, Ordering::SeqCst);
    let health = session.lock_health().expect("the session holds a lock");
    let lost = tokio::time::timeout(Duration::from_secs(30), health.lost()).await.expect("given up within 30 s");
    assert_eq!(lost.code(), "SHMPIPE_E_LOCK_LOST", "{lost}");
    assert!(lost.to_string().contains("injected lock PUT failure"), "says why: {lost}");
    let err = session.file_writer().unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_LOCK_LOST", "{err}");
    let err = session.commit().await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_LOCK_LOST", "{err}");
    assert!(repo.list_snapshots().await.unwrap().is_empty(), "no snapshot written under a lost lock");
}
