//! The `snapshots` job: every snapshot of the repository as one line each, oldest first, with the
//! fields of the SNAPSHOTS op. Unlike SNAPSHOTS, whose document must fit one slot, a job's
//! output is paged, so it serves repositories of any number of snapshots.

use serde::Deserialize;

use super::{JobContext, JobFuture};
use shmpipe_engine::SnapshotInfo;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {}

/// A snapshot as SNAPSHOTS lists it and this job emits it (SPEC §7.3).
pub fn snapshot_json(s: &SnapshotInfo) -> serde_json::Value {
    let f = &s.file;
    serde_json::json!({
        "id": s.id.to_hex(),
        "time_ns": f.time_ns.to_string(),
        "host": f.host,
        "tags": f.tags,
        "paths": f.paths,
        "parent": f.parent.map(|p| p.to_hex()),
        "entries": f.entries,
        "counts": f.counts,
        "duration_ms": f.duration_ms,
    })
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let Args {} = ctx.args()?;
        ctx.repo.refresh_index().await?;
        for s in ctx.repo.list_snapshots().await? {
            ctx.out.emit(&snapshot_json(&s)).await?;
        }
        Ok(())
    })
}
