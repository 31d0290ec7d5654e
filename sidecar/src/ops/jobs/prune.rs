//! The `prune` job: `{"dry_run": bool, "max_unused": "5%" | "200M" | "unlimited",
//! "max_repack_size": "2G" | null}` runs `Repository::prune` (exclusive lock; shared with
//! `dry_run`) and emits one line, restic's prune statistics
//! (`{"message_type":"summary","blobs":…,"bytes":…,"packfiles":…}`) plus what was done.

use serde::Deserialize;
use shmpipe_engine::prune::{parse_size, MaxUnused, PruneOptions, PruneReport};

use super::{JobContext, JobFuture};
use crate::ops::error::{OpError, OpResult, CODE_MALFORMED};

/// Prune's arguments, shared with `forget` (`--prune`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PruneArgs {
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub max_unused: Option<String>,
    #[serde(default)]
    pub max_repack_size: Option<String>,
}

impl PruneArgs {
    pub fn options(&self) -> OpResult<PruneOptions> {
        let malformed = |e: shmpipe_engine::EngineError| OpError { code: CODE_MALFORMED, message: e.to_string() };
        Ok(PruneOptions {
            dry_run: self.dry_run,
            max_unused: self.max_unused.as_deref().map(MaxUnused::parse).transpose().map_err(malformed)?.unwrap_or_default(),
            max_repack_bytes: self.max_repack_size.as_deref().map(parse_size).transpose().map_err(malformed)?,
        })
    }
}

/// The summary line.
pub fn report_json(r: &PruneReport) -> serde_json::Value {
    serde_json::json!({
        "message_type": "summary",
        "dry_run": r.dry_run,
        "blobs": r.stats.blobs,
        "bytes": r.stats.bytes,
        "packfiles": r.stats.packfiles,
        "snapshots": r.snapshots,
        "packs_written": r.packs_written,
        "packs_deleted": r.packs_deleted,
        "staging_deleted": r.staging_deleted,
        "index_written": r.index_written,
        "index_deleted": r.index_deleted,
        "marking_bytes": r.marking_bytes,
    })
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let a: PruneArgs = ctx.args()?;
        let opts = a.options()?;
        let report = ctx.repo.prune(&opts).await?;
        ctx.out.emit(&report_json(&report)).await?;
        Ok(())
    })
}
