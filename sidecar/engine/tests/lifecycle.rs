//! Repository lifecycle faults through a real file:// store: two inits racing, a config whose
//! KDF parameters ask for too much, a hostile extra key slot.

use std::sync::Arc;

use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

fn file_store(dir: &std::path::Path) -> Store {
    Store::open(&StoreConfig::new(&format!("file://{}", dir.display()), StoreOptions::default()).unwrap()).unwrap()
}

fn config_json(dir: &std::path::Path) -> serde_json::Value {
    let raw = std::fs::read(dir.join("config")).unwrap();
    // The store's 32-byte trailer follows the JSON.
    serde_json::from_slice(&raw[..raw.len() - 32]).unwrap()
}

/// Writes `value` as the config through the store (so the trailer is right).
async fn put_config(store: &Store, value: &serde_json::Value) {
    store.put("config", [bytes::Bytes::from(serde_json::to_vec(value).unwrap())]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_inits_one_fails_cleanly_and_one_key_remains() {
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let racer = |pw: &'static [u8]| {
            let (store, start) = (file_store(dir.path()), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                Repository::init(store, pw, RepoParams::insecure_for_tests()).await
            })
        };
        let (a, b) = (racer(b"alpha"), racer(b"beta"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (winner, loser) = match (&a, &b) {
            (Ok(_), Err(e)) => (&b"alpha"[..], e),
            (Err(e), Ok(_)) => (&b"beta"[..], e),
            _ => panic!("round {round}: exactly one init must succeed: {a:?} / {b:?}"),
        };
        assert_eq!(loser.code(), "SHMPIPE_E_REPO_EXISTS", "round {round}: {loser}");
        let repo = Repository::open(file_store(dir.path()), winner).await.unwrap();
        assert_eq!(repo.keys().await.unwrap().len(), 1, "round {round}: one key");
        let other = if winner == b"alpha" { &b"beta"[..] } else { &b"alpha"[..] };
        let e = Repository::open(file_store(dir.path()), other).await.unwrap_err();
        assert_eq!(e.code(), "SHMPIPE_E_WRONG_PASSWORD", "round {round}: the loser's key is nowhere");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_asking_for_1_tib_of_argon2_memory_fails_fast_with_repo_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    Repository::init(store.clone(), b"pw", RepoParams::insecure_for_tests()).await.unwrap();
    let mut config = config_json(dir.path());
    config["kdf"]["m_kib"] = serde_json::json!(1u64 << 30);
    put_config(&store, &config).await;
    // Without the bound this would try to allocate 1 TiB (abort) — not return an error.
    let e = Repository::open(store.clone(), b"pw").await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_REPO_LIMIT", "{e}");
    assert!(e.to_string().contains("Argon2 memory"), "{e}");
    config["kdf"]["m_kib"] = serde_json::json!(64);
    config["kdf"]["t"] = serde_json::json!(1_000_000);
    put_config(&store, &config).await;
    assert_eq!(Repository::open(store, b"pw").await.unwrap_err().code(), "SHMPIPE_E_REPO_LIMIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_a_kdf_below_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let params = RepoParams { allow_weak_kdf: false, ..RepoParams::insecure_for_tests() };
    let e = Repository::init(file_store(dir.path()), b"pw", params).await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_REPO_LIMIT", "{e}");
    assert!(!dir.path().join("config").exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_key_slot_is_skipped_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let repo = Repository::init(store.clone(), b"pw", RepoParams::insecure_for_tests()).await.unwrap();
    let two = repo.add_key(b"two", KdfParams::insecure_for_tests(), true).await.unwrap();
    // Another host with write access rewrites the second slot to ask for 1 TiB.
    let key = format!("keys/{}", two.id);
    let raw = std::fs::read(dir.path().join(&key)).unwrap();
    let mut slot: serde_json::Value = serde_json::from_slice(&raw[..raw.len() - 32]).unwrap();
    slot["kdf"]["m_kib"] = serde_json::json!(1u64 << 30);
    store.put(&key, [bytes::Bytes::from(serde_json::to_vec(&slot).unwrap())]).await.unwrap();
    // The first password still opens (its slot comes first); the second is refused by name.
    Repository::open(store.clone(), b"pw").await.unwrap();
    let e = Repository::open(store, b"two").await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_REPO_LIMIT", "{e}");
    assert!(e.to_string().contains(&two.id), "{e}");
}

/// The goal of issue #13 item 3 that is not met yet: a backup whose unchanged files' blobs only a
/// damaged index object listed should index those packs from their headers for the session.
/// Today it fails naming the blob until `repair index` runs (REPOSITORY.md §Repair); the CLI's
/// `--force` re-reads such files. Kept, ignored, as the specification of the fix.
#[ignore = "unfinished: blobs listed only by a damaged index object are not re-indexed from pack headers (REPOSITORY.md §Repair)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_index_object_does_not_stop_an_incremental_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let repo = Repository::init(store.clone(), b"pw", RepoParams::insecure_for_tests()).await.unwrap();
    let s = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let mut w = s.file_writer().unwrap();
    w.write(bytes::Bytes::from(vec![7u8; 300_000])).await.unwrap();
    let content = w.finish().await.unwrap();
    let entry = TreeEntry { path: "f".into(), kind: EntryKind::File, mode: 0o100600, size: 300_000, content: Some(content.clone()), ..TreeEntry::default() };
    s.add_entry(entry.clone(), Change::New).await.unwrap();
    let first = s.commit().await.unwrap();
    // Damage the only index object (its checksum stays valid: authentication fails).
    let (key, _) = store.list("index", None, 10).await.unwrap().entries.into_iter().map(|e| (e.key, e.size)).next().unwrap();
    let mut raw = shmpipe_engine::objects::read_all(&store, &key).await.unwrap().to_vec();
    raw[20] ^= 0x5a;
    store.put(&key, [bytes::Bytes::from(raw)]).await.unwrap();

    // A fresh handle (as the next backup run opens it): the unchanged file's blobs are found
    // from the pack headers, the backup commits, and its index lists them again.
    let repo = Repository::open(store.clone(), b"pw").await.unwrap();
    let s = repo.begin_backup(BackupOptions { parent: Some(first.id), ..BackupOptions::default() }).await.unwrap();
    s.add_entry(entry, Change::Unchanged).await.unwrap();
    let second = s.commit().await.unwrap();
    assert!(second.warnings.iter().any(|w| w.contains(&key)), "{:?}", second.warnings);
    let again = Repository::open(store, b"pw").await.unwrap();
    let report = again.check(CheckOptions { read_data: true }).await.unwrap();
    assert_eq!(report.errors.len(), 1, "only the damaged index object: {:?}", report.errors);
    assert!(again.open_content(&content).read_to_end().await.unwrap() == vec![7u8; 300_000]);
    again.repair_index().await.unwrap();
    assert!(again.check(CheckOptions { read_data: true }).await.unwrap().is_ok());
}
