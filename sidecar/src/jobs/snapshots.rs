//! The `snapshots` job: every snapshot of the repository as one line each, oldest first, with the
//! fields of the SNAPSHOTS op. Unlike SNAPSHOTS, whose document must fit one slot, a job's
//! output is paged, so it serves repositories of any number of snapshots.

use serde::Deserialize;

use super::{JobContext, JobFuture};
use crate::backup_ops::snapshot_json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {}

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
