//! The local metadata cache (REPOSITORY.md §Cache): copies of a repository's index objects,
//! snapshots and tree/chunk-list blobs on the local disk, under
//! `<base>/<repository id>/{index,snapshots}/<id>` and `…/trees/<2 hex>/<blob id>`, so that
//! opening a repository downloads only the objects it has not seen. restic's design: the
//! files hold the objects exactly as stored (still encrypted), and every read from the cache
//! is verified as a read from the store would be (a sealed object's AEAD is bound to its key,
//! a blob's plaintext to its id), so a damaged or planted cache file is never believed: it is
//! deleted and the object fetched again. Only objects the repository lists (or its index
//! holds) are looked up, and files of objects gone from the repository are removed.
//!
//! The cache is an optimisation: any failure to read or write it is logged and ignored. It
//! sits below `repo.rs` (which decides what to cache) and above nothing but the file system.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::id::Id;

/// <https://bford.info/cachedir/>: backup tools skip directories holding this file.
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by shmpipe.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// Cache keys of tree and chunk-list blobs live under this prefix.
pub const TREES: &str = "trees";

/// `$XDG_CACHE_HOME/shmpipe`, else `$HOME/.cache/shmpipe` (absolute values only, as the XDG
/// base directory specification says); `None` without either.
pub fn default_base() -> Option<PathBuf> {
    let abs = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").and_then(abs) {
        return Some(x.join("shmpipe"));
    }
    std::env::var_os("HOME").and_then(abs).map(|h| h.join(".cache").join("shmpipe"))
}

/// The cache key of a tree or chunk-list blob.
pub fn blob_key(id: &Id) -> String {
    let h = id.to_hex();
    format!("{TREES}/{}/{h}", &h[..2])
}

/// One repository's cache directory.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

impl Cache {
    /// Opens (creating it, mode 0700) the cache of repository `repo` under `base`.
    pub fn open(base: &Path, repo: &Id) -> std::io::Result<Self> {
        create_private_dir(base)?;
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() {
            std::fs::write(&tag, CACHEDIR_TAG)?;
        }
        let dir = base.join(repo.to_hex());
        create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// The repository's cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached copy of `key` (a repository key such as `index/<id>`, or [`blob_key`]).
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        match tokio::fs::read(self.dir.join(key)).await {
            Ok(d) => Some(Bytes::from(d)),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(key, error = %e, "reading the cache failed");
                None
            }
        }
    }

    /// Stores a copy of `key` (written to a temporary name, then renamed: readers never see
    /// part of a file, and concurrent writers of the same key write the same bytes).
    pub async fn put(&self, key: &str, data: &[u8]) {
        let path = self.dir.join(key);
        let tmp = path.with_file_name(format!(".tmp-{}", Id::random().short()));
        let res = async {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::write(&tmp, data).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::warn!(key, error = %e, "writing the cache failed");
        }
    }

    /// Removes the copy of `key` (a damaged one, or one of an object gone).
    pub async fn remove(&self, key: &str) {
        match tokio::fs::remove_file(self.dir.join(key)).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(key, error = %e, "removing from the cache failed"),
        }
    }

    /// Removes every file under `prefix` (one level, or two for [`TREES`]) whose name is not
    /// an id for which `keep` is true — objects gone from the repository, and temporary files
    /// a killed writer left. Returns how many were removed.
    pub async fn retain(&self, prefix: &str, keep: impl Fn(&Id) -> bool) -> usize {
        let dir = self.dir.join(prefix);
        let mut dirs = vec![dir];
        let mut removed = 0;
        while let Some(d) = dirs.pop() {
            let Ok(mut rd) = tokio::fs::read_dir(&d).await else { continue };
            while let Ok(Some(e)) = rd.next_entry().await {
                let name = e.file_name();
                let is_dir = e.file_type().await.map(|t| t.is_dir()).unwrap_or(false);
                if is_dir && prefix == TREES && d == self.dir.join(prefix) {
                    dirs.push(e.path());
                    continue;
                }
                let id = name.to_str().filter(|n| n.len() == 64).and_then(|n| Id::from_hex(n).ok());
                if id.is_some_and(|id| keep(&id)) {
                    continue;
                }
                if tokio::fs::remove_file(e.path()).await.is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_remove_and_retain() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Id([7; 32]);
        let c = Cache::open(&tmp.path().join("shmpipe"), &repo).unwrap();
        assert!(tmp.path().join("shmpipe/CACHEDIR.TAG").exists());
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        c.put(&format!("index/{a}"), b"A").await;
        c.put(&format!("index/{b}"), b"B").await;
        c.put(&blob_key(&a), b"T").await;
        assert_eq!(c.get(&format!("index/{a}")).await.as_deref(), Some(&b"A"[..]));
        assert_eq!(c.retain("index", |id| *id == a).await, 1);
        assert!(c.get(&format!("index/{b}")).await.is_none());
        assert_eq!(c.retain(TREES, |_| true).await, 0);
        assert_eq!(c.get(&blob_key(&a)).await.as_deref(), Some(&b"T"[..]));
        assert_eq!(c.retain(TREES, |_| false).await, 1);
        c.remove(&format!("index/{a}")).await;
        assert!(c.get(&format!("index/{a}")).await.is_none());
    }
}
