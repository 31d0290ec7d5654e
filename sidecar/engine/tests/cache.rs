//! The local metadata cache (cache.rs, REPOSITORY.md §Cache), against a real file:// store
//! whose objects the tests damage on disk: a second open reads index, snapshots and trees from
//! the cache (the damaged store copies are never fetched), `check` still reads the store (and
//! sees the damage), a damaged cache file is not believed, and objects gone from the
//! repository leave the cache.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

fn file_store(dir: &Path) -> Store {
    let url = format!("file://{}", dir.display());
    Store::open(&StoreConfig::new(&url, StoreOptions::default()).unwrap()).unwrap()
}

fn opts(cache: Option<&Path>) -> OpenOptions {
    OpenOptions { cache_dir: cache.map(Path::to_path_buf), ..OpenOptions::default() }
}

fn entry(path: &str, kind: EntryKind, size: u64) -> TreeEntry {
    TreeEntry { path: path.into(), kind, mode: if kind == EntryKind::Dir { 0o40755 } else { 0o100644 }, mtime_ns: 1, size, inode: 1, dev: 1, ..TreeEntry::default() }
}

async fn one_snapshot(repo: &Repository, n: usize) -> SnapshotId {
    let s = repo.begin_backup(BackupOptions { paths: vec!["/d".into()], ..Default::default() }).await.unwrap();
    s.add_entry(entry("d", EntryKind::Dir, 0), Change::New).await.unwrap();
    for i in 0..n {
        let data = format!("file {i}\n").repeat(10);
        let mut w = s.file_writer().unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        let mut e = entry(&format!("d/f{i}"), EntryKind::File, data.len() as u64);
        e.content = Some(w.finish().await.unwrap());
        s.add_entry(e, Change::New).await.unwrap();
    }
    s.commit().await.unwrap().id
}

async fn paths_of(repo: &Repository, id: &SnapshotId) -> Result<Vec<String>> {
    let mut r = repo.entries_of(id).await?;
    let mut out = Vec::new();
    while let Some(e) = r.next().await? {
        out.push(e.path);
    }
    Ok(out)
}

/// Every regular file under `dir` (relative paths), sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn damage(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    std::fs::write(path, vec![0x5a; len]).unwrap();
}

#[tokio::test]
async fn a_second_open_reads_metadata_from_the_cache_and_check_reads_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (store_dir, cache_base) = (tmp.path().join("store"), tmp.path().join("cache"));
    let repo = Repository::init_with(file_store(&store_dir), b"pw", RepoParams::insecure_for_tests(), opts(Some(&cache_base))).await.unwrap();
    let sid = one_snapshot(&repo, 50).await;
    let want = paths_of(&repo, &sid).await.unwrap();
    assert_eq!(want.len(), 51);
    let cache_dir = cache_base.join(repo.id().to_hex());
    let cached = files_under(&cache_dir);
    // Written through by the backup: its index object and snapshot; read through: its trees.
    assert!(cached.iter().any(|p| p.starts_with("index")), "{cached:?}");
    assert!(cached.contains(&PathBuf::from(format!("snapshots/{sid}"))), "{cached:?}");
    assert!(cached.iter().any(|p| p.starts_with("trees")), "{cached:?}");
    assert!(cache_base.join("CACHEDIR.TAG").exists());

    // Damage every metadata object in the store, and every pack (trees live in packs).
    for rel in files_under(&store_dir) {
        let s = rel.to_string_lossy();
        if s.starts_with("index/") || s.starts_with("snapshots/") || s.starts_with("packs/") {
            damage(&store_dir.join(&rel));
        }
    }

    // With the cache: listing, snapshot and tree reads never touch the damaged copies.
    let cached_repo = Repository::open_with(file_store(&store_dir), b"pw", opts(Some(&cache_base))).await.unwrap();
    let list = cached_repo.list_snapshots().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(paths_of(&cached_repo, &sid).await.unwrap(), want);
    assert!(cached_repo.index_stats().0 > 0);

    // Without it (`--no-cache`): the damage shows.
    let plain = Repository::open_with(file_store(&store_dir), b"pw", opts(None)).await.unwrap();
    assert!(plain.list_snapshots().await.is_err());

    // check reads the store even when the repository has a cache.
    let report = cached_repo.check(CheckOptions::default()).await.unwrap();
    assert!(!report.errors.is_empty(), "check must see the damaged store: {report:?}");
}

#[tokio::test]
async fn damaged_cache_files_are_replaced_and_objects_gone_from_the_repository_leave_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (store_dir, cache_base) = (tmp.path().join("store"), tmp.path().join("cache"));
    let repo = Repository::init_with(file_store(&store_dir), b"pw", RepoParams::insecure_for_tests(), opts(Some(&cache_base))).await.unwrap();
    let (a, b) = (one_snapshot(&repo, 5).await, one_snapshot(&repo, 7).await);
    let want_b = paths_of(&repo, &b).await.unwrap();
    let cache_dir = cache_base.join(repo.id().to_hex());
    let before = files_under(&cache_dir);
    let originals: Vec<Vec<u8>> = before.iter().map(|p| std::fs::read(cache_dir.join(p)).unwrap()).collect();

    // A planted or damaged cache file is not believed: the store's copy is read and cached.
    for p in &before {
        damage(&cache_dir.join(p));
    }
    let repo2 = Repository::open_with(file_store(&store_dir), b"pw", opts(Some(&cache_base))).await.unwrap();
    assert_eq!(repo2.list_snapshots().await.unwrap().len(), 2);
    assert_eq!(paths_of(&repo2, &b).await.unwrap(), want_b);
    assert_eq!(paths_of(&repo2, &a).await.unwrap().len(), 6);
    for (p, orig) in before.iter().zip(&originals) {
        let now = std::fs::read(cache_dir.join(p)).unwrap();
        assert_eq!(now.len(), orig.len(), "{p:?} was not replaced by the store's copy");
        assert_ne!(now, vec![0x5a; orig.len()], "{p:?} is still the damaged copy");
    }

    // Snapshot `a` removed from the repository (as forget does): its cached copy goes at the
    // next listing.
    std::fs::remove_file(store_dir.join(format!("snapshots/{a}"))).unwrap();
    let repo3 = Repository::open_with(file_store(&store_dir), b"pw", opts(Some(&cache_base))).await.unwrap();
    assert_eq!(repo3.list_snapshots().await.unwrap().len(), 1);
    assert!(!cache_dir.join(format!("snapshots/{a}")).exists());
    assert!(cache_dir.join(format!("snapshots/{b}")).exists());
}
