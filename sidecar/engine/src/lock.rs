//! Repository locks: `locks/<random id>` objects, shared or exclusive.
//!
//! The format is append-only — a backup only adds objects under fresh random names and never
//! rewrites or deletes one another writer could be using — so two backups cannot corrupt each
//! other and need no mutual exclusion. Locks exist for the operations that *delete* (prune,
//! forget: not implemented yet): they take an exclusive lock, backups take a shared one.
//!
//! Protocol (the store has no create-if-absent, so this is the restic scheme): write our lock,
//! then list `locks/`; if a conflicting, non-stale lock from someone else is there, delete ours
//! and fail with `Locked` (both racing parties may back off — never both proceed). Stale: not
//! refreshed for [`STALE_AFTER`] (a holder refreshes every [`REFRESH_EVERY`]); judged by the
//! lock's own timestamp against our clock, so clocks must agree within minutes.
//! A killed process leaves its lock behind: shared locks never block shared locks, so the next
//! backup proceeds at once; an exclusive operation waits for staleness (or a forced unlock).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::objects::{self, LOCKS};
use crate::repo::Repository;

/// A lock not refreshed for this long is ignored.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A holder rewrites its lock this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// Shared (backup, check) or exclusive (prune).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Any number at once; excludes exclusive.
    Shared,
    /// Alone.
    Exclusive,
}

/// A lock object's content (sealed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockFile {
    /// Kind.
    pub kind: LockKind,
    /// Holder's host name.
    pub host: String,
    /// Holder's process id.
    pub pid: u32,
    /// What it is doing.
    pub purpose: String,
    /// Last refresh, ns since the epoch.
    pub refreshed_ns: i64,
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

/// A held lock counts as possibly lost once its last successful refresh is this close to
/// [`STALE_AFTER`]: the slack for clock skew between hosts and for the write that follows a
/// [`RepoLock::ensure_held`] (REPOSITORY.md §Prune).
pub const HELD_MARGIN: Duration = Duration::from_secs(5 * 60);

/// When a held lock was last written successfully, as its holder saw it.
#[derive(Debug)]
struct Health {
    wall_ns: std::sync::atomic::AtomicI64,
    mono: std::sync::Mutex<std::time::Instant>,
    /// Set for good once two successful writes were too far apart: others may have taken the
    /// lock for stale in between.
    lost: std::sync::atomic::AtomicBool,
}

impl Health {
    fn new() -> Self {
        Self {
            wall_ns: std::sync::atomic::AtomicI64::new(now_ns()),
            mono: std::sync::Mutex::new(std::time::Instant::now()),
            lost: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Time since the last successful write: the larger of wall-clock (what other hosts judge
    /// staleness by) and monotonic time.
    fn age(&self) -> Duration {
        let wall = Duration::from_nanos(now_ns().saturating_sub(self.wall_ns.load(std::sync::atomic::Ordering::Acquire)).max(0) as u64);
        wall.max(self.mono.lock().expect("lock health").elapsed())
    }

    fn refreshed(&self) {
        if self.age() >= STALE_AFTER - HELD_MARGIN {
            self.lost.store(true, std::sync::atomic::Ordering::Release);
        }
        self.wall_ns.store(now_ns(), std::sync::atomic::Ordering::Release);
        *self.mono.lock().expect("lock health") = std::time::Instant::now();
    }
}

/// A held lock. Release it with [`RepoLock::release`]; dropping it releases it in the
/// background (best effort).
#[derive(Debug)]
pub struct RepoLock {
    repo: Repository,
    key: String,
    refresher: Option<tokio::task::JoinHandle<()>>,
    health: std::sync::Arc<Health>,
}

impl Repository {
    /// Takes a lock of `kind`, or fails with `Locked` naming the holder.
    pub async fn lock(&self, kind: LockKind, purpose: &str) -> Result<RepoLock> {
        let store = &self.inner.store;
        let aead = &self.inner.aead;
        let key = objects::lock_key(&Id::random());
        let mine = LockFile { kind, host: host_name(), pid: std::process::id(), purpose: purpose.into(), refreshed_ns: now_ns() };
        objects::put_object(store, aead, &key, &mine).await?;
        let health = std::sync::Arc::new(Health::new());
        let mut held = RepoLock { repo: self.clone(), key: key.clone(), refresher: None, health: health.clone() };
        let now = now_ns();
        for (other, _) in objects::list_keys(store, LOCKS).await? {
            if other == key {
                continue;
            }
            // A lock that vanished or cannot be read is not held by anyone we can see.
            let Ok(theirs) = objects::get_object::<LockFile>(store, aead, &other).await else { continue };
            let age = Duration::from_nanos(now.saturating_sub(theirs.refreshed_ns).max(0) as u64);
            if age >= STALE_AFTER {
                continue;
            }
            if kind == LockKind::Exclusive || theirs.kind == LockKind::Exclusive {
                held.release().await?;
                return Err(EngineError::Locked {
                    holder: format!(
                        "{:?} lock by {} pid {} ({}), refreshed {}s ago",
                        theirs.kind, theirs.host, theirs.pid, theirs.purpose, age.as_secs()
                    ),
                });
            }
        }
        let repo = self.clone();
        let refresh_key = key.clone();
        let refresher = tokio::spawn(async move {
            let mut file = mine;
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                file.refreshed_ns = now_ns();
                match objects::put_object(&repo.inner.store, &repo.inner.aead, &refresh_key, &file).await {
                    Ok(_) => health.refreshed(),
                    Err(e) => tracing::warn!(key = %refresh_key, error = %e, "lock refresh failed"),
                }
            }
        });
        held.refresher = Some(refresher);
        Ok(held)
    }

    /// Deletes every lock (all kinds, all holders) not refreshed for `older_than`: the
    /// operator's way out after a crash. Returns how many were removed.
    pub async fn remove_stale_locks(&self, older_than: Duration) -> Result<usize> {
        let store = &self.inner.store;
        let now = now_ns();
        let mut n = 0;
        for (key, _) in objects::list_keys(store, LOCKS).await? {
            let stale = match objects::get_object::<LockFile>(store, &self.inner.aead, &key).await {
                Ok(l) => now.saturating_sub(l.refreshed_ns) >= older_than.as_nanos() as i64,
                Err(_) => true,
            };
            if stale {
                store.delete(&key).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl RepoLock {
    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Fails with `Locked` unless the lock has been continuously fresh — every refresh came
    /// within `STALE_AFTER - HELD_MARGIN` of the previous one, and the last one is that
    /// recent now — so no other party can have taken it for stale. Writers that rely on the
    /// lock (a backup before its snapshot, prune before each deletion) call this first.
    pub fn ensure_held(&self) -> Result<()> {
        let age = self.health.age();
        if self.health.lost.load(std::sync::atomic::Ordering::Acquire) || age >= STALE_AFTER - HELD_MARGIN {
            return Err(EngineError::Locked {
                holder: format!(
                    "our own lock {} was not refreshed in time (last refresh {}s ago); another process may have taken it for stale, so this operation stops before writing",
                    self.key,
                    age.as_secs()
                ),
            });
        }
        Ok(())
    }

    /// Deletes the lock object.
    pub async fn release(mut self) -> Result<()> {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        let key = std::mem::take(&mut self.key);
        self.repo.inner.store.delete(&key).await?;
        Ok(())
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        if self.key.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.repo.inner.store.clone();
            let key = std::mem::take(&mut self.key);
            rt.spawn(async move {
                if let Err(e) = store.delete(&key).await {
                    tracing::warn!(key = %key, error = %e, "releasing a dropped lock failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::RepoParams;
    use shmpipe_store::{Store, StoreConfig, StoreOptions};

    async fn repo() -> Repository {
        let store = Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap();
        Repository::init(store, b"pw", RepoParams::insecure_for_tests()).await.unwrap()
    }

    /// Plants a lock as another process would have left it, refreshed `age` ago.
    async fn plant(repo: &Repository, kind: LockKind, age: Duration) -> String {
        let key = objects::lock_key(&Id::random());
        let file = LockFile {
            kind,
            host: "elsewhere".into(),
            pid: 4242,
            purpose: "test".into(),
            refreshed_ns: now_ns() - age.as_nanos() as i64,
        };
        objects::put_object(&repo.inner.store, &repo.inner.aead, &key, &file).await.unwrap();
        key
    }

    #[tokio::test]
    async fn a_killed_backups_lock_blocks_only_exclusive_until_stale() {
        let repo = repo().await;
        // A backup killed a minute ago left its shared lock.
        plant(&repo, LockKind::Shared, Duration::from_secs(60)).await;
        let shared = repo.lock(LockKind::Shared, "backup").await.unwrap();
        shared.release().await.unwrap();
        let err = repo.lock(LockKind::Exclusive, "prune").await.unwrap_err();
        assert!(err.to_string().contains("elsewhere pid 4242"), "{err}");
        // Once stale, it is ignored; and it can be cleared.
        let repo2 = self::repo().await;
        plant(&repo2, LockKind::Exclusive, STALE_AFTER + Duration::from_secs(1)).await;
        repo2.lock(LockKind::Exclusive, "prune").await.unwrap().release().await.unwrap();
        assert_eq!(repo2.remove_stale_locks(STALE_AFTER).await.unwrap(), 1);
        assert!(repo2.inner.store.list(LOCKS, None, 10).await.unwrap().entries.is_empty());
    }

    #[tokio::test]
    async fn a_lock_not_refreshed_in_time_is_no_longer_held() {
        let repo = repo().await;
        let l = repo.lock(LockKind::Shared, "backup").await.unwrap();
        l.ensure_held().unwrap();
        // As if the process had been stopped for 26 minutes since the lock was written.
        let past = now_ns() - (STALE_AFTER - HELD_MARGIN + Duration::from_secs(60)).as_nanos() as i64;
        l.health.wall_ns.store(past, std::sync::atomic::Ordering::Release);
        assert_eq!(l.ensure_held().unwrap_err().code(), "SHMPIPE_E_LOCKED");
        // A late refresh does not make it held again: someone may have pruned meanwhile.
        l.health.refreshed();
        assert!(l.health.age() < Duration::from_secs(60));
        assert_eq!(l.ensure_held().unwrap_err().code(), "SHMPIPE_E_LOCKED");
        l.release().await.unwrap();
    }

    #[tokio::test]
    async fn exclusive_excludes_everything_and_a_refused_attempt_leaves_nothing() {
        let repo = repo().await;
        let ex = repo.lock(LockKind::Exclusive, "prune").await.unwrap();
        for kind in [LockKind::Shared, LockKind::Exclusive] {
            let err = repo.lock(kind, "x").await.unwrap_err();
            assert_eq!(err.code(), "SHMPIPE_E_LOCKED");
        }
        assert_eq!(repo.inner.store.list(LOCKS, None, 10).await.unwrap().entries.len(), 1);
        ex.release().await.unwrap();
        let a = repo.lock(LockKind::Shared, "a").await.unwrap();
        let b = repo.lock(LockKind::Shared, "b").await.unwrap();
        drop(a); // released in the background
        b.release().await.unwrap();
    }
}
