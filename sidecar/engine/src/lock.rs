//! Repository locks: `locks/<random id>` objects, shared or exclusive, each naming its holder
//! (host, pid, purpose) and when it was last refreshed.
//!
//! The format is append-only — a backup only adds objects under fresh random names and never
//! rewrites or deletes one another writer could be using — so two backups cannot corrupt each
//! other and need no mutual exclusion. Locks exist for the operations that *delete* (prune,
//! forget, tag, key changes): they take an exclusive lock, backups take a shared one.
//!
//! Protocol (the restic scheme; locks need no create-if-absent): write our lock, then list
//! `locks/`; if a conflicting, live lock from someone else is there, delete ours and fail with
//! `Locked` (both racing parties may back off — never both proceed). A lock that cannot be
//! read or decrypted is an error (`Integrity`, naming it), never "absent": a damaged exclusive
//! lock must not let a backup run under a prune. A lock is *stale* when it was not refreshed
//! for [`STALE_AFTER`], or when it was taken on this host by a process that no longer exists.
//! Age is judged by the lock's own timestamp against our clock, so clocks must agree within
//! the margin below.
//!
//! A holder refreshes its lock every [`LockTiming::refresh_every`]. A refresh that fails is
//! retried; if none succeeded for [`LockTiming::give_up_after`] (well before the lock could be
//! judged stale by others), or the lock object was removed by someone else, the lock is *lost*:
//! [`RepoLock::check`] fails with `LockLost` from then on, and a backup holding it fails every
//! later call and never writes its snapshot (an exclusive operation may be deleting what it
//! references).
//!
//! A killed process leaves its lock behind: shared locks never block shared locks, so the next
//! backup proceeds at once; an exclusive operation waits for staleness, or for `unlock`
//! ([`Repository::unlock`]), which removes stale and unreadable locks (all with `remove_all`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shmpipe_store::StoreError;

use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::objects::{self, LOCKS};
use crate::repo::Repository;

/// A lock not refreshed for this long is stale (ignored by lockers, removed by `unlock`).
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A holder rewrites its lock this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// When a holder refreshes its lock and when it gives up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTiming {
    /// Rewrite the lock this often.
    pub refresh_every: Duration,
    /// After a failed refresh, try again this soon.
    pub retry_every: Duration,
    /// No successful refresh for this long: the lock is lost. Must stay below
    /// [`STALE_AFTER`] by more than the clock skew between hosts.
    pub give_up_after: Duration,
}

impl Default for LockTiming {
    /// Refresh every 5 min, retry every 30 s, give up after 20 min: 10 minutes before any
    /// other process could judge the lock stale (restic: 5 min / 30 min stale, gives up at
    /// 22.5 min).
    fn default() -> Self {
        Self { refresh_every: REFRESH_EVERY, retry_every: Duration::from_secs(30), give_up_after: STALE_AFTER - 2 * REFRESH_EVERY }
    }
}

/// Shared (backup, check) or exclusive (prune, tag, key changes).
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
    /// Holder's process id (on `host`).
    pub pid: u32,
    /// What it is doing.
    pub purpose: String,
    /// Last refresh, ns since the epoch.
    pub refreshed_ns: i64,
}

/// Why a lock is stale, or that it is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Staleness {
    /// Refreshed recently by a process that may exist.
    Live,
    /// Not refreshed for [`STALE_AFTER`].
    Expired,
    /// Taken on this host by a process that no longer exists.
    DeadProcess,
}

impl LockFile {
    /// Whether this lock is stale at `now_ns`, judged from this host.
    pub fn staleness(&self, now_ns: i64) -> Staleness {
        if self.age(now_ns) >= STALE_AFTER {
            Staleness::Expired
        } else if self.host == host_name() && !process_exists(self.pid) {
            Staleness::DeadProcess
        } else {
            Staleness::Live
        }
    }

    /// Time since the last refresh (zero if the lock is from the future).
    pub fn age(&self, now_ns: i64) -> Duration {
        Duration::from_nanos(now_ns.saturating_sub(self.refreshed_ns).max(0) as u64)
    }
}

/// Whether `pid` is a process on this host. Linux: `/proc/<pid>` exists. Without a readable
/// `/proc` the answer is "yes" (a live lock is never removed on a guess). A pid reused by an
/// unrelated process also reads as alive: the lock then expires by age.
fn process_exists(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    pid == std::process::id() || proc.join(pid.to_string()).exists()
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

/// A lock as `unlock` and `list locks` report it.
#[derive(Clone, Debug, Serialize)]
pub struct LockInfo {
    /// The lock object's id (hex).
    pub id: String,
    /// `None`: the object could not be read or decrypted.
    pub lock: Option<LockFile>,
    /// Why it could not be read.
    pub error: Option<String>,
    /// Seconds since its last refresh.
    pub age_s: Option<u64>,
    /// Live or why stale (`None` when unreadable).
    pub staleness: Option<Staleness>,
}

/// What [`Repository::unlock`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UnlockReport {
    /// Locks removed.
    pub removed: Vec<LockInfo>,
    /// Live locks left in place (`remove_all` not given).
    pub kept: Vec<LockInfo>,
}

/// Whether a held lock is still held; cheap to clone and to check (no IO). Shared between
/// the lock, its refresher and the lock's users. The lock counts as lost once its last
/// successful write is `give_up_after` old — by wall clock (what other hosts judge staleness
/// by) or monotonic time, whichever is larger, so a process that was suspended notices too —
/// or once a refresh found it removed. Lost is final: a late refresh does not make it held
/// again (someone may have taken it for stale meanwhile).
#[derive(Clone, Debug)]
pub struct LockHealth(Arc<HealthState>);

#[derive(Debug)]
struct HealthState {
    key: String,
    give_up_after: Duration,
    lost: tokio::sync::watch::Sender<Option<EngineError>>,
    /// Last successful write of the lock: wall clock (ns since the epoch) and monotonic.
    wall_ns: AtomicI64,
    mono: std::sync::Mutex<std::time::Instant>,
}

impl LockHealth {
    fn new(key: &str, give_up_after: Duration) -> Self {
        Self(Arc::new(HealthState {
            key: key.to_owned(),
            give_up_after,
            lost: tokio::sync::watch::Sender::new(None),
            wall_ns: AtomicI64::new(now_ns()),
            mono: std::sync::Mutex::new(std::time::Instant::now()),
        }))
    }

    /// Time since the last successful write of the lock.
    fn age(&self) -> Duration {
        let wall = Duration::from_nanos(now_ns().saturating_sub(self.0.wall_ns.load(Ordering::Acquire)).max(0) as u64);
        wall.max(self.0.mono.lock().expect("lock health").elapsed())
    }

    /// `LockLost` once the lock was lost (see the type's docs).
    pub fn check(&self) -> Result<()> {
        if let Some(e) = self.0.lost.borrow().as_ref() {
            return Err(e.clone());
        }
        let age = self.age();
        if age >= self.0.give_up_after {
            self.set(EngineError::LockLost { key: self.0.key.clone(), reason: format!("not refreshed for {}s", age.as_secs()) });
            return self.check();
        }
        Ok(())
    }

    /// Resolves with the `LockLost` error once the refresher declared the lock lost.
    pub async fn lost(&self) -> EngineError {
        let mut rx = self.0.lost.subscribe();
        let lost = rx.wait_for(Option::is_some).await.expect("the sender lives in self");
        lost.clone().expect("waited for Some")
    }

    /// A write of the lock succeeded (too late if the lock was already old enough to be lost).
    fn refreshed(&self) {
        if self.check().is_ok() {
            self.0.wall_ns.store(now_ns(), Ordering::Release);
            *self.0.mono.lock().expect("lock health") = std::time::Instant::now();
        }
    }

    fn set(&self, e: EngineError) {
        self.0.lost.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(e);
                true
            } else {
                false
            }
        });
    }
}

/// A held lock. Release it with [`RepoLock::release`]; dropping it releases it in the
/// background (best effort).
#[derive(Debug)]
pub struct RepoLock {
    repo: Repository,
    key: String,
    health: LockHealth,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl Repository {
    /// Takes a lock of `kind`, or fails with `Locked` naming the holder.
    pub async fn lock(&self, kind: LockKind, purpose: &str) -> Result<RepoLock> {
        self.lock_with(kind, purpose, LockTiming::default()).await
    }

    /// [`Repository::lock`] with explicit refresh timing.
    pub async fn lock_with(&self, kind: LockKind, purpose: &str, timing: LockTiming) -> Result<RepoLock> {
        let store = &self.inner.store;
        let aead = &self.inner.aead;
        let key = objects::lock_key(&Id::random());
        let mine = LockFile { kind, host: host_name(), pid: std::process::id(), purpose: purpose.into(), refreshed_ns: now_ns() };
        objects::put_object(store, aead, &key, &mine).await?;
        let mut held = RepoLock { repo: self.clone(), key: key.clone(), health: LockHealth::new(&key, timing.give_up_after), refresher: None };
        if let Err(e) = self.check_conflicts(kind, &key).await {
            held.release().await?;
            return Err(e);
        }
        held.refresher = Some(tokio::spawn(refresh_loop(self.clone(), key, mine, timing, held.health.clone())));
        Ok(held)
    }

    /// Fails with `Locked` if a live lock other than `mine` conflicts with `kind`, or with
    /// `Integrity` if a lock cannot be read.
    async fn check_conflicts(&self, kind: LockKind, mine: &str) -> Result<()> {
        let now = now_ns();
        for (other, _) in objects::list_keys(&self.inner.store, LOCKS).await? {
            if other == mine {
                continue;
            }
            let theirs = match objects::get_object::<LockFile>(&self.inner.store, &self.inner.aead, &other).await {
                Ok(l) => l,
                // Released between the listing and the read.
                Err(EngineError::NotFound { .. }) => continue,
                Err(e) if e.is_damage() => {
                    return Err(EngineError::integrity(
                        other,
                        format!("lock cannot be read ({e}); if no other process holds it, remove it with `shmpipe unlock`"),
                    ))
                }
                Err(e) => return Err(e),
            };
            if theirs.staleness(now) != Staleness::Live {
                continue;
            }
            if kind == LockKind::Exclusive || theirs.kind == LockKind::Exclusive {
                return Err(EngineError::Locked {
                    holder: format!(
                        "{:?} lock by {} pid {} ({}), refreshed {}s ago",
                        theirs.kind,
                        theirs.host,
                        theirs.pid,
                        theirs.purpose,
                        theirs.age(now).as_secs()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every lock in the repository, each read and judged (unreadable ones included).
    pub async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let now = now_ns();
        let mut out = Vec::new();
        for (key, _) in objects::list_keys(&self.inner.store, LOCKS).await? {
            let id = key.rsplit('/').next().unwrap_or(&key).to_owned();
            match objects::get_object::<LockFile>(&self.inner.store, &self.inner.aead, &key).await {
                Ok(l) => out.push(LockInfo {
                    id,
                    age_s: Some(l.age(now).as_secs()),
                    staleness: Some(l.staleness(now)),
                    lock: Some(l),
                    error: None,
                }),
                Err(EngineError::NotFound { .. }) => {}
                Err(e) if e.is_damage() => {
                    out.push(LockInfo { id, lock: None, error: Some(e.to_string()), age_s: None, staleness: None })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// `unlock`: removes stale locks and locks that cannot be read (restic removes those too:
    /// nobody can prove they are live, and they would block every locker); with `remove_all`,
    /// every lock. Live locks are kept and reported.
    pub async fn unlock(&self, remove_all: bool) -> Result<UnlockReport> {
        let mut report = UnlockReport::default();
        for info in self.list_locks().await? {
            if remove_all || info.staleness != Some(Staleness::Live) {
                self.inner.store.delete(&format!("{LOCKS}/{}", info.id)).await?;
                report.removed.push(info);
            } else {
                report.kept.push(info);
            }
        }
        Ok(report)
    }
}

/// Rewrites the lock every `refresh_every`; see the module docs for when it gives up.
async fn refresh_loop(repo: Repository, key: String, mut file: LockFile, timing: LockTiming, health: LockHealth) {
    let mut wait = timing.refresh_every;
    loop {
        tokio::time::sleep(wait).await;
        match refresh_once(&repo, &key, &mut file).await {
            Ok(()) => {
                health.refreshed();
                wait = timing.refresh_every;
            }
            Err(e @ EngineError::LockLost { .. }) => return health.set(e),
            Err(e) => {
                let since = health.age();
                if since >= timing.give_up_after {
                    tracing::error!(key = %key, error = %e, "lock refresh failed for too long: the lock is lost");
                    return health.set(EngineError::LockLost {
                        key,
                        reason: format!("not refreshed for {}s (last error: {e})", since.as_secs()),
                    });
                }
                tracing::warn!(key = %key, error = %e, "lock refresh failed; retrying");
                wait = timing.retry_every.min(timing.give_up_after - since);
            }
        }
        if health.check().is_err() {
            return;
        }
    }
}

async fn refresh_once(repo: &Repository, key: &str, file: &mut LockFile) -> Result<()> {
    // Removed by someone else (`unlock --remove-all`): do not put it back — whoever removed it
    // may be relying on its absence.
    match repo.inner.store.stat(key).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            return Err(EngineError::LockLost { key: key.to_owned(), reason: "the lock object was removed by another process".into() })
        }
        Err(e) => return Err(e.into()),
    }
    file.refreshed_ns = now_ns();
    objects::put_object(&repo.inner.store, &repo.inner.aead, key, file).await?;
    Ok(())
}

impl RepoLock {
    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `LockLost` once the lock can no longer be trusted to be held. Writers that rely on the
    /// lock (a backup before its snapshot, prune before each deletion) call this first.
    pub fn check(&self) -> Result<()> {
        self.health.check()
    }

    /// [`RepoLock::check`] (the name the prune branch uses).
    pub fn ensure_held(&self) -> Result<()> {
        self.check()
    }

    /// A handle to [`RepoLock::check`] that outlives borrows of the lock.
    pub fn health(&self) -> LockHealth {
        self.health.clone()
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
    async fn plant(repo: &Repository, kind: LockKind, host: &str, pid: u32, age: Duration) -> String {
        let key = objects::lock_key(&Id::random());
        let file = LockFile { kind, host: host.into(), pid, purpose: "test".into(), refreshed_ns: now_ns() - age.as_nanos() as i64 };
        objects::put_object(&repo.inner.store, &repo.inner.aead, &key, &file).await.unwrap();
        key
    }

    async fn lock_count(repo: &Repository) -> usize {
        repo.inner.store.list(LOCKS, None, 10).await.unwrap().entries.len()
    }

    /// A pid that exists on no host: beyond Linux's pid_max (2^22).
    const DEAD_PID: u32 = 4_194_304 + 17;

    #[tokio::test]
    async fn a_killed_backups_lock_blocks_only_exclusive_until_stale() {
        let repo = repo().await;
        // A backup on another host killed a minute ago left its shared lock.
        plant(&repo, LockKind::Shared, "elsewhere", 4242, Duration::from_secs(60)).await;
        let shared = repo.lock(LockKind::Shared, "backup").await.unwrap();
        shared.release().await.unwrap();
        let err = repo.lock(LockKind::Exclusive, "prune").await.unwrap_err();
        assert!(err.to_string().contains("elsewhere pid 4242"), "{err}");
        // Once stale, it is ignored.
        let repo2 = self::repo().await;
        plant(&repo2, LockKind::Exclusive, "elsewhere", 4242, STALE_AFTER + Duration::from_secs(1)).await;
        repo2.lock(LockKind::Exclusive, "prune").await.unwrap().release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lock_of_a_dead_process_on_this_host_is_stale_at_once() {
        let repo = repo().await;
        plant(&repo, LockKind::Exclusive, &host_name(), DEAD_PID, Duration::from_secs(1)).await;
        repo.lock(LockKind::Exclusive, "prune").await.unwrap().release().await.unwrap();
        // The same pid on another host says nothing about that host's processes.
        plant(&repo, LockKind::Exclusive, "elsewhere", DEAD_PID, Duration::from_secs(1)).await;
        assert_eq!(repo.lock(LockKind::Shared, "backup").await.unwrap_err().code(), "SHMPIPE_E_LOCKED");
    }

    #[tokio::test]
    async fn unlock_removes_stale_and_unreadable_locks_and_keeps_live_ones() {
        let repo = repo().await;
        let expired = plant(&repo, LockKind::Shared, "elsewhere", 1, STALE_AFTER + Duration::from_secs(5)).await;
        let dead = plant(&repo, LockKind::Exclusive, &host_name(), DEAD_PID, Duration::from_secs(5)).await;
        let live = plant(&repo, LockKind::Exclusive, "elsewhere", 7, Duration::from_secs(5)).await;
        let garbage = objects::lock_key(&Id::random());
        repo.inner.store.put(&garbage, [bytes::Bytes::from_static(b"not a sealed lock")]).await.unwrap();

        let r = repo.unlock(false).await.unwrap();
        let ids = |v: &[LockInfo]| v.iter().map(|l| format!("{LOCKS}/{}", l.id)).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(ids(&r.removed), [expired, dead, garbage].into_iter().collect());
        assert_eq!(ids(&r.kept), [live.clone()].into_iter().collect());
        assert_eq!(r.kept[0].staleness, Some(Staleness::Live));
        assert_eq!(lock_count(&repo).await, 1, "the live lock stays");
        let r = repo.unlock(true).await.unwrap();
        assert_eq!(ids(&r.removed), [live].into_iter().collect());
        assert_eq!(lock_count(&repo).await, 0);
    }

    #[tokio::test]
    async fn an_unreadable_lock_is_an_error_not_absent() {
        let repo = repo().await;
        let garbage = objects::lock_key(&Id::random());
        repo.inner.store.put(&garbage, [bytes::Bytes::from_static(b"not a sealed lock")]).await.unwrap();
        for kind in [LockKind::Shared, LockKind::Exclusive] {
            let err = repo.lock(kind, "x").await.unwrap_err();
            assert_eq!(err.code(), "SHMPIPE_E_INTEGRITY", "{err}");
            assert!(err.to_string().contains(&garbage), "names the lock: {err}");
        }
        assert_eq!(lock_count(&repo).await, 1, "the refused attempts left nothing");
    }

    #[tokio::test]
    async fn exclusive_excludes_everything_and_a_refused_attempt_leaves_nothing() {
        let repo = repo().await;
        let ex = repo.lock(LockKind::Exclusive, "prune").await.unwrap();
        for kind in [LockKind::Shared, LockKind::Exclusive] {
            let err = repo.lock(kind, "x").await.unwrap_err();
            assert_eq!(err.code(), "SHMPIPE_E_LOCKED");
        }
        assert_eq!(lock_count(&repo).await, 1);
        ex.release().await.unwrap();
        let a = repo.lock(LockKind::Shared, "a").await.unwrap();
        let b = repo.lock(LockKind::Shared, "b").await.unwrap();
        drop(a); // released in the background
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lock_not_refreshed_in_time_is_lost_for_good() {
        let repo = repo().await;
        let l = repo.lock(LockKind::Shared, "backup").await.unwrap();
        l.ensure_held().unwrap();
        // As if the process had been suspended for 21 minutes since the lock was written.
        let past = now_ns() - (LockTiming::default().give_up_after + Duration::from_secs(60)).as_nanos() as i64;
        l.health.0.wall_ns.store(past, Ordering::Release);
        assert_eq!(l.check().unwrap_err().code(), "SHMPIPE_E_LOCK_LOST");
        // A late refresh does not make it held again: someone may have pruned meanwhile.
        l.health.refreshed();
        assert_eq!(l.check().unwrap_err().code(), "SHMPIPE_E_LOCK_LOST");
        l.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lock_removed_by_someone_else_is_lost_at_the_next_refresh() {
        let repo = repo().await;
        let timing = LockTiming { refresh_every: Duration::from_millis(20), retry_every: Duration::from_millis(10), give_up_after: Duration::from_secs(60) };
        let held = repo.lock_with(LockKind::Shared, "backup", timing).await.unwrap();
        held.check().unwrap();
        repo.unlock(true).await.unwrap();
        let lost = tokio::time::timeout(Duration::from_secs(30), held.health().lost()).await.expect("lost within 30 s");
        assert_eq!(lost.code(), "SHMPIPE_E_LOCK_LOST", "{lost}");
        let err = held.check().unwrap_err();
        assert_eq!(err.code(), "SHMPIPE_E_LOCK_LOST", "{err}");
        assert_eq!(lock_count(&repo).await, 0, "a lost lock is not written back");
    }
}
