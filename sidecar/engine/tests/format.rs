//! Repository format versions (REPOSITORY.md §Config): format 2's keyed chunker — chunk and
//! tree-blob boundaries depend on a per-repository secret, not only on the data — and format 1
//! still read and written as it was: a repository made by the engine before format 2
//! (`tests/fixtures/repo-v1`, written by `examples/repo_fixture.rs` at the revision its README
//! names) opens, restores, checks clean, and takes new backups that dedup against it.

use std::path::Path;

use bytes::Bytes;
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

fn mem_store() -> Store {
    Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap()
}

fn file_store(dir: &Path) -> Store {
    Store::open(&StoreConfig::new(&format!("file://{}", dir.display()), StoreOptions::default()).unwrap()).unwrap()
}

/// Small chunks (avg 4 KiB): a 1 MB file has ~250 boundaries to compare.
fn params(format_version: u32) -> RepoParams {
    RepoParams {
        chunker: Some(ChunkerParams { min_size: 1024, avg_size: 4096, max_size: 16384, normalization: 1, gear_seed: 0x5eed }),
        format_version,
        ..RepoParams::insecure_for_tests()
    }
}

/// What `examples/repo_fixture.rs` generates (keep in step with it).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn entry(path: &str, kind: EntryKind, size: u64) -> TreeEntry {
    TreeEntry { path: path.into(), kind, mode: if kind == EntryKind::Dir { 0o40755 } else { 0o100644 }, size, ..TreeEntry::default() }
}

/// Backs up `files` as one snapshot; returns its summary and each file's content ref.
async fn backup(repo: &Repository, files: &[(&str, &[u8])]) -> (SnapshotSummary, Vec<ContentRef>) {
    let s = repo.begin_backup(BackupOptions { paths: vec!["/d".into()], ..Default::default() }).await.unwrap();
    let mut refs = Vec::new();
    for (path, data) in files {
        let mut w = s.file_writer().unwrap();
        // Odd-sized writes: boundaries must not depend on how the data arrives.
        for piece in data.chunks(10_007) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let content = w.finish().await.unwrap();
        let mut e = entry(path, EntryKind::File, data.len() as u64);
        e.content = Some(content.clone());
        s.add_entry(e, Change::New).await.unwrap();
        refs.push(content);
    }
    (s.commit().await.unwrap(), refs)
}

/// A file's chunk boundaries (offsets where a chunk ends).
async fn boundaries(repo: &Repository, c: &ContentRef) -> Vec<u64> {
    let mut at = 0;
    repo.content_chunks(c).await.unwrap().iter().map(|c| {
        at += u64::from(c.len);
        at
    }).collect()
}

#[tokio::test]
async fn same_data_and_password_in_two_repositories_cuts_differently() {
    let data = noise(11, 1 << 20);
    let a = Repository::init(mem_store(), b"same password", params(2)).await.unwrap();
    let b = Repository::init(mem_store(), b"same password", params(2)).await.unwrap();
    let (_, ra) = backup(&a, &[("d/f", &data[..])]).await;
    let (_, rb) = backup(&b, &[("d/f", &data[..])]).await;
    let (ba, bb) = (boundaries(&a, &ra[0]).await, boundaries(&b, &rb[0]).await);
    assert!(ba.len() > 100, "{} chunks", ba.len());
    let shared = ba.iter().filter(|x| bb.binary_search(x).is_ok()).count();
    // Only the end of the file (and chance: ~1 in 4096 offsets is a boundary) is shared.
    assert!(shared < 10, "{shared} of {} boundaries shared between two repositories", ba.len());
    // Same chunker sizes and seed: only the secret chunker key differs.
    assert_eq!(a.settings().chunker, b.settings().chunker);
    assert_ne!(a.settings().chunker_key, b.settings().chunker_key);
    assert!(a.settings().chunker_key.is_some());
    assert_eq!(a.settings().chunker.gear_seed, 0, "format 2 writes no seed");
}

#[tokio::test]
async fn boundaries_are_deterministic_given_the_key_so_dedup_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(12, 600_000);
    let mut edited = data.clone();
    edited.splice(1000..1000, *b"inserted near the start");
    let repo = Repository::init(file_store(dir.path()), b"pw", params(2)).await.unwrap();
    let (first, r1) = backup(&repo, &[("d/f", &data[..])]).await;
    assert!(first.counts.blobs_added > 50);
    // Reopened (keys from the config, as another process would): the same cuts, nothing new.
    let repo = Repository::open(file_store(dir.path()), b"pw").await.unwrap();
    let (again, r2) = backup(&repo, &[("d/f", &data[..]), ("d/copy", &data[..])]).await;
    assert_eq!(r2[0], r1[0]);
    assert_eq!(r2[1], r1[0]);
    assert_eq!(again.counts.bytes_added, tree_bytes(&repo, &again).await, "only the new tree is stored: no data blob twice");
    // Content-defined: an insertion early in the file re-stores only the chunks around it.
    let (shifted, _) = backup(&repo, &[("d/f", &edited[..])]).await;
    let data_blobs = shifted.counts.blobs_added - 1;
    assert!(data_blobs <= 3, "{data_blobs} data blobs re-stored after a 23-byte insertion");
    assert!(repo.check(CheckOptions { read_data: true }).await.unwrap().is_ok());
}

/// Plaintext bytes of a snapshot's tree blobs (they change with every snapshot's metadata).
async fn tree_bytes(repo: &Repository, s: &SnapshotSummary) -> u64 {
    let file = repo.snapshot(&s.id).await.unwrap();
    let blobs = repo.snapshot_blobs(&file).await.unwrap();
    file.tree.iter().map(|t| u64::from(blobs[t].raw_len)).sum()
}

#[tokio::test]
async fn tree_blobs_are_cut_with_the_key() {
    // ~1.3 MB of entries: past the 64 KiB minimum the cut points are keyed path hashes.
    let s_of = |repo: Repository| async move {
        let s = repo.begin_backup(BackupOptions::default()).await.unwrap();
        for i in 0..10_000 {
            s.add_entry(entry(&format!("home/user/projects/some-project/src/module{i}/with/a/long/path/name"), EntryKind::Dir, 0), Change::New)
                .await
                .unwrap();
        }
        let id = s.commit().await.unwrap().id;
        let file = repo.snapshot(&id).await.unwrap();
        let blobs = repo.snapshot_blobs(&file).await.unwrap();
        file.tree.iter().map(|t| blobs[t].raw_len).collect::<Vec<_>>()
    };
    let a = s_of(Repository::init(mem_store(), b"pw", params(2)).await.unwrap()).await;
    let b = s_of(Repository::init(mem_store(), b"pw", params(2)).await.unwrap()).await;
    assert!(a.len() > 2 && b.len() > 2, "{a:?} {b:?}");
    assert_ne!(a, b, "tree blob sizes depend on the repository's key");
    let v1a = s_of(Repository::init(mem_store(), b"pw", params(1)).await.unwrap()).await;
    let v1b = s_of(Repository::init(mem_store(), b"pw", params(1)).await.unwrap()).await;
    assert_eq!(v1a, v1b, "format 1's tree cuts are unkeyed: the same in every repository");
}

#[tokio::test]
async fn format_1_is_still_written_on_request_and_chunks_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(file_store(dir.path()), b"pw", params(1)).await.unwrap();
    assert!(repo.settings().chunker_key.is_none());
    let data = noise(13, 300_000);
    let (_, refs) = backup(&repo, &[("d/f", &data[..])]).await;
    // Format 1's boundaries: fastcdc's table XOR the seed, exactly as before format 2.
    let cdc = chunker::Cdc::new(params(1).chunker.unwrap()).unwrap();
    let want: Vec<u64> = cdc.chunk_all(&data).into_iter().map(|r| r.end as u64).collect();
    assert_eq!(boundaries(&repo, &refs[0]).await, want);
    assert_eq!(config_json(dir.path()).await["version"], 1);
    assert!(Repository::init(mem_store(), b"pw", params(3)).await.is_err(), "no format 3");
}

/// The config object's JSON, read through the store.
async fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&objects::read_all(&file_store(dir), objects::CONFIG_KEY).await.unwrap()).unwrap()
}

/// Rewrites the config's plain `version` field (anyone with write access to the store can).
async fn set_version(dir: &Path, to: u32) {
    let mut config = config_json(dir).await;
    config["version"] = to.into();
    file_store(dir).put(objects::CONFIG_KEY, [Bytes::from(config.to_string())]).await.unwrap();
}

#[tokio::test]
async fn the_plain_version_field_cannot_be_changed_unnoticed() {
    let dir = tempfile::tempdir().unwrap();
    Repository::init(file_store(dir.path()), b"pw", params(1)).await.unwrap();
    // A format-1 repository relabelled 2: its settings have no chunker key.
    set_version(dir.path(), 2).await;
    let e = Repository::open(file_store(dir.path()), b"pw").await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_INTEGRITY", "{e}");
    assert!(e.to_string().contains("config"), "{e}");
    // And an unknown version is refused by number, before the password is tried.
    set_version(dir.path(), 3).await;
    let e = Repository::open(file_store(dir.path()), b"wrong").await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_REPO_VERSION", "{e}");

    let dir = tempfile::tempdir().unwrap();
    Repository::init(file_store(dir.path()), b"pw", params(2)).await.unwrap();
    set_version(dir.path(), 1).await;
    let e = Repository::open(file_store(dir.path()), b"pw").await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_INTEGRITY", "a format-2 repository relabelled 1: {e}");
}

/// The committed format-1 repository, copied (opening may write locks).
fn v1_fixture() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    let dst = tempfile::tempdir().unwrap();
    copy_dir(&src, dst.path());
    dst
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "README.md" {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_format_1_repository_written_before_format_2_opens_restores_and_grows() {
    let dir = v1_fixture();
    assert_eq!(config_json(dir.path()).await["version"], 1);
    let repo = Repository::open(file_store(dir.path()), b"fixture password").await.unwrap();
    assert!(repo.settings().chunker_key.is_none());
    assert_eq!(repo.settings().chunker.gear_seed, 0x5eed);
    let snaps = repo.list_snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].file.host, "fixture");
    let entries = repo.entries_of(&snaps[0].id).await.unwrap().collect().await.unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["data", "data/a.bin", "data/big.bin", "data/copy.bin", "data/empty", "data/link"]);
    let want = [noise(1, 5000), noise(2, 100_000), noise(1, 5000), Vec::new()];
    for (e, want) in entries[1..5].iter().zip(&want) {
        let got = repo.open_content(e.content.as_ref().unwrap()).read_to_end().await.unwrap();
        assert!(got == *want, "{} restores byte for byte", e.path);
    }
    assert!(matches!(entries[2].content, Some(ContentRef::List { .. })), "the big file's chunk list is a blob");
    assert_eq!(entries[5].target.as_deref(), Some("a.bin"));
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);

    // New backups keep format 1's chunking: the same content stores no new data blob.
    let (s, refs) = backup(&repo, &[("d/a", &noise(1, 5000)[..]), ("d/big", &noise(2, 100_000)[..])]).await;
    assert_eq!(Some(&refs[0]), entries[1].content.as_ref());
    assert_eq!(Some(&refs[1]), entries[2].content.as_ref());
    assert_eq!(s.counts.bytes_added, tree_bytes(&repo, &s).await, "only the new tree is stored");
    assert_eq!(config_json(dir.path()).await["version"], 1, "a format-1 repository stays format 1");
    let repo = Repository::open(file_store(dir.path()), b"fixture password").await.unwrap();
    assert_eq!(repo.list_snapshots().await.unwrap().len(), 2);
}
