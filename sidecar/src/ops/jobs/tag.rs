//! The `tag` job: changes snapshots' tags as restic's `tag` does — `{"snapshots": [HEX…],
//! "set": [TAG…] | null, "add": [TAG…], "remove": [TAG…]}` (set first, then add, then remove).
//! A changed snapshot is written under a new id and the old object deleted
//! (`Repository::rewrite_snapshot`), under an exclusive lock: it deletes, like forget. One line
//! per snapshot: `{"old": HEX, "new": HEX, "changed": bool, "tags": [...]}`.

use serde::Deserialize;
use shmpipe_engine::LockKind;

use super::browse_json::id_arg;
use super::{JobContext, JobFuture};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    snapshots: Vec<String>,
    #[serde(default)]
    set: Option<Vec<String>>,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let a: Args = ctx.args()?;
        let ids = a.snapshots.iter().map(|s| id_arg("snapshots", s)).collect::<Result<Vec<_>, _>>()?;
        let lock = ctx.repo.lock(LockKind::Exclusive, "tag").await?;
        let result = async {
            for old in ids {
                let mut file = ctx.repo.snapshot(&old).await?;
                let mut tags = a.set.clone().unwrap_or_else(|| file.tags.clone());
                for t in &a.add {
                    if !tags.contains(t) {
                        tags.push(t.clone());
                    }
                }
                tags.retain(|t| !a.remove.contains(t));
                let changed = tags != file.tags;
                let new = if changed {
                    file.tags = tags.clone();
                    ctx.repo.rewrite_snapshot(&old, &file).await?
                } else {
                    old
                };
                ctx.out.emit(&serde_json::json!({ "old": old.to_hex(), "new": new.to_hex(), "changed": changed, "tags": tags })).await?;
            }
            Ok(())
        }
        .await;
        lock.release().await?;
        result
    })
}
