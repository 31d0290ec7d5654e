//! A backup whose process is SIGKILLed midway (after some packs and index objects reached the
//! store, with uploads and staging files in flight) leaves a consistent repository: check
//! passes, the killed run's shared lock blocks nothing, and the next backup completes.
//!
//! The test re-runs its own binary as the child that does the backup.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

const CHILD_ENV: &str = "SHMPIPE_ENGINE_KILLED_CHILD_DIR";

fn store(dir: &str) -> Store {
    Store::open(&StoreConfig::new(&format!("file://{dir}"), StoreOptions::default()).unwrap()).unwrap()
}

fn params() -> RepoParams {
    RepoParams {
        chunker: Some(ChunkerParams { min_size: 16 << 10, avg_size: 64 << 10, max_size: 256 << 10, normalization: 1, gear_seed: 5 }),
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

/// The child: back up noise forever (bounded: 2 GiB), never committing.
fn child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let repo = Repository::open(store(dir), b"pw").await.unwrap();
        let s = repo.begin_backup(BackupOptions { index_every_packs: 2, ..Default::default() }).await.unwrap();
        for f in 0..2048u64 {
            let mut w = s.file_writer().unwrap();
            w.write(Bytes::from(noise(f, 1 << 20))).await.unwrap();
            w.finish().await.unwrap();
        }
    });
}

fn packs_in(dir: &std::path::Path) -> usize {
    let Ok(fan) = std::fs::read_dir(dir.join("packs")) else { return 0 };
    fan.flatten().map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count())).sum()
}

#[test]
fn a_backup_killed_midway_leaves_a_consistent_repository() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(Repository::init(store(&path), b"pw", params())).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_backup_killed_midway_leaves_a_consistent_repository", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once several packs (and so index objects: one per 2 packs) are on disk.
    let start = Instant::now();
    while packs_in(dir.path()) < 6 {
        assert!(start.elapsed() < Duration::from_secs(120), "child made no progress");
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    rt.block_on(async {
        let repo = Repository::open(store(&path), b"pw").await.unwrap();
        assert!(repo.list_snapshots().await.unwrap().is_empty());
        assert!(!repo.store().list("locks", None, 10).await.unwrap().entries.is_empty(), "the killed run's lock remains");
        let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.errors);
        assert!(report.index_objects >= 2, "indexed packs of the killed run: {report:?}");

        // The next backup (same data and more) completes, dedups against what the killed run
        // indexed, and restores.
        let s = repo.begin_backup(BackupOptions::default()).await.unwrap();
        let mut contents = Vec::new();
        for f in 0..4u64 {
            let mut w = s.file_writer().unwrap();
            w.write(Bytes::from(noise(f, 1 << 20))).await.unwrap();
            let c = w.finish().await.unwrap();
            let e = TreeEntry {
                path: format!("f{f}"),
                kind: EntryKind::File,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                size: c.size(),
                inode: f,
                dev: 0,
                target: None,
                content: Some(c.clone()),
                ..TreeEntry::default()
            };
            s.add_entry(e, Change::New).await.unwrap();
            contents.push(c);
        }
        let summary = s.commit().await.unwrap();
        assert!(summary.counts.bytes_added < 4 << 20, "reused the killed run's indexed chunks: {:?}", summary.counts);
        for (f, c) in contents.iter().enumerate() {
            assert!(repo.open_content(c).read_to_end().await.unwrap() == noise(f as u64, 1 << 20));
        }
        assert!(repo.check(CheckOptions { read_data: true }).await.unwrap().is_ok());
    });
}
