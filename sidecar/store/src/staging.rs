//! Staging leftovers: file:// writes every object as a hidden `KEY#N` staging file and renames
//! it into place on completion (object_store's LocalFileSystem); a process killed in between
//! leaves the staging file, invisible to LIST and GET, forever. [`Store::remove_staging`]
//! finds and deletes them under a prefix — for a caller that knows no writer is running there
//! (the repository's prune, under its exclusive lock). S3 keeps the equivalent (incomplete
//! multipart uploads) out of sight too; a bucket lifecycle rule removes those, and a single
//! PUT leaves nothing.

use std::path::Path as FsPath;
use std::time::{Duration, SystemTime};

use object_store::path::Path;

use crate::error::StoreError;
use crate::store::Store;

/// Whether a file name is a staging file's: `NAME#DIGITS`.
fn is_staging(name: &str) -> bool {
    matches!(name.rsplit_once('#'), Some((base, n)) if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn walk(dir: &FsPath, older_than: Duration, removed: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, older_than, removed)?;
        } else if kind.is_file() && entry.file_name().to_str().is_some_and(is_staging) {
            let age = entry.metadata()?.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
            if age >= older_than {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed.push(path.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// Deletes staging files under `prefix` not modified for `older_than` (file:// only; other
    /// backends have none to find). Returns their paths.
    pub async fn remove_staging(&self, prefix: &str, older_than: Duration) -> Result<Vec<String>, StoreError> {
        let Some(local) = self.inner.backend.local.clone() else { return Ok(Vec::new()) };
        let dir = local
            .path_to_filesystem(&Path::from(prefix))
            .map_err(|e| StoreError::from_object_store(e, prefix))?;
        let what = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            walk(&dir, older_than, &mut removed).map(|()| removed)
        })
        .await
        .map_err(|e| StoreError::Store { message: format!("staging cleanup: {e}"), transient: false })?
        .map_err(|e| StoreError::Store { message: format!("staging cleanup under {what}: {e}"), transient: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StoreConfig, StoreOptions};

    #[test]
    fn staging_names() {
        assert!(is_staging("abc#1") && is_staging("a#b#22"));
        assert!(!is_staging("abc") && !is_staging("abc#") && !is_staging("#1") && !is_staging("abc#1x"));
    }

    #[tokio::test]
    async fn finds_and_removes_only_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&StoreConfig::new(&url, StoreOptions::default()).unwrap()).unwrap();
        store.put("packs/ab/real", [bytes::Bytes::from_static(b"x")]).await.unwrap();
        std::fs::write(dir.path().join("packs/ab/real#7"), b"partial").unwrap();
        std::fs::create_dir_all(dir.path().join("packs/cd")).unwrap();
        std::fs::write(dir.path().join("packs/cd/other#1"), b"partial").unwrap();
        std::fs::write(dir.path().join("keep#1"), b"outside the prefix").unwrap();
        // Too young: kept.
        assert!(store.remove_staging("packs", Duration::from_secs(3600)).await.unwrap().is_empty());
        let removed = store.remove_staging("packs", Duration::ZERO).await.unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!dir.path().join("packs/ab/real#7").exists() && !dir.path().join("packs/cd/other#1").exists());
        assert!(dir.path().join("keep#1").exists());
        assert_eq!(store.list("packs", None, 10).await.unwrap().entries.len(), 1);
        assert!(store.remove_staging("nothing-here", Duration::ZERO).await.unwrap().is_empty());
    }
}
