//! Prune against a store that "dies" at the Nth mutation (PUT or DELETE): from a repository
//! with forgotten snapshots, an interrupted backup's unindexed packs, duplicate blobs and
//! many small index objects, prune is stopped at ≥ 20 seeded points of its run (every point
//! when the run is short). After each: `check --read-data` passes, every snapshot restores
//! bit-exact, a second prune finishes cleaning (no unindexed pack, unused space within the
//! limit), and a third has nothing left to do. `PRUNE_CRASH_SEED` picks other points.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

/// An in-memory store whose PUTs and DELETEs fail from the `limit`-th on, as if the process
/// had been killed there (nothing after it reaches the store).
#[derive(Debug)]
struct CrashStore {
    inner: Arc<InMemory>,
    mutations: Arc<AtomicU64>,
    limit: Arc<AtomicU64>,
}

impl std::fmt::Display for CrashStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crash({})", self.inner)
    }
}

fn killed() -> object_store::Error {
    object_store::Error::Generic { store: "crash", source: "the process was killed here".into() }
}

impl CrashStore {
    fn step(&self) -> bool {
        self.mutations.fetch_add(1, Ordering::SeqCst) < self.limit.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ObjectStore for CrashStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        if !self.step() {
            return Err(killed());
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
        let (mutations, limit, inner) = (self.mutations.clone(), self.limit.clone(), self.inner.clone());
        locations
            .then(move |loc| {
                let (mutations, limit, inner) = (mutations.clone(), limit.clone(), inner.clone());
                async move {
                    let loc = loc?;
                    if mutations.fetch_add(1, Ordering::SeqCst) >= limit.load(Ordering::SeqCst) {
                        return Err(killed());
                    }
                    inner.delete_stream(futures::stream::once(async move { Ok(loc) }).boxed()).next().await.expect("one result")
                }
            })
            .boxed()
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

struct Crash {
    store: Store,
    inner: Arc<InMemory>,
    mutations: Arc<AtomicU64>,
    limit: Arc<AtomicU64>,
}

fn crash_store(inner: Arc<InMemory>) -> Crash {
    let mutations = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(AtomicU64::new(u64::MAX));
    let os = Arc::new(CrashStore { inner: inner.clone(), mutations: mutations.clone(), limit: limit.clone() });
    let config = StoreConfig::new("memory://", StoreOptions::default()).unwrap();
    Crash { store: Store::from_object_store(os, &config, true, true), inner, mutations, limit }
}

/// A copy of every object (the state to crash from, reused for each point).
async fn clone_store(src: &InMemory) -> Arc<InMemory> {
    let dst = InMemory::new();
    let metas: Vec<ObjectMeta> = src.list(None).map(|m| m.unwrap()).collect().await;
    for m in metas {
        let bytes = src.get(&m.location).await.unwrap().bytes().await.unwrap();
        dst.put(&m.location, bytes.into()).await.unwrap();
    }
    Arc::new(dst)
}

fn params() -> RepoParams {
    RepoParams {
        chunker: Some(ChunkerParams { min_size: 16 << 10, avg_size: 64 << 10, max_size: 256 << 10, normalization: 1, gear_seed: 7 }),
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
    TreeEntry { path: path.into(), kind: EntryKind::File, mode: 0o100600, size: c.size(), content: Some(c), ..TreeEntry::default() }
}

/// One backup of `files` (name, seed, length); `commit: false` aborts it after the data is
/// uploaded (its packs stay, unindexed).
async fn backup(repo: &Repository, files: &[(&str, u64, usize)], commit: bool, index_every_packs: usize) -> Option<SnapshotId> {
    let s = repo.begin_backup(BackupOptions { index_every_packs, paths: vec!["/data".into()], ..Default::default() }).await.unwrap();
    for &(name, seed, len) in files {
        let mut w = s.file_writer().unwrap();
        let data = noise(seed, len);
        for piece in data.chunks(100_000) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let c = w.finish().await.unwrap();
        s.add_entry(file_entry(name, c), Change::New).await.unwrap();
    }
    if commit {
        Some(s.commit().await.unwrap().id)
    } else {
        s.abort().await.unwrap();
        None
    }
}

/// Every file of every snapshot, read back.
async fn contents(repo: &Repository) -> HashMap<(SnapshotId, String), Vec<u8>> {
    let mut out = HashMap::new();
    for s in repo.list_snapshots().await.unwrap() {
        for e in repo.entries_of(&s.id).await.unwrap().collect().await.unwrap() {
            let data = repo.open_content(e.content.as_ref().unwrap()).read_to_end().await.unwrap();
            out.insert((s.id, e.path.clone()), data);
        }
    }
    out
}

/// The repository to crash from: snapshots A and D forgotten (so data only they used is unused,
/// partly in packs shared with kept data), three kept, an aborted backup's unindexed packs,
/// one index object per pack.
async fn seeded_repository() -> (Arc<InMemory>, HashMap<(SnapshotId, String), Vec<u8>>) {
    let c = crash_store(Arc::new(InMemory::new()));
    let repo = Repository::init(c.store.clone(), b"pw", params()).await.unwrap();
    let a = backup(&repo, &[("f1", 1, 1_500_000), ("f2", 2, 1_200_000)], true, 1).await.unwrap();
    backup(&repo, &[("f1", 1, 1_500_000), ("f3", 3, 900_000)], true, 1).await.unwrap();
    backup(&repo, &[("f3", 3, 900_000), ("f4", 4, 700_000), ("f2x", 2, 300_000)], true, 1).await.unwrap();
    let d = backup(&repo, &[("f6", 6, 1_600_000)], true, 1).await.unwrap();
    backup(&repo, &[("f7", 7, 1_100_000), ("f1", 1, 1_500_000)], true, 1).await.unwrap();
    backup(&repo, &[("f5", 5, 3_500_000)], false, 100).await;
    let lock = repo.lock(LockKind::Exclusive, "test").await.unwrap();
    let req = ForgetRequest { ids: vec![a, d], ..Default::default() };
    repo.forget_locked(&req).await.unwrap();
    lock.release().await.unwrap();
    let expected = contents(&repo).await;
    assert_eq!(expected.len(), 7);
    (c.inner, expected)
}

fn opts() -> PruneOptions {
    PruneOptions { max_unused: MaxUnused::Percent(0.0), ..Default::default() }
}

async fn assert_sound(repo: &Repository, expected: &HashMap<(SnapshotId, String), Vec<u8>>, at: &str) {
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(report.is_ok(), "{at}: check failed: {:?}", report.errors);
    assert_eq!(&contents(repo).await, expected, "{at}: snapshots no longer restore bit-exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_killed_at_any_point_leaves_a_sound_repository_that_the_next_prune_cleans() {
    let (base, expected) = seeded_repository().await;

    // A full run: how many mutations it makes, and what a clean result looks like.
    let full = crash_store(clone_store(&base).await);
    let repo = Repository::open(full.store.clone(), b"pw").await.unwrap();
    let report = repo.prune(&opts()).await.unwrap();
    let total = full.mutations.load(Ordering::SeqCst);
    assert!(report.stats.packfiles.unreferenced > 0, "the aborted backup left packs: {report:?}");
    assert!(report.stats.packfiles.repack > 0 && report.stats.packfiles.remove + report.stats.packfiles.repack > 0, "{report:?}");
    assert!(report.index_deleted >= 5, "{report:?}");
    assert!(total >= 20, "only {total} mutations");
    assert_sound(&repo, &expected, "after a full prune").await;
    let again = repo.prune(&opts()).await.unwrap();
    assert_eq!((again.packs_deleted, again.packs_written, again.index_written), (0, 0, 0), "{again:?}");

    // Crash points: all of them for a short run, else ≥ 20 seeded ones.
    let seed: u64 = std::env::var("PRUNE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut x = seed | 1;
    let mut points: Vec<u64> = if total <= 40 {
        (0..total).collect()
    } else {
        let mut p = std::collections::BTreeSet::new();
        p.insert(0);
        p.insert(total - 1);
        while p.len() < 24 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.insert(x % total);
        }
        p.into_iter().collect()
    };
    points.sort();
    eprintln!("prune: {total} store mutations in a full run; killed at {} points: {points:?}", points.len());
    for n in points {
        let at = format!("killed at mutation {n} of {total} (seed {seed:#x})");
        let c = crash_store(clone_store(&base).await);
        c.limit.store(n, Ordering::SeqCst);
        let repo = Repository::open(c.store.clone(), b"pw").await.unwrap();
        assert!(repo.prune(&opts()).await.is_err(), "{at}: prune did not notice");
        c.limit.store(u64::MAX, Ordering::SeqCst);
        // A fresh process: a new handle on the same store.
        let repo = Repository::open(c.store.clone(), b"pw").await.unwrap();
        // The crashed prune's lock is left behind (fresh): the operator's unlock, here by hand.
        for (key, _) in list(&c.store, "locks").await {
            c.store.delete(&key).await.unwrap();
        }
        assert_sound(&repo, &expected, &at).await;
        let second = repo.prune(&opts()).await.unwrap();
        assert_sound(&repo, &expected, &format!("{at}, then pruned again")).await;
        let check = repo.check(CheckOptions::default()).await.unwrap();
        assert!(check.infos.is_empty(), "{at}: the second prune left {:?}", check.infos);
        assert_eq!(second.stats.bytes.remaining_unused, 0, "{at}: {second:?}");
        let third = repo.prune(&opts()).await.unwrap();
        assert_eq!((third.packs_deleted, third.packs_written, third.index_written), (0, 0, 0), "{at}: {third:?}");
    }
}

async fn list(store: &Store, prefix: &str) -> Vec<(String, u64)> {
    store.list(prefix, None, 1000).await.unwrap().entries.into_iter().map(|e| (e.key, e.size)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_predicts_the_real_run() {
    let (base, expected) = seeded_repository().await;
    let c = crash_store(base);
    let repo = Repository::open(c.store.clone(), b"pw").await.unwrap();
    let before = c.mutations.load(Ordering::SeqCst);
    let plan = repo.prune(&PruneOptions { dry_run: true, ..opts() }).await.unwrap();
    // Only the (shared) lock was written and deleted.
    assert_eq!(c.mutations.load(Ordering::SeqCst) - before, 2);
    let real = repo.prune(&opts()).await.unwrap();
    assert_eq!(plan.stats, real.stats);
    assert_eq!(real.packs_deleted, real.stats.packfiles.remove_total);
    assert_sound(&repo, &expected, "after prune").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unused_limits_repacking_and_unlimited_only_deletes() {
    let (base, expected) = seeded_repository().await;
    let repo = Repository::open(crash_store(clone_store(&base).await).store, b"pw").await.unwrap();
    let r = repo.prune(&PruneOptions { max_unused: MaxUnused::Unlimited, ..Default::default() }).await.unwrap();
    assert_eq!(r.stats.packfiles.repack, 0, "{r:?}");
    assert_eq!(r.packs_written, 0);
    assert_sound(&repo, &expected, "unlimited").await;

    let repo = Repository::open(crash_store(clone_store(&base).await).store, b"pw").await.unwrap();
    let r = repo.prune(&PruneOptions { max_unused: MaxUnused::Percent(5.0), ..Default::default() }).await.unwrap();
    let allowed = MaxUnused::Percent(5.0).allowed(r.stats.bytes.used);
    // Repacking stops once the unused space left is within 5 % of the repository.
    assert!(r.stats.bytes.remaining_unused <= allowed || r.stats.packfiles.partly_used == r.stats.packfiles.repack, "{r:?}");
    assert_sound(&repo, &expected, "5%").await;

    let repo = Repository::open(crash_store(clone_store(&base).await).store, b"pw").await.unwrap();
    let r = repo.prune(&PruneOptions { max_repack_bytes: Some(0), ..opts() }).await.unwrap();
    assert_eq!(r.stats.packfiles.repack, 0, "--max-repack-size 0 repacks nothing: {r:?}");
    assert_sound(&repo, &expected, "max repack 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_while_a_backup_holds_its_lock_and_a_backup_after_prune_does_not_reuse_deleted_blobs() {
    let (base, expected) = seeded_repository().await;
    let c = crash_store(base);
    let repo = Repository::open(c.store.clone(), b"pw").await.unwrap();
    // The same handle backs up before prune: its in-memory index knows every blob.
    let session = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let err = repo.prune(&opts()).await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_LOCKED", "{err}");
    session.abort().await.unwrap();
    // Another handle (another process) prunes the data only the forgotten snapshot used.
    let other = Repository::open(c.store.clone(), b"pw").await.unwrap();
    let pruned = other.prune(&opts()).await.unwrap();
    assert!(pruned.stats.packfiles.repack > 0, "{pruned:?}");
    // The first handle still has the old index: blobs that moved are found where they are now.
    assert_eq!(contents(&repo).await, expected, "a handle opened before the prune still restores");
    // Backing up f2 (only the forgotten snapshot had all of it) on the first handle must
    // store its chunks again, not dedup against the deleted copies.
    let id = backup(&repo, &[("again", 2, 1_200_000)], true, 16).await.unwrap();
    let mut expected = expected;
    expected.insert((id, "again".into()), noise(2, 1_200_000));
    assert_sound(&Repository::open(c.store.clone(), b"pw").await.unwrap(), &expected, "backup after prune").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_the_staging_files_a_killed_upload_leaves_on_file_stores() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = Store::open(&StoreConfig::new(&url, StoreOptions::default()).unwrap()).unwrap();
    let repo = Repository::init(store.clone(), b"pw", params()).await.unwrap();
    let id = backup(&repo, &[("f", 1, 300_000)], true, 16).await.unwrap();
    // What a process killed inside a PUT leaves: hidden KEY#N files, invisible to LIST.
    let pack_dir = std::fs::read_dir(dir.path().join("packs")).unwrap().next().unwrap().unwrap().path();
    let staged = [pack_dir.join(format!("{}#3", "ab".repeat(32))), dir.path().join("index").join(format!("{}#1", "cd".repeat(32)))];
    for f in &staged {
        std::fs::write(f, b"half an upload").unwrap();
    }
    assert_eq!(repo.check(CheckOptions::default()).await.unwrap().infos, vec![], "check cannot see them");
    let r = repo.prune(&opts()).await.unwrap();
    assert_eq!(r.staging_deleted, 2, "{r:?}");
    for f in &staged {
        assert!(!f.exists(), "{} is left", f.display());
    }
    let mut expected = HashMap::new();
    expected.insert((id, "f".to_string()), noise(1, 300_000));
    assert_sound(&repo, &expected, "after removing staging files").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_snapshot_stops_prune_before_it_changes_anything() {
    let (base, _) = seeded_repository().await;
    let c = crash_store(base);
    let repo = Repository::open(c.store.clone(), b"pw").await.unwrap();
    let (key, _) = list(&c.store, "snapshots").await.into_iter().next().unwrap();
    c.store.put(&key, [Bytes::from_static(b"not a sealed snapshot")]).await.unwrap();
    let before = c.mutations.load(Ordering::SeqCst);
    let err = repo.prune(&opts()).await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_INTEGRITY", "{err}");
    assert!(err.to_string().contains(&key) && err.to_string().contains("prune changed nothing"), "{err}");
    // Only its lock was written and removed.
    assert_eq!(c.mutations.load(Ordering::SeqCst) - before, 2);
}
