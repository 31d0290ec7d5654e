//! The `unlock` job (restic's `unlock`): `{"remove_all"?: bool}` removes stale locks (not
//! refreshed for 30 minutes, or left by a process of this host that no longer exists) and locks
//! that cannot be read; with `remove_all`, every lock. Live locks are kept. One line:
//! `{"removed": [LOCK…], "kept": [LOCK…]}`, a LOCK being `{"id", "lock": {"kind", "host",
//! "pid", "purpose", "refreshed_ns"} | null, "error": text | null, "age_s", "staleness":
//! "live" | "expired" | "dead_process" | null}` (REPOSITORY.md §Locks).

use serde::Deserialize;

use super::{JobContext, JobFuture};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    remove_all: bool,
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let a: Args = ctx.args()?;
        let report = ctx.repo.unlock(a.remove_all).await?;
        ctx.out.emit(&report).await
    })
}
