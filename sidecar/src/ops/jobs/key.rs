//! The `key` job (restic's `key list|add|remove|passwd`): `{"action": "list"}` → one line per
//! key, `{"id", "current", "userName", "hostName", "created_ns", "in_config", "kdf_m_kib",
//! "kdf_t"}`; `{"action": "add", "password": S}` → `{"added": KEY}`; `{"action": "remove",
//! "id": HEX-PREFIX}` → `{"removed": KEY}` (the key in use and the last key are `REFUSED`);
//! `{"action": "passwd", "password": S}` → `{"added": KEY, "removed": KEY}` (a new key for the
//! key in use, which is then removed). New keys get the recommended Argon2id costs. The master
//! key never changes (REPOSITORY.md §Keys).

use serde::Deserialize;
use shmpipe_engine::KdfParams;

use super::{JobContext, JobFuture};
use crate::ops::error::OpError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "action", rename_all = "lowercase")]
enum Args {
    List,
    Add { password: String },
    Remove { id: String },
    Passwd { password: String },
}

fn new_password(p: &str) -> Result<&[u8], OpError> {
    if p.is_empty() {
        return Err(OpError::malformed("the new password is empty"));
    }
    Ok(p.as_bytes())
}

pub fn run(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let repo = &ctx.repo;
        match ctx.args()? {
            Args::List => {
                for k in repo.keys().await? {
                    ctx.out.emit(&k).await?;
                }
            }
            Args::Add { password } => {
                let added = repo.add_key(new_password(&password)?, KdfParams::recommended(), false).await?;
                ctx.out.emit(&serde_json::json!({ "added": added })).await?;
            }
            Args::Remove { id } => {
                if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(OpError::malformed("key id: at least 4 hex digits"));
                }
                let removed = repo.remove_key(&id).await?;
                ctx.out.emit(&serde_json::json!({ "removed": removed })).await?;
            }
            Args::Passwd { password } => {
                let (added, removed) = repo.change_password(new_password(&password)?, KdfParams::recommended(), false).await?;
                ctx.out.emit(&serde_json::json!({ "added": added, "removed": removed })).await?;
            }
        }
        Ok(())
    })
}
