//! The `diff` job: the blob side of restic's `diff` summary — `{"from": HEX, "to": HEX}`, one
//! line: data blobs and metadata blobs (tree blobs and chunk lists: restic's "tree blobs") that
//! `to` uses and `from` does not (added) and the other way round (removed), and the plaintext
//! bytes of each side. The entry-by-entry comparison is the agent's (it reads both listings).

use serde::Deserialize;
use shmpipe_engine::BlobKind;

use super::browse_json::id_arg;
use super::{JobContext, JobFuture};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    from: String,
    to: String,
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let a: Args = ctx.args()?;
        let (from, to) = (id_arg("from", &a.from)?, id_arg("to", &a.to)?);
        ctx.repo.refresh_index().await?;
        let old = ctx.repo.snapshot_blobs(&ctx.repo.snapshot(&from).await?).await?;
        let new = ctx.repo.snapshot_blobs(&ctx.repo.snapshot(&to).await?).await?;
        let (mut data_added, mut data_removed, mut tree_added, mut tree_removed, mut bytes_added, mut bytes_removed) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for (id, b) in &new {
            if !old.contains_key(id) {
                if b.kind == BlobKind::Data { data_added += 1 } else { tree_added += 1 }
                bytes_added += u64::from(b.raw_len);
            }
        }
        for (id, b) in &old {
            if !new.contains_key(id) {
                if b.kind == BlobKind::Data { data_removed += 1 } else { tree_removed += 1 }
                bytes_removed += u64::from(b.raw_len);
            }
        }
        ctx.out
            .emit(&serde_json::json!({
                "data_blobs_added": data_added,
                "data_blobs_removed": data_removed,
                "tree_blobs_added": tree_added,
                "tree_blobs_removed": tree_removed,
                "bytes_added": bytes_added,
                "bytes_removed": bytes_removed,
            }))
            .await
    })
}
