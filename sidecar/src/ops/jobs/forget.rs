//! The `forget` job: restic's `forget` — `{"hosts": [..], "tags": [[..]], "paths": [..],
//! "group_by": "host,paths", "keep_last": N, "keep_hourly": N, "keep_daily": N, "keep_weekly":
//! N, "keep_monthly": N, "keep_yearly": N (-1 = unlimited), "keep_within": "1y2m",
//! "keep_within_hourly" … "keep_within_yearly", "keep_tags": [[..]], "snapshots": [HEX…],
//! "dry_run": bool, "prune": bool, "max_unused": "5%", "max_repack_size": "2G"}`.
//! One line per group: `{"group_key": {"hostname","paths","tags"}, "keep": [snapshot…],
//! "remove": [snapshot…], "reasons": [{"snapshot": HEX, "matches": [..], "counters": {..}}]}`
//! (snapshots as the `snapshots` job lists them); with `prune`, then prune's summary line.
//! The exclusive lock (shared for `dry_run`) is held from the policy to the end of prune.

use serde::Deserialize;
use shmpipe_engine::policy::{ExpirePolicy, GroupBy, KeepDuration, SnapshotFilter};
use shmpipe_engine::{ForgetRequest, LockKind};

use super::browse_json::id_arg;
use super::prune::{report_json, PruneArgs};
use super::snapshots::snapshot_json;
use super::{JobContext, JobFuture};
use crate::ops::error::{OpError, OpResult, CODE_MALFORMED};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    tags: Vec<Vec<String>>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    keep_last: i64,
    #[serde(default)]
    keep_hourly: i64,
    #[serde(default)]
    keep_daily: i64,
    #[serde(default)]
    keep_weekly: i64,
    #[serde(default)]
    keep_monthly: i64,
    #[serde(default)]
    keep_yearly: i64,
    #[serde(default)]
    keep_within: Option<String>,
    #[serde(default)]
    keep_within_hourly: Option<String>,
    #[serde(default)]
    keep_within_daily: Option<String>,
    #[serde(default)]
    keep_within_weekly: Option<String>,
    #[serde(default)]
    keep_within_monthly: Option<String>,
    #[serde(default)]
    keep_within_yearly: Option<String>,
    #[serde(default)]
    keep_tags: Vec<Vec<String>>,
    #[serde(default)]
    snapshots: Vec<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    max_unused: Option<String>,
    #[serde(default)]
    max_repack_size: Option<String>,
}

fn malformed(e: shmpipe_engine::EngineError) -> OpError {
    OpError { code: CODE_MALFORMED, message: format!("job arguments: {e}") }
}

fn duration(text: &Option<String>) -> OpResult<KeepDuration> {
    text.as_deref().map(KeepDuration::parse).transpose().map_err(malformed).map(Option::unwrap_or_default)
}

impl Args {
    fn policy(&self) -> OpResult<ExpirePolicy> {
        for (name, n) in [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ] {
            if n < -1 {
                return Err(OpError { code: CODE_MALFORMED, message: format!("job arguments: {name} must be ≥ 0 or -1 (unlimited), got {n}") });
            }
        }
        Ok(ExpirePolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: duration(&self.keep_within)?,
            within_hourly: duration(&self.keep_within_hourly)?,
            within_daily: duration(&self.keep_within_daily)?,
            within_weekly: duration(&self.keep_within_weekly)?,
            within_monthly: duration(&self.keep_within_monthly)?,
            within_yearly: duration(&self.keep_within_yearly)?,
            keep_tags: self.keep_tags.clone(),
        })
    }
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let a: Args = ctx.args()?;
        let prune_args = PruneArgs { dry_run: a.dry_run, max_unused: a.max_unused.clone(), max_repack_size: a.max_repack_size.clone() };
        let prune_opts = prune_args.options()?;
        let req = ForgetRequest {
            filter: SnapshotFilter { hosts: a.hosts.clone(), tags: a.tags.clone(), paths: a.paths.clone() },
            group_by: a.group_by.as_deref().map(GroupBy::parse).transpose().map_err(malformed)?.unwrap_or_default(),
            policy: a.policy()?,
            ids: a.snapshots.iter().map(|s| id_arg("snapshots", s)).collect::<OpResult<_>>()?,
            dry_run: a.dry_run,
            now_ns: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64),
        };
        let kind = if a.dry_run { LockKind::Shared } else { LockKind::Exclusive };
        let lock = ctx.repo.lock(kind, "forget").await?;
        let result = async {
            for g in ctx.repo.forget_locked(&req).await? {
                let line = serde_json::json!({
                    "group_key": g.key,
                    "keep": g.keep.iter().map(snapshot_json).collect::<Vec<_>>(),
                    "remove": g.remove.iter().map(snapshot_json).collect::<Vec<_>>(),
                    "reasons": g.reasons.iter().map(|r| serde_json::json!({
                        "snapshot": r.snapshot.to_hex(),
                        "matches": r.matches,
                        "counters": r.counters,
                    })).collect::<Vec<_>>(),
                });
                ctx.out.emit(&line).await?;
            }
            if a.prune {
                let report = ctx.repo.prune_locked(&prune_opts, &lock).await?;
                ctx.out.emit(&report_json(&report)).await?;
            }
            Ok(())
        }
        .await;
        lock.release().await?;
        result
    })
}
