//! Writes a hostile repository: one snapshot whose entries are what a buggy or malicious
//! writer holding the password could store (REPOSITORY.md's threat model: restore trusts no
//! repository). It goes through the engine's own write path (`add_entry_unchecked`, which skips
//! the checks an honest backup gets), so every object is well formed, encrypted and
//! authenticated: only the *content* lies. Used by test/restore-safety.test.js, which restores
//! it with the real CLI and checks that every hostile entry is refused or fails by name, that
//! the honest ones are restored, and that nothing is written outside the target.
//!
//! Usage: `hostile_corpus <repository dir> <password> <outside dir>`; prints the snapshot id.
//! `outside dir` is where the planted symlink entries point.

use bytes::Bytes;
use shmpipe_engine::{BackupOptions, ChunkRef, ContentRef, EntryKind, Id, RepoParams, Repository, TreeEntry};
use shmpipe_store::{Store, StoreConfig, StoreOptions};

/// How deep the nested directory chain goes (restore stops at PATH_MAX: 2046 levels here).
const DEPTH: usize = 10_000;

fn entry(path: &str, kind: EntryKind) -> TreeEntry {
    let mode = match kind {
        EntryKind::File => 0o100644,
        EntryKind::Dir => 0o040755,
        EntryKind::Symlink => 0o120777,
        EntryKind::Other => 0o010644,
    };
    TreeEntry { path: path.into(), kind, mode, uid: 0, gid: 0, mtime_ns: 1_700_000_000_000_000_000, ..TreeEntry::default() }
}

fn file(path: &str, content: &ContentRef) -> TreeEntry {
    TreeEntry { size: content.size(), content: Some(content.clone()), ..entry(path, EntryKind::File) }
}

fn link(path: &str, target: &str) -> TreeEntry {
    TreeEntry { target: Some(target.into()), size: target.len() as u64, ..entry(path, EntryKind::Symlink) }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, password, outside] = args.as_slice() else {
        eprintln!("usage: hostile_corpus <repository dir> <password> <outside dir>");
        std::process::exit(2);
    };
    let store = Store::open(&StoreConfig::new(&format!("file://{dir}"), StoreOptions::default())?)?;
    let repo = Repository::init(store, password.as_bytes(), RepoParams::recommended()).await?;
    let s = repo.begin_backup(BackupOptions { paths: vec!["/hostile".into()], ..BackupOptions::default() }).await?;
    let write = |data: &'static [u8]| {
        let w = s.file_writer();
        async move {
            let mut w = w?;
            w.write(Bytes::from_static(data)).await?;
            w.finish().await
        }
    };
    let fine = write(b"fine\n").await?;
    let first = write(b"first\n").await?;
    let second = write(b"second\n").await?;
    let pwned = write(b"pwned\n").await?;
    let ContentRef::Chunks { chunks, .. } = &fine else { unreachable!("a 5-byte file is one inline chunk") };
    let real = chunks[0];

    let mut all = vec![
        entry("data", EntryKind::Dir),
        file("data/ok.txt", &fine),
        // Names that are not names, plain and escaped (they decode to `..`, `/`, NUL), and a
        // non-canonical escape of a plain `A`.
        file("data/..", &pwned),
        file("data/../../escape", &pwned),
        entry("data/\\x2e\\x2e", EntryKind::Dir),
        file("data/\\x2e\\x2e/pwned", &pwned),
        file("data/a\\x2fb", &pwned),
        file("data/nul\\x00", &pwned),
        file("data/\\x41", &pwned),
        // The same name twice: the first one stays.
        file("data/dup", &first),
        file("data/dup", &second),
        // Symlinks out of the target (created as links, never followed)...
        link("data/link", outside),
        link("data/link2", "../.."),
        entry("data/d", EntryKind::Dir),
        // Sizes that disagree with the content, content that is not there or not what it says.
        TreeEntry { size: 1 << 30, ..file("data/size-lie", &fine) },
        file("data/huge-ref", &ContentRef::Chunks { size: 1 << 40, chunks: vec![real] }),
        file("data/missing-blob", &ContentRef::Chunks { size: 10, chunks: vec![ChunkRef { id: Id([7; 32]), len: 10 }] }),
        file("data/wrong-length", &ContentRef::Chunks { size: 100, chunks: vec![ChunkRef { id: real.id, len: 100 }] }),
        file("data/missing-list", &ContentRef::List { size: 10, count: 1, list: Id([9; 32]) }),
        link("data/nul-target", "a\\x00b"),
        TreeEntry { mode: 0o100644, ..entry("data/not-special", EntryKind::Other) },
        // ...then files "through" them.
        file("data/link/pwned", &pwned),
        file("data/link2/pwned", &pwned),
        // A directory's contents, then the directory again as a file.
        file("data/d/x", &fine),
        file("data/d", &pwned),
        // At the top: dot names, an absolute path, an empty one.
        file("..", &pwned),
        file("/abs-escape", &pwned),
        file("", &pwned),
        entry("deep", EntryKind::Dir),
    ];
    let mut path = String::from("deep");
    for _ in 0..DEPTH {
        path.push_str("/n");
        all.push(entry(&path, EntryKind::Dir));
    }
    all.push(file(&format!("{path}/bottom.txt"), &fine));
    for e in all {
        s.add_entry_unchecked(e).await?;
    }
    let summary = s.commit().await?;
    println!("{}", summary.id.to_hex());
    Ok(())
}
