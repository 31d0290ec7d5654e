//! shmpipe-engine: the backup engine the sidecar's backup ops sit on. It turns streams of file
//! bytes (slot leases, as `Bytes`) into a deduplicated, compressed, encrypted repository in
//! object storage (through `shmpipe-store`), and reads it back. The format is normative in
//! `REPOSITORY.md` next to this crate.
//!
//! Layers, bottom up: [`crypto`] (Argon2id, AES-256-GCM envelopes, keyed BLAKE3) →
//! [`chunker`] (streaming FastCDC) → [`blob`] (compress-or-not + seal) → [`pack`] (blobs in
//! pack files) → [`index`] (where each blob is) → [`snapshot`] (manifest and tree model) →
//! [`repo`] (config, keys, the opened repository) → [`backup`] / [`restore`] / [`check`] /
//! [`lock`] (the operations). [`objects`] is the key layout and sealed-object IO; [`cache`] the
//! local copies of metadata objects; [`error`] the one error enum with stable codes; [`limits`]
//! the bounds every reader applies to repository data before using it.
//!
//! ```text
//! let repo = Repository::init(store, password, RepoParams::recommended()).await?;   // or ::open
//! let session = repo.begin_backup(BackupOptions { parent, paths, .. }).await?;
//! let mut w = session.file_writer()?;  w.write(bytes).await?; …  let content = w.finish().await?;
//! session.add_entry(TreeEntry { path, kind, mode, …, content: Some(content) }, Change::New).await?;
//! let summary = session.commit().await?;                       // or abort(), or drop = crash
//! repo.list_snapshots().await?;  repo.entries_of(&id).await?.next().await?;
//! repo.open_content(&content).next_chunk().await?;             // verified plaintext, in order
//! repo.check(CheckOptions { read_data: true }).await?;         // CheckReport
//! ```

pub mod backup;
pub mod blob;
pub mod browse;
pub mod bufpool;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod id;
pub mod index;
pub mod keys;
pub mod limits;
pub mod lock;
pub mod objects;
pub mod policy;
pub mod pool;
pub mod pack;
pub mod packread;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod snapshot;
pub mod subset;

pub use backup::{BackupOptions, BackupSession, Change, FileWriter, SnapshotSummary};
pub use blob::{BlobKind, Compression};
pub use browse::UsedBlob;
pub use check::{AffectedFile, CheckIssue, CheckOptions, CheckReport};
pub use chunker::ChunkerParams;
pub use crypto::KdfParams;
pub use error::{EngineError, Result};
pub use forget::{ForgetGroup, ForgetRequest, KeepReason};
pub use id::{BlobId, Id, PackId, SnapshotId};
pub use keys::KeyInfo;
pub use lock::{LockHealth, LockInfo, LockKind, LockTiming, RepoLock, Staleness, UnlockReport};
pub use repair::{RepairIndexReport, RepairedSnapshot};
pub use repo::{OpenOptions, RepoParams, Repository, Settings};
pub use restore::{ContentReader, EntryReader, ParentFile};
pub use prune::{MaxUnused, PruneOptions, PruneReport, PruneStats};
pub use subset::PackSubset;
pub use snapshot::{ChunkRef, ContentRef, EntryKind, SnapshotCounts, SnapshotFile, SnapshotInfo, TreeEntry};

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    /// The sidecar moves these across tasks and threads.
    #[test]
    fn handles_are_send_and_sync() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<super::Repository>();
        sync::<super::Repository>();
        send::<super::BackupSession>();
        sync::<super::BackupSession>();
        send::<super::FileWriter>();
        send::<super::ContentReader>();
        send::<super::EntryReader>();
        send::<super::EngineError>();
        sync::<super::EngineError>();
    }
}
