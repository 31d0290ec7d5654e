//! The `cat` job: one repository object, decrypted, as JSON lines — restic's `cat` for
//! debugging. `{"type": T, "id": HEX}` with T one of:
//! - `config`: the config object without its sealed parts, plus the readable settings (chunker
//!   sizes, compression, pack size; not the id key, the chunker key or the gear seed, which are secret);
//! - `snapshot`, `index`, `lock`: the object (ids in hex);
//! - `pack`: the pack's blob table from its authenticated header;
//! - `tree`: the tree blob's entries, one line each (the ENTRIES_NEXT line format);
//! - `blob`: the blob's plaintext as `{"data": HEX}` lines of up to 256 KiB each (the agent
//!   writes the bytes out);
//! - `key`: the key file `keys/ID` as stored (key files are plain JSON).

use serde::Deserialize;

use super::browse_json::{blob_entry_json, id_arg, indexed_pack_json, snapshot_file_json};
use super::{JobContext, JobFuture};
use crate::ops::backup::WireEntry;
use crate::ops::error::{OpError, OpResult, CODE_MALFORMED};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    r#type: String,
    #[serde(default)]
    id: Option<String>,
}

/// Plaintext bytes per `blob` line (hex doubles them: a line stays far below a slot).
const BLOB_PIECE: usize = 256 * 1024;

fn malformed(message: String) -> OpError {
    OpError { code: CODE_MALFORMED, message }
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let Args { r#type, id } = ctx.args()?;
        let id = |what: &str| -> OpResult<shmpipe_engine::Id> {
            let text = id.as_deref().ok_or_else(|| malformed(format!("job arguments: cat {what} needs an id")))?;
            id_arg("id", text)
        };
        let repo = &ctx.repo;
        match r#type.as_str() {
            "config" => {
                let raw = repo.read_raw_object(shmpipe_engine::objects::CONFIG_KEY).await?;
                let mut doc: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| OpError { code: "SHMPIPE_E_INTEGRITY", message: format!("config is not JSON: {e}") })?;
                if let Some(o) = doc.as_object_mut() {
                    // Sealed (hex ciphertext): nothing to read in them.
                    o.remove("wrapped_key");
                    o.remove("settings");
                    let s = repo.settings();
                    let c = &s.chunker;
                    o.insert(
                        "settings".into(),
                        serde_json::json!({
                            "chunker": { "min_size": c.min_size, "avg_size": c.avg_size, "max_size": c.max_size, "normalization": c.normalization },
                            "compression": s.compression,
                            "pack_size": s.pack_size,
                        }),
                    );
                }
                ctx.out.emit(&doc).await
            }
            "snapshot" => {
                let id = id("snapshot")?;
                let f = repo.snapshot(&id).await?;
                ctx.out.emit(&snapshot_file_json(&id, &f)).await
            }
            "index" => {
                let id = id("index")?;
                let f = repo.read_index_object(&id).await?;
                ctx.out.emit(&serde_json::json!({ "id": id.to_hex(), "packs": f.packs.iter().map(indexed_pack_json).collect::<Vec<_>>() })).await
            }
            "pack" => {
                let id = id("pack")?;
                let blobs = repo.read_pack_header(&id).await?;
                ctx.out.emit(&serde_json::json!({ "id": id.to_hex(), "blobs": blobs.iter().map(blob_entry_json).collect::<Vec<_>>() })).await
            }
            "lock" => {
                let id = id("lock")?;
                let l = repo.read_lock_object(&id).await?;
                ctx.out.emit(&serde_json::json!({ "id": id.to_hex(), "kind": l.kind, "host": l.host, "pid": l.pid, "purpose": l.purpose, "refreshed_ns": l.refreshed_ns.to_string() })).await
            }
            "tree" => {
                let id = id("tree")?;
                for e in repo.read_tree_blob(&id).await? {
                    ctx.out.emit(&WireEntry::from_entry(&e)).await?;
                }
                Ok(())
            }
            "blob" => {
                let id = id("blob")?;
                let data = repo.read_blob(&id).await?;
                for piece in data.chunks(BLOB_PIECE) {
                    ctx.out.emit(&serde_json::json!({ "data": hex::encode(piece) })).await?;
                }
                Ok(())
            }
            "key" => {
                let id = id("key")?;
                let raw = repo.read_raw_object(&format!("keys/{}", id.to_hex())).await?;
                let doc: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| OpError { code: "SHMPIPE_E_INTEGRITY", message: format!("key {id} is not JSON: {e}") })?;
                ctx.out.emit(&doc).await
            }
            other => Err(malformed(format!("job arguments: cat knows config, snapshot, index, pack, blob, tree, lock and key, not {other:?}"))),
        }
    })
}
