//! The `repair` job (restic's `repair index` / `repair snapshots`), under an exclusive lock:
//! `{"what": "index"}` rebuilds the index from the pack headers and replaces every index object
//! (one line: `{"packs", "blobs", "packs_added", "index_written", "index_removed",
//! "index_unreadable": [..], "packs_unreadable": [..]}`); `{"what": "snapshots", "forget"?:
//! bool, "dry_run"?: bool}` rewrites snapshots whose data is lost, dropping the lost entries and
//! tagging the copy `repaired` (one line per affected snapshot: `{"snapshot", "new", "unreadable",
//! "dropped": [path..], "lost_tree_blobs", "removed"}`). REPOSITORY.md §Repair.

use serde::Deserialize;

use super::{JobContext, JobFuture};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "what", rename_all = "lowercase")]
enum Args {
    Index,
    Snapshots {
        #[serde(default)]
        forget: bool,
        #[serde(default)]
        dry_run: bool,
    },
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        match ctx.args()? {
            Args::Index => {
                let report = ctx.repo.repair_index().await?;
                ctx.out.emit(&report).await?;
            }
            Args::Snapshots { forget, dry_run } => {
                for s in ctx.repo.repair_snapshots(forget, dry_run).await? {
                    ctx.out.emit(&s).await?;
                }
            }
        }
        Ok(())
    })
}
