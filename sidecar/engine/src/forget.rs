//! `forget`: removes snapshots by retention policy (policy/) or by id, as restic's `forget`.
//! Only snapshot objects are deleted; the data they alone used stays until `prune`.
//! Deleting needs the exclusive lock (a backup choosing its parent must not see it vanish,
//! and prune's proof in REPOSITORY.md assumes deletions happen under it); the caller holds it
//! (the sidecar's job takes it, and keeps it for `--prune`).

use crate::error::{EngineError, Result};
use crate::id::SnapshotId;
use crate::objects;
use crate::policy::{self, Counters, ExpirePolicy, GroupBy, GroupKey, SnapshotFilter};
use crate::repo::Repository;
use crate::snapshot::SnapshotInfo;

/// What to forget.
#[derive(Clone, Debug, Default)]
pub struct ForgetRequest {
    /// Which snapshots the policy looks at.
    pub filter: SnapshotFilter,
    /// How they are grouped.
    pub group_by: GroupBy,
    /// The policy (ignored when `ids` are given).
    pub policy: ExpirePolicy,
    /// Snapshots to remove by id (then no policy may be given).
    pub ids: Vec<SnapshotId>,
    /// Decide and report only.
    pub dry_run: bool,
    /// "Now", ns since the epoch (a snapshot after it is not the newest for `--keep-within`).
    pub now_ns: i64,
}

/// Why one snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepReason {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// restic's reason strings.
    pub matches: Vec<String>,
    /// The policy's counters after it.
    pub counters: Counters,
}

/// One group's outcome (restic's `ForgetGroup`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgetGroup {
    /// The group.
    pub key: GroupKey,
    /// Kept, newest first.
    pub keep: Vec<SnapshotInfo>,
    /// Removed (or to remove, with `dry_run`), newest first.
    pub remove: Vec<SnapshotInfo>,
    /// One per kept snapshot, in `keep`'s order.
    pub reasons: Vec<KeepReason>,
}

impl Repository {
    /// Applies `req` (the caller holds the exclusive lock unless `dry_run`). With ids: one
    /// group (no key) whose `remove` are those snapshots. With an empty policy and no ids:
    /// nothing (restic: "no policy was specified, no snapshots will be removed").
    pub async fn forget_locked(&self, req: &ForgetRequest) -> Result<Vec<ForgetGroup>> {
        let all = self.list_snapshots().await?;
        let groups = if !req.ids.is_empty() {
            if !req.policy.is_empty() {
                return Err(EngineError::InvalidArgument { message: "give snapshot ids or a policy, not both".into() });
            }
            let mut remove = Vec::new();
            for id in &req.ids {
                let s = all.iter().find(|s| s.id == *id).ok_or_else(|| EngineError::NotFound { what: format!("snapshot {id}") })?;
                if !remove.contains(s) {
                    remove.push(s.clone());
                }
            }
            vec![ForgetGroup { key: GroupKey::default(), keep: Vec::new(), remove, reasons: Vec::new() }]
        } else if req.policy.is_empty() {
            Vec::new()
        } else {
            let chosen: Vec<SnapshotInfo> = all.into_iter().filter(|s| req.filter.matches(s)).collect();
            policy::group(&chosen, req.group_by)
                .into_iter()
                .map(|(key, members)| {
                    let snaps: Vec<SnapshotInfo> = members.iter().map(|&i| chosen[i].clone()).collect();
                    let v = policy::apply(&snaps, &req.policy, req.now_ns);
                    ForgetGroup {
                        key,
                        reasons: v
                            .keep
                            .iter()
                            .map(|k| KeepReason { snapshot: snaps[k.index].id, matches: k.matches.clone(), counters: k.counters })
                            .collect(),
                        keep: v.keep.iter().map(|k| snaps[k.index].clone()).collect(),
                        remove: v.remove.iter().map(|&i| snaps[i].clone()).collect(),
                    }
                })
                .collect()
        };
        if !req.dry_run {
            for g in &groups {
                for s in &g.remove {
                    self.inner.store.delete(&objects::snapshot_key(&s.id)).await?;
                }
            }
        }
        Ok(groups)
    }
}
