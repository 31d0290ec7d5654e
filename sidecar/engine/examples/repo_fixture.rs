//! Writes a small repository with fixed content to a directory, in the format this engine
//! writes: the compatibility fixtures under `tests/fixtures/` were made by running it at the
//! revision named in their README (`tests/format_compat.rs` opens and restores them with
//! today's code). The content is what `tests/format_compat.rs` expects: keep the two in step.
//!
//! ```text
//! cargo run -p shmpipe-engine --example repo_fixture -- <empty dir>
//! ```

use bytes::Bytes;
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

/// The fixture's password.
const PASSWORD: &[u8] = b"fixture password";

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
    let mode = match kind {
        EntryKind::Dir => 0o40755,
        EntryKind::Symlink => 0o120777,
        _ => 0o100644,
    };
    TreeEntry { path: path.into(), kind, mode, uid: 1000, gid: 1000, mtime_ns: 1_764_000_000_000_000_000, size, inode: 7, dev: 1, ..TreeEntry::default() }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::args().nth(1).expect("usage: repo_fixture <empty dir>");
    let url = format!("file://{dir}");
    let store = Store::open(&StoreConfig::new(&url, StoreOptions::default()).unwrap()).unwrap();
    // Tiny chunks: the 100 KB file needs a chunk-list blob; a fixed seed (format 1's gear seed).
    let params = RepoParams {
        chunker: Some(ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024, normalization: 1, gear_seed: 0x5eed }),
        pack_size: 1 << 20,
        ..RepoParams::insecure_for_tests()
    };
    let repo = Repository::init(store, PASSWORD, params).await.unwrap();
    let opts = BackupOptions { host: Some("fixture".into()), paths: vec!["/data".into()], time_ns: Some(1_764_000_000_000_000_000), lock: false, ..Default::default() };
    let s = repo.begin_backup(opts).await.unwrap();
    s.add_entry(entry("data", EntryKind::Dir, 0), Change::New).await.unwrap();
    for (path, data) in [("data/a.bin", noise(1, 5000)), ("data/big.bin", noise(2, 100_000)), ("data/copy.bin", noise(1, 5000)), ("data/empty", Vec::new())] {
        let mut w = s.file_writer().unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        let mut e = entry(path, EntryKind::File, data.len() as u64);
        e.content = Some(w.finish().await.unwrap());
        s.add_entry(e, Change::New).await.unwrap();
    }
    let mut link = entry("data/link", EntryKind::Symlink, 5);
    link.target = Some("a.bin".into());
    s.add_entry(link, Change::New).await.unwrap();
    let summary = s.commit().await.unwrap();
    println!("{}", summary.id);
}
