//! Engine-level tests: whole backups and restores through memory:// and file:// stores.
//! (Unit tests of each layer live in the modules.) No timing assertions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

const PW: &[u8] = b"correct horse battery staple";

fn mem_store() -> Store {
    Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap()
}

fn file_store(dir: &std::path::Path) -> Store {
    let url = format!("file://{}", dir.display());
    Store::open(&StoreConfig::new(&url, StoreOptions::default()).unwrap()).unwrap()
}

/// Small chunks (avg 64 KiB) and 1 MiB packs: many chunks, many packs, chunk-list blobs.
fn small_params() -> RepoParams {
    RepoParams {
        chunker: Some(ChunkerParams { min_size: 16 << 10, avg_size: 64 << 10, max_size: 256 << 10, normalization: 1, gear_seed: 99 }),
        pack_size: 1 << 20,
        ..RepoParams::insecure_for_tests()
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = seed;
    while v.len() < len {
        v.extend_from_slice(format!("2026-11-22T03:{:02}:{:02} host{} GET /api/v1/items/{} 200 {}ms\n", i % 60, (i * 7) % 60, i % 5, i * 31 % 10007, i % 97).as_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

/// A generated tree: what the agent would have read from disk.
#[derive(Clone)]
struct Item {
    entry: TreeEntry,
    data: Option<Arc<Vec<u8>>>,
}

fn meta(path: &str, kind: EntryKind, size: u64, n: u64) -> TreeEntry {
    TreeEntry {
        path: path.into(),
        kind,
        mode: match kind {
            EntryKind::File => 0o100644,
            EntryKind::Dir => 0o040755,
            EntryKind::Symlink => 0o120777,
            EntryKind::Other => 0o010600,
        },
        uid: 1000 + (n % 3) as u32,
        gid: 100,
        mtime_ns: 1_700_000_000_123_456_789 + n as i64 * 1_000_000_007,
        size,
        inode: 5000 + n,
        dev: 2049,
        target: None,
        content: None,
        ..TreeEntry::default()
    }
}

fn file(path: &str, data: Vec<u8>, n: u64) -> Item {
    Item { entry: meta(path, EntryKind::File, data.len() as u64, n), data: Some(Arc::new(data)) }
}

fn generated_tree(big: usize) -> Vec<Item> {
    let mut t = vec![
        Item { entry: meta("", EntryKind::Dir, 4096, 0), data: None },
        Item { entry: meta("docs", EntryKind::Dir, 4096, 1), data: None },
        Item { entry: meta("media", EntryKind::Dir, 4096, 2), data: None },
        Item { entry: meta("日本語 ディレクトリ", EntryKind::Dir, 4096, 3), data: None },
        file("empty", Vec::new(), 4),
        file("one-byte", vec![42], 5),
        file("docs/small.txt", text(1, 100), 6),
        file("docs/access.log", text(2, 3 << 20), 7),
        file("docs/exactly-64k", text(3, 65_536), 8),
        file("media/photo.jpg", noise(4, 300_000), 9),
        file("media/video.bin", noise(5, big), 10),
        file("media/video copy.bin", noise(5, big), 11),
        file("media/mixed.tar", [noise(6, 1 << 20), text(7, 1 << 20), noise(8, 777)].concat(), 12),
        file("日本語 ディレクトリ/ファイル 📄.txt", text(9, 5000), 13),
        file("docs/zeros", vec![0u8; 2 << 20], 14),
    ];
    let mut link = meta("docs/link → log", EntryKind::Symlink, 10, 15);
    link.target = Some("access.log".into());
    t.push(Item { entry: link, data: None });
    let mut dangling = meta("media/dangling", EntryKind::Symlink, 11, 16);
    dangling.target = Some("../nowhere/ü".into());
    t.push(Item { entry: dangling, data: None });
    t.push(Item { entry: meta("media/fifo", EntryKind::Other, 0, 17), data: None });
    for i in 0..40u64 {
        t.push(file(&format!("docs/many/f{i:03}"), text(100 + i, (i as usize * 997) % 20_000), 100 + i));
    }
    t
}

/// Streams one file into the session in `piece`-byte `Bytes` (slot-sized writes).
async fn write_file(session: &BackupSession, data: &[u8], piece: usize) -> Result<ContentRef> {
    let mut w = session.file_writer()?;
    let all = Bytes::copy_from_slice(data);
    let mut pos = 0;
    while pos < all.len() {
        let end = (pos + piece).min(all.len());
        w.write(all.slice(pos..end)).await?;
        pos = end;
    }
    w.finish().await
}

/// Backs up `tree`: file contents streamed concurrently (4 at a time, as the sidecar would),
/// then every entry added in tree order.
async fn backup(repo: &Repository, tree: &[Item], opts: BackupOptions) -> SnapshotSummary {
    let session = Arc::new(repo.begin_backup(opts).await.unwrap());
    let mut contents: HashMap<String, ContentRef> = HashMap::new();
    let files: Vec<&Item> = tree.iter().filter(|i| i.data.is_some()).collect();
    for group in files.chunks(4) {
        let mut set = tokio::task::JoinSet::new();
        for item in group {
            let s = session.clone();
            let data = item.data.clone().unwrap();
            let path = item.entry.path.clone();
            set.spawn(async move { (path, write_file(&s, &data, 1 << 20).await.unwrap()) });
        }
        while let Some(r) = set.join_next().await {
            let (p, c) = r.unwrap();
            contents.insert(p, c);
        }
    }
    for item in tree {
        let mut e = item.entry.clone();
        e.content = contents.remove(&e.path);
        session.add_entry(e, Change::New).await.unwrap();
    }
    Arc::into_inner(session).unwrap().commit().await.unwrap()
}

/// Restores every entry of a snapshot and compares with `tree`: metadata exactly, content
/// bit for bit.
async fn assert_restores(repo: &Repository, id: &SnapshotId, tree: &[Item]) {
    let entries = repo.entries_of(id).await.unwrap().collect().await.unwrap();
    assert_eq!(entries.len(), tree.len());
    for (got, want) in entries.iter().zip(tree) {
        let mut stripped = got.clone();
        stripped.content = None;
        assert_eq!(stripped, want.entry, "metadata of {:?}", want.entry.path);
        match (&got.content, &want.data) {
            (Some(c), Some(data)) => {
                assert_eq!(c.size(), data.len() as u64);
                let bytes = repo.open_content(c).read_to_end().await.unwrap();
                assert!(bytes == **data, "content of {:?} differs", want.entry.path);
                // The sidecar's way: fill fixed-size slots, across chunk boundaries.
                let mut r = repo.open_content(c);
                let mut slot = vec![0u8; 700_001];
                let mut out = Vec::with_capacity(data.len());
                loop {
                    let n = r.read_into(&mut slot).await.unwrap();
                    out.extend_from_slice(&slot[..n]);
                    if n < slot.len() {
                        break;
                    }
                }
                assert_eq!(r.read_into(&mut slot).await.unwrap(), 0);
                assert!(out == **data, "slot-wise content of {:?} differs", want.entry.path);
            }
            (None, None) => {}
            _ => panic!("content presence of {:?}", want.entry.path),
        }
    }
}

async fn repo_bytes(store: &Store) -> u64 {
    let mut total = 0;
    let mut token = None;
    loop {
        let page = store.list("", token.as_deref(), 1000).await.unwrap();
        total += page.entries.iter().map(|e| e.size).sum::<u64>();
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return total,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_small_chunks_memory() {
    let repo = Repository::init(mem_store(), PW, small_params()).await.unwrap();
    let tree = generated_tree(20 << 20);
    let s = backup(&repo, &tree, BackupOptions::default()).await;
    assert_eq!(s.entries, tree.len() as u64);
    assert!(s.counts.packs_added > 5, "{:?}", s.counts);
    assert_restores(&repo, &s.id, &tree).await;
    // The 20 MiB files have > 64 chunks: their content refs point at chunk-list blobs.
    let entries = repo.entries_of(&s.id).await.unwrap().collect().await.unwrap();
    let video = entries.iter().find(|e| e.path == "media/video.bin").unwrap();
    assert!(matches!(video.content, Some(ContentRef::List { .. })), "{:?}", video.content);
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(report.infos.is_empty(), "{:?}", report.infos);
    assert_eq!(report.blobs_verified, report.blobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_recommended_params_file_store_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let params = RepoParams { pack_size: 4 << 20, ..RepoParams::insecure_for_tests() };
    let repo = Repository::init(file_store(dir.path()), PW, params).await.unwrap();
    let tree = generated_tree(6 << 20);
    let total: u64 = tree.iter().filter_map(|i| i.data.as_ref()).map(|d| d.len() as u64).sum();
    let s = backup(&repo, &tree, BackupOptions { tags: vec!["t1".into()], paths: vec!["/data".into()], ..Default::default() }).await;
    assert_eq!(s.counts.bytes_read, total);
    // Cross-file dedup: "video copy.bin" (6 MiB) duplicates "video.bin" and adds nothing (the
    // small excess is the tree blob, also counted); logs compress.
    assert!(s.counts.bytes_added < total - (6 << 20) + (64 << 10), "{:?} of {total}", s.counts);
    assert!(s.counts.bytes_added_packed < s.counts.bytes_added, "{:?}", s.counts);
    assert_eq!(s.counts.files_new, tree.iter().filter(|i| i.data.is_some()).count() as u64);
    // The stored snapshot carries the same figures, less its own object's bytes.
    let listed = repo.list_snapshots().await.unwrap();
    let stored = &listed.iter().find(|i| i.id == s.id).unwrap().file.counts;
    assert!(stored.bytes_added_packed > 0 && stored.bytes_added_packed < s.counts.bytes_added_packed, "{stored:?}");
    assert_eq!((stored.bytes_added, stored.packs_added), (s.counts.bytes_added, s.counts.packs_added));
    drop(repo);
    // A fresh process: open from the store alone.
    let repo = Repository::open(file_store(dir.path()), PW).await.unwrap();
    assert_restores(&repo, &s.id, &tree).await;
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(report.is_ok() && report.infos.is_empty(), "{:?} {:?}", report.errors, report.infos);
    // No lock left behind after commit.
    assert!(repo.store().list("locks", None, 10).await.unwrap().entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_backup_of_unchanged_data_adds_under_one_percent() {
    let store = mem_store();
    let repo = Repository::init(store.clone(), PW, small_params()).await.unwrap();
    let tree = generated_tree(8 << 20);
    let first = backup(&repo, &tree, BackupOptions::default()).await;
    let before = repo_bytes(&store).await;
    // Full re-read, no parent: every byte goes through the chunker again and dedups.
    let second = backup(&repo, &tree, BackupOptions::default()).await;
    let after = repo_bytes(&store).await;
    assert_eq!(second.counts.bytes_read, first.counts.bytes_read);
    assert_eq!(second.counts.bytes_added, 0, "{:?}", second.counts);
    let growth = (after - before) as f64 / before as f64;
    assert!(growth < 0.01, "grew {:.3}% ({before} → {after})", growth * 100.0);
    assert_restores(&repo, &second.id, &tree).await;
    assert_restores(&repo, &first.id, &tree).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_backup_references_unchanged_files_from_the_parent() {
    let store = mem_store();
    let repo = Repository::init(store.clone(), PW, small_params()).await.unwrap();
    let tree = generated_tree(2 << 20);
    let parent = backup(&repo, &tree, BackupOptions::default()).await;

    // The agent's second run: one file changed, one new, the rest unchanged.
    let mut tree2 = tree.clone();
    let changed = tree2.iter_mut().find(|i| i.entry.path == "docs/access.log").unwrap();
    let mut data = (**changed.data.as_ref().unwrap()).clone();
    data.extend_from_slice(b"one more line\n");
    changed.entry.size = data.len() as u64;
    changed.entry.mtime_ns += 1;
    changed.data = Some(Arc::new(data));
    tree2.push(file("docs/new.txt", text(77, 12_345), 999));

    let parent_files = repo.parent_files(&parent.id).await.unwrap();
    assert_eq!(parent_files.len(), tree.iter().filter(|i| i.data.is_some()).count());
    let session = repo.begin_backup(BackupOptions { parent: Some(parent.id), ..Default::default() }).await.unwrap();
    let mut read = 0u64;
    for item in &tree2 {
        let mut e = item.entry.clone();
        let change = if let Some(data) = &item.data {
            match parent_files.get(&e.path) {
                Some(p) if p.size == e.size && p.mtime_ns == e.mtime_ns && p.inode == e.inode => {
                    e.content = Some(p.content.clone()); // by reference: not read
                    Change::Unchanged
                }
                found => {
                    read += data.len() as u64;
                    e.content = Some(write_file(&session, data, 300_000).await.unwrap());
                    if found.is_some() { Change::Changed } else { Change::New }
                }
            }
        } else {
            Change::New
        };
        session.add_entry(e, change).await.unwrap();
    }
    let s = session.commit().await.unwrap();
    assert_eq!(s.counts.files_changed, 1);
    assert_eq!(s.counts.files_new, 1);
    assert_eq!(s.counts.files_unchanged, parent_files.len() as u64 - 1);
    assert_eq!(s.counts.bytes_read, read);
    assert!(read < 4 << 20);
    let snaps = repo.list_snapshots().await.unwrap();
    assert_eq!(snaps.last().unwrap().file.parent, Some(parent.id));
    assert_restores(&repo, &s.id, &tree2).await;
    assert_restores(&repo, &parent.id, &tree).await;
    assert!(repo.check(CheckOptions { read_data: true }).await.unwrap().is_ok());

    // A content ref the repository does not have is refused (a snapshot can never point at
    // missing data).
    let session = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let mut e = meta("ghost", EntryKind::File, 5, 1);
    e.content = Some(ContentRef::Chunks { size: 5, chunks: vec![ChunkRef { id: Id([7; 32]), len: 5 }] });
    let err = session.add_entry(e, Change::Unchanged).await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_NOT_FOUND");
    session.abort().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_not_a_repository_are_typed() {
    let store = mem_store();
    let err = Repository::open(store.clone(), PW).await.unwrap_err();
    assert!(matches!(err, EngineError::NotARepository { .. }), "{err}");
    assert_eq!(err.code(), "SHMPIPE_E_NOT_A_REPOSITORY");

    Repository::init(store.clone(), PW, RepoParams::insecure_for_tests()).await.unwrap();
    let err = Repository::open(store.clone(), b"wrong").await.unwrap_err();
    assert!(matches!(err, EngineError::WrongPassword), "{err}");
    assert_eq!(err.code(), "SHMPIPE_E_WRONG_PASSWORD");
    assert_eq!(err.to_string(), "wrong password");
    Repository::open(store.clone(), PW).await.unwrap();

    let err = Repository::init(store.clone(), PW, RepoParams::insecure_for_tests()).await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_REPO_EXISTS");

    let other = mem_store();
    other.put("config", [Bytes::from_static(b"{\"hello\": 1}")]).await.unwrap();
    let err = Repository::open(other, PW).await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_NOT_A_REPOSITORY", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_pack_is_reported_with_the_files_it_affects_and_others_still_restore() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(file_store(dir.path()), PW, small_params()).await.unwrap();
    let tree = generated_tree(2 << 20);
    let s = backup(&repo, &tree, BackupOptions::default()).await;
    let entries = repo.entries_of(&s.id).await.unwrap().collect().await.unwrap();

    // Damage one byte inside the first chunk of docs/small.txt (a one-chunk file), on disk.
    let victim = entries.iter().find(|e| e.path == "docs/small.txt").unwrap();
    let Some(ContentRef::Chunks { chunks, .. }) = &victim.content else { panic!() };
    let loc = repo.locate(&chunks[0].id).await.unwrap();
    let pack_path = dir.path().join(shmpipe_engine::objects::pack_key(&loc.pack));
    let mut bytes = std::fs::read(&pack_path).unwrap();
    bytes[loc.offset as usize + 20] ^= 0x40;
    std::fs::write(&pack_path, &bytes).unwrap();

    // Structure alone cannot see it (sizes match)...
    assert!(repo.check(CheckOptions::default()).await.unwrap().is_ok());
    // ...read_data does, names the pack and the file.
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(!report.is_ok());
    let pack_key = shmpipe_engine::objects::pack_key(&loc.pack);
    assert!(report.errors.iter().any(|e| e.object.starts_with(&pack_key)), "{:?}", report.errors);
    let affected: Vec<&str> = report.affected_files.iter().map(|a| a.path.as_str()).collect();
    assert!(affected.contains(&"docs/small.txt"), "{affected:?}");
    assert!(affected.iter().all(|p| *p == "docs/small.txt"), "only the damaged blob's file(s): {affected:?}");

    // The damaged file fails with an integrity error; every other file restores, including
    // files with blobs in the same pack.
    let err = repo.open_content(victim.content.as_ref().unwrap()).read_to_end().await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_INTEGRITY");
    let mut same_pack = 0;
    for (e, item) in entries.iter().zip(&tree) {
        let (Some(c), Some(data)) = (&e.content, &item.data) else { continue };
        if e.path == "docs/small.txt" {
            continue;
        }
        if let ContentRef::Chunks { chunks, .. } = c {
            for ch in chunks {
                if repo.locate(&ch.id).await.unwrap().pack == loc.pack {
                    same_pack += 1;
                }
            }
        }
        assert!(repo.open_content(c).read_to_end().await.unwrap() == **data, "{}", e.path);
    }
    assert!(same_pack > 0, "the test should cover intact blobs of the damaged pack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_backup_leaves_a_consistent_repository_and_the_next_backup_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let repo = Repository::init(store.clone(), PW, small_params()).await.unwrap();
    let tree = generated_tree(4 << 20);
    let first = backup(&repo, &tree[..8], BackupOptions::default()).await;

    // A backup that dies midway: an index object after every pack, several packs uploaded,
    // one file half-written, then the session is dropped (a crash from the engine's view).
    let session = repo.begin_backup(BackupOptions { index_every_packs: 1, ..Default::default() }).await.unwrap();
    for item in tree.iter().filter(|i| i.data.is_some()).take(8) {
        write_file(&session, item.data.as_ref().unwrap(), 1 << 20).await.unwrap();
    }
    let mut w = session.file_writer().unwrap();
    w.write(Bytes::from(noise(1234, 3 << 20))).await.unwrap();
    drop(w);
    drop(session);
    // What a killed process leaves mid-upload on a store without atomic uploads: a partial
    // pack under a fresh name (file:// and S3 never show one, but check must cope).
    let junk = shmpipe_engine::objects::pack_key(&Id::random());
    store.put(&junk, [Bytes::from(noise(5, 1000))]).await.unwrap();

    let repo = Repository::open(store.clone(), PW).await.unwrap();
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(report.infos.iter().any(|i| i.object == junk), "{:?}", report.infos);
    assert_restores(&repo, &first.id, &tree[..8]).await;

    let next = backup(&repo, &tree, BackupOptions::default()).await;
    assert_restores(&repo, &next.id, &tree).await;
    assert_eq!(repo.list_snapshots().await.unwrap().len(), 2);
    let report = repo.check(CheckOptions { read_data: true }).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_backup_writes_no_snapshot_and_releases_its_lock() {
    let store = mem_store();
    let repo = Repository::init(store.clone(), PW, small_params()).await.unwrap();
    let session = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let c = write_file(&session, &noise(1, 3 << 20), 1 << 20).await.unwrap();
    let mut e = meta("x", EntryKind::File, 3 << 20, 1);
    e.content = Some(c);
    session.add_entry(e, Change::New).await.unwrap();
    session.abort().await.unwrap();
    assert!(repo.list_snapshots().await.unwrap().is_empty());
    assert!(store.list("locks", None, 10).await.unwrap().entries.is_empty());
    assert!(repo.check(CheckOptions { read_data: true }).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_exclude_exclusive_operations_but_not_concurrent_backups() {
    let store = mem_store();
    let repo = Repository::init(store.clone(), PW, small_params()).await.unwrap();
    let tree = generated_tree(1 << 20);

    // Two backups at once: both shared, both commit, nothing corrupted.
    let (a, b) = tokio::join!(backup(&repo, &tree[..10], BackupOptions::default()), backup(&repo, &tree, BackupOptions::default()));
    assert_restores(&repo, &a.id, &tree[..10]).await;
    assert_restores(&repo, &b.id, &tree).await;
    assert!(repo.check(CheckOptions { read_data: true }).await.unwrap().is_ok());

    // A backup in progress holds a shared lock: an exclusive one is refused...
    let session = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let err = repo.lock(LockKind::Exclusive, "prune").await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_LOCKED");
    assert!(err.to_string().contains("Shared lock"), "{err}");
    session.abort().await.unwrap();
    // ...and an exclusive lock refuses a backup, until released.
    let ex = repo.lock(LockKind::Exclusive, "prune").await.unwrap();
    let err = repo.begin_backup(BackupOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_LOCKED");
    ex.release().await.unwrap();
    let s = repo.begin_backup(BackupOptions::default()).await.unwrap();
    s.commit().await.unwrap();
    assert!(store.list("locks", None, 10).await.unwrap().entries.is_empty(), "refused attempts leave no lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_listed_oldest_first_with_their_metadata() {
    let repo = Repository::init(mem_store(), PW, small_params()).await.unwrap();
    let tree = generated_tree(1 << 16);
    let mut ids = Vec::new();
    for i in 0..3 {
        let opts = BackupOptions {
            host: Some(format!("host{i}")),
            tags: vec![format!("tag{i}"), "daily".into()],
            paths: vec!["/srv".into()],
            parent: ids.last().copied(),
            ..Default::default()
        };
        ids.push(backup(&repo, &tree, opts).await.id);
    }
    let list = repo.list_snapshots().await.unwrap();
    assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    for (i, s) in list.iter().enumerate() {
        assert_eq!(s.file.host, format!("host{i}"));
        assert_eq!(s.file.tags, vec![format!("tag{i}"), "daily".to_string()]);
        assert_eq!(s.file.paths, vec!["/srv".to_string()]);
        assert_eq!(s.file.entries, tree.len() as u64);
        assert_eq!(s.file.parent, if i == 0 { None } else { Some(ids[i - 1]) });
    }
    let err = repo.snapshot(&Id([1; 32])).await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_NOT_FOUND");
}

/// Slot leases handed to `write` are kept without a copy only while chunks of them wait to be
/// sealed: after each write at most the chunker's carry (< max_size, here one 1 MiB lease)
/// plus the chunk tasks in flight (each pinning the lease it slices) are held, and none once
/// `finish` returned. Every chunk inside one lease is hashed and sealed from the lease itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_holds_leases_only_until_their_chunks_are_sealed() {
    struct Lease(Vec<u8>, Arc<AtomicUsize>);
    impl AsRef<[u8]> for Lease {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Lease {
        fn drop(&mut self) {
            self.1.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let repo = Repository::init(mem_store(), PW, small_params()).await.unwrap();
    let in_flight = 3;
    let session = repo.begin_backup(BackupOptions { max_chunks_in_flight: Some(in_flight), ..Default::default() }).await.unwrap();
    let live = Arc::new(AtomicUsize::new(0));
    let mut w = session.file_writer().unwrap();
    let mut most = 0;
    for i in 0..12u64 {
        live.fetch_add(1, Ordering::SeqCst);
        w.write(Bytes::from_owner(Lease(noise(i, 1 << 20), live.clone()))).await.unwrap();
        let held = live.load(Ordering::SeqCst);
        most = most.max(held);
        assert!(held <= 1 + in_flight, "after write {i}: {held} leases held, more than the carry and {in_flight} chunk tasks");
    }
    assert!(most >= 1, "leases are kept, not copied");
    let c = w.finish().await.unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0, "every lease released once finish returned");
    assert_eq!(c.size(), 12 << 20);
    session.commit().await.unwrap();
}

#[test]
fn engine_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let repo = Repository::init(mem_store(), PW, small_params()).await.unwrap();
        let session = repo.begin_backup(BackupOptions::default()).await.unwrap();
        let mut w = session.file_writer().unwrap();
        send(&w.write(Bytes::new()));
        send(&session.add_entry(meta("d", EntryKind::Dir, 0, 0), Change::New));
        send(&repo.check(CheckOptions::default()));
        send(&repo.open_content(&ContentRef::empty()).next_chunk());
        send(&repo.list_snapshots());
        send(&w.finish());
        send(&session.commit());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_order_and_content_refs_survive_many_entries() {
    // Enough entries for several tree blobs; unchanged stretches dedup across snapshots.
    let store = mem_store();
    let repo = Repository::init(store.clone(), PW, small_params()).await.unwrap();
    let mut tree: Vec<Item> = (0..20_000u64).map(|i| Item { entry: meta(&format!("d{:02}/e{i:06}", i % 50), EntryKind::Dir, 0, i), data: None }).collect();
    let a = backup(&repo, &tree, BackupOptions::default()).await;
    let sa = repo.snapshot(&a.id).await.unwrap();
    assert!(sa.tree.len() > 3, "{} tree blobs", sa.tree.len());
    tree[15_000].entry.mtime_ns += 1;
    let b = backup(&repo, &tree, BackupOptions::default()).await;
    let sb = repo.snapshot(&b.id).await.unwrap();
    let shared = sb.tree.iter().filter(|t| sa.tree.contains(t)).count();
    assert!(shared >= sb.tree.len() - 2, "{shared} of {} tree blobs shared", sb.tree.len());
    let got: BTreeMap<String, i64> =
        repo.entries_of(&b.id).await.unwrap().collect().await.unwrap().into_iter().map(|e| (e.path, e.mtime_ns)).collect();
    assert_eq!(got.len(), tree.len());
    assert_restores(&repo, &b.id, &tree).await;
}

/// A long-lived handle (the sidecar's) sees snapshots another process wrote after it loaded
/// its index: a missed blob reloads new index objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_repository_restores_snapshots_written_later_by_another_process() {
    let store = mem_store();
    let reader = Repository::init(store.clone(), PW, small_params()).await.unwrap();
    let tree = generated_tree(1 << 20);
    let first = backup(&reader, &tree[..6], BackupOptions::default()).await;
    assert_restores(&reader, &first.id, &tree[..6]).await; // index loaded now
    let writer = Repository::open(store.clone(), PW).await.unwrap();
    let second = backup(&writer, &tree, BackupOptions::default()).await;
    assert_restores(&reader, &second.id, &tree).await;
}
