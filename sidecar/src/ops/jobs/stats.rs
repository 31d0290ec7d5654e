//! The `stats` job: restic's `stats` counting modes over snapshots — `{"snapshots": [HEX…],
//! "mode": M}`, one line with `total_size`, `total_file_count`, `total_blob_count`,
//! `total_uncompressed_size`, `compression_ratio` (where the mode has them) and
//! `snapshots_count`:
//! - `restore-size`: what a restore writes: every entry counted, file sizes summed (a file
//!   seen again under the same device and inode in one snapshot, a hard link, once);
//! - `files-by-contents`: files unique by content, their sizes summed;
//! - `raw-data`: the distinct blobs the snapshots use (data, trees, chunk lists): stored
//!   bytes, plaintext bytes, their ratio;
//! - `blobs-per-file`: for files unique by content, the plaintext of each distinct chunk per
//!   file path.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use shmpipe_engine::{EntryKind, UsedBlob};

use super::browse_json::id_arg;
use super::{JobContext, JobFuture};
use crate::ops::error::{OpError, CODE_MALFORMED};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    snapshots: Vec<String>,
    mode: String,
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let a: Args = ctx.args()?;
        let ids = a.snapshots.iter().map(|s| id_arg("snapshots", s)).collect::<Result<Vec<_>, _>>()?;
        let repo = &ctx.repo;
        repo.refresh_index().await?;
        let (mut size, mut files, mut blob_count) = (0u64, 0u64, 0u64);
        let mut by_content: HashSet<Vec<u8>> = HashSet::new();
        let mut per_path: HashMap<String, HashSet<shmpipe_engine::Id>> = HashMap::new();
        let mut blobs: HashMap<shmpipe_engine::Id, UsedBlob> = HashMap::new();
        match a.mode.as_str() {
            "restore-size" | "files-by-contents" | "raw-data" | "blobs-per-file" => {}
            m => return Err(OpError { code: CODE_MALFORMED, message: format!("job arguments: stats mode must be restore-size, files-by-contents, raw-data or blobs-per-file, not {m:?}") }),
        }
        for id in &ids {
            let file = repo.snapshot(id).await?;
            if a.mode == "raw-data" {
                blobs.extend(repo.snapshot_blobs(&file).await?);
                continue;
            }
            let mut links: HashSet<(u64, u64)> = HashSet::new();
            let mut entries = repo.entries(&file);
            while let Some(e) = entries.next().await? {
                match a.mode.as_str() {
                    "restore-size" => {
                        files += 1;
                        if e.kind == EntryKind::File && (e.inode == 0 || links.insert((e.dev, e.inode))) {
                            size += e.size;
                        }
                    }
                    _ => {
                        let Some(content) = &e.content else { continue };
                        if !by_content.insert(content.encode()) {
                            continue;
                        }
                        if a.mode == "files-by-contents" {
                            files += 1;
                            size += e.size;
                            continue;
                        }
                        let seen = per_path.entry(e.path.clone()).or_insert_with(|| {
                            files += 1;
                            HashSet::new()
                        });
                        for c in repo.content_chunks(content).await? {
                            if seen.insert(c.id) {
                                size += u64::from(c.len);
                                blob_count += 1;
                            }
                        }
                    }
                }
            }
        }
        let mut doc = serde_json::json!({ "snapshots_count": ids.len(), "total_size": size });
        let o = doc.as_object_mut().expect("an object");
        match a.mode.as_str() {
            "raw-data" => {
                let stored: u64 = blobs.values().map(|b| u64::from(b.stored_len)).sum();
                let plain: u64 = blobs.values().map(|b| u64::from(b.raw_len)).sum();
                o.insert("total_size".into(), stored.into());
                o.insert("total_uncompressed_size".into(), plain.into());
                o.insert("total_blob_count".into(), blobs.len().into());
                if stored > 0 {
                    o.insert("compression_ratio".into(), (plain as f64 / stored as f64).into());
                }
            }
            "blobs-per-file" => {
                o.insert("total_file_count".into(), files.into());
                o.insert("total_blob_count".into(), blob_count.into());
            }
            _ => {
                o.insert("total_file_count".into(), files.into());
            }
        }
        ctx.out.emit(&doc).await
    })
}
