//! The engine as the hostile-repository corpus uses it (examples/hostile_corpus.rs): what
//! `add_entry` refuses, `add_entry_unchecked` writes — so the readers meet lying entries
//! through well-formed, authenticated objects — and the readers then fail with typed errors
//! that name what is wrong, never a panic. The restore side of the corpus is
//! test/restore-safety.test.js.

use bytes::Bytes;
use shmpipe_engine::snapshot::{path_problem, target_problem};
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

fn file(path: &str, content: ContentRef) -> TreeEntry {
    TreeEntry { path: path.into(), kind: EntryKind::File, mode: 0o100644, size: content.size(), content: Some(content), ..TreeEntry::default() }
}

#[tokio::test]
async fn unchecked_entries_are_stored_as_given_and_readers_fail_by_name() {
    let store = Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap();
    let repo = Repository::init(store, b"pw", RepoParams::insecure_for_tests()).await.unwrap();
    let s = repo.begin_backup(BackupOptions::default()).await.unwrap();
    let mut w = s.file_writer().unwrap();
    w.write(Bytes::from_static(b"fine\n")).await.unwrap();
    let fine = w.finish().await.unwrap();
    let ContentRef::Chunks { chunks, .. } = &fine else { panic!("one inline chunk") };
    let real = chunks[0];

    let missing = ContentRef::Chunks { size: 10, chunks: vec![ChunkRef { id: Id([7; 32]), len: 10 }] };
    let wrong_len = ContentRef::Chunks { size: 100, chunks: vec![ChunkRef { id: real.id, len: 100 }] };
    let short = ContentRef::Chunks { size: 1 << 40, chunks: vec![real] };
    let lying_size = TreeEntry { size: 1 << 30, ..file("data/size-lie", fine.clone()) };
    // The checked path refuses what an honest writer never stores...
    for bad in [file("data/missing", missing.clone()), file("data/short", short.clone()), lying_size.clone()] {
        assert!(s.add_entry(bad.clone(), Change::New).await.is_err(), "{}", bad.path);
    }
    // ...the unchecked one writes it, names included.
    let hostile = [
        file("data/..", fine.clone()),
        file("/abs", fine.clone()),
        file("data/\\x2e\\x2e", fine.clone()),
        file("data/missing", missing.clone()),
        file("data/wrong-length", wrong_len.clone()),
        file("data/short", short.clone()),
        lying_size,
    ];
    for e in &hostile {
        s.add_entry_unchecked(e.clone()).await.unwrap();
    }
    let id = s.commit().await.unwrap().id;
    let listed = repo.entries_of(&id).await.unwrap().collect().await.unwrap();
    assert_eq!(listed, hostile, "stored and listed bit for bit");
    for e in &listed[..3] {
        assert!(path_problem(&e.path).is_some(), "{} is refused by name", e.path);
    }
    assert_eq!(target_problem("a\\x00"), Some("target \"a\\\\x00\" contains NUL".into()));

    let err = repo.open_content(&missing).read_to_end().await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_NOT_FOUND", "{err}");
    let err = repo.open_content(&wrong_len).read_to_end().await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_INTEGRITY", "{err}");
    assert!(err.to_string().contains("chunk length differs"), "{err}");
    let err = repo.open_content(&short).read_to_end().await.unwrap_err();
    assert_eq!(err.code(), "SHMPIPE_E_INTEGRITY", "{err}");
    assert!(err.to_string().contains("chunks add up to 5 bytes, not 1099511627776"), "{err}");
    let list = ContentRef::List { size: 10, count: 1, list: Id([9; 32]) };
    assert_eq!(repo.open_content(&list).read_to_end().await.unwrap_err().code(), "SHMPIPE_E_NOT_FOUND");
}
