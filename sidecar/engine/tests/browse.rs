//! The browsing API (browse.rs): the blobs a snapshot uses, a file's chunk list (inline and in a
//! chunk-list blob), single objects decrypted, and rewriting a snapshot (restic's `tag`).

use std::collections::HashSet;

use bytes::Bytes;
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

fn mem_store() -> Store {
    Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap()
}

/// Tiny chunks (avg 256 B), so a 40 KiB file has more than INLINE_CHUNKS and a chunk list.
fn tiny_params() -> RepoParams {
    RepoParams { chunker: Some(ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024, normalization: 1, gear_seed: 7 }), ..RepoParams::insecure_for_tests() }
}

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
    TreeEntry { path: path.into(), kind, mode: if kind == EntryKind::Dir { 0o40755 } else { 0o100644 }, mtime_ns: 1, size, inode: 1, dev: 1, ..TreeEntry::default() }
}

/// One snapshot of `files` (path, bytes) under a directory `d`.
async fn snapshot_of(repo: &Repository, files: &[(&str, Vec<u8>)], tags: &[&str]) -> SnapshotId {
    let s = repo.begin_backup(BackupOptions { tags: tags.iter().map(|t| t.to_string()).collect(), paths: vec!["/d".into()], ..Default::default() }).await.unwrap();
    s.add_entry(entry("d", EntryKind::Dir, 0), Change::New).await.unwrap();
    for (p, data) in files {
        let mut w = s.file_writer().unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        let mut e = entry(p, EntryKind::File, data.len() as u64);
        e.content = Some(w.finish().await.unwrap());
        s.add_entry(e, Change::New).await.unwrap();
    }
    s.commit().await.unwrap().id
}

#[tokio::test]
async fn snapshot_blobs_counts_data_trees_and_chunk_lists_and_content_chunks_reads_lists() {
    let repo = Repository::init(mem_store(), b"pw", tiny_params()).await.unwrap();
    let big = noise(1, 40 << 10);
    let small = noise(2, 300);
    let id = snapshot_of(&repo, &[("d/big", big.clone()), ("d/small", small.clone()), ("d/copy", small.clone())], &[]).await;
    let file = repo.snapshot(&id).await.unwrap();
    let blobs = repo.snapshot_blobs(&file).await.unwrap();

    let mut entries = repo.entries(&file);
    let mut chunk_ids = HashSet::new();
    let mut lists = 0;
    while let Some(e) = entries.next().await.unwrap() {
        let Some(c) = e.content else { continue };
        if let ContentRef::List { list, .. } = &c {
            lists += 1;
            assert_eq!(blobs[list].kind, BlobKind::ChunkList);
        }
        let chunks = repo.content_chunks(&c).await.unwrap();
        assert_eq!(chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(), e.size, "{}: the chunks make up the file", e.path);
        chunk_ids.extend(chunks.iter().map(|c| c.id));
    }
    assert_eq!(lists, 1, "the 40 KiB file has more than INLINE_CHUNKS chunks");
    let data: HashSet<_> = blobs.iter().filter(|(_, b)| b.kind == BlobKind::Data).map(|(id, _)| *id).collect();
    assert_eq!(data, chunk_ids, "every chunk once (the copy shares its chunks)");
    for t in &file.tree {
        assert_eq!(blobs[t].kind, BlobKind::Tree);
    }
    assert_eq!(blobs.len(), chunk_ids.len() + file.tree.len() + 1);
    let plain: u64 = blobs.values().filter(|b| b.kind == BlobKind::Data).map(|b| u64::from(b.raw_len)).sum();
    assert_eq!(plain, (big.len() + small.len()) as u64);

    // A tree blob decodes to the snapshot's entries; the pack header lists the blobs.
    let first = repo.read_tree_blob(&file.tree[0]).await.unwrap();
    assert_eq!(first[0].path, "d");
    let loc = repo.locate(&file.tree[0]).await.unwrap();
    let header = repo.read_pack_header(&loc.pack).await.unwrap();
    assert!(header.iter().any(|b| b.id == file.tree[0]));
}

#[tokio::test]
async fn rewrite_snapshot_writes_a_new_id_and_deletes_the_old() {
    let repo = Repository::init(mem_store(), b"pw", tiny_params()).await.unwrap();
    let old = snapshot_of(&repo, &[("d/a", noise(3, 1000))], &["x"]).await;
    let mut file = repo.snapshot(&old).await.unwrap();
    file.tags = vec!["y".into()];
    let new = repo.rewrite_snapshot(&old, &file).await.unwrap();
    assert_ne!(new, old);
    let list = repo.list_snapshots().await.unwrap();
    assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), [new]);
    let got = repo.snapshot(&new).await.unwrap();
    assert_eq!(got.tags, ["y"]);
    assert_eq!(got.tree, file.tree, "the same tree");
    assert_eq!(repo.snapshot(&old).await.unwrap_err().code(), "SHMPIPE_E_NOT_FOUND");
}
