//! Key slots: the passwords that open a repository. Each slot wraps the one master key under a
//! key derived from its password (Argon2id, the slot's own parameters), so several passwords
//! open one repository and changing a password rewraps 32 bytes — the master key, and so every
//! object, never changes (REPOSITORY.md §Keys).
//!
//! Slots live in two places: the config's own slot (written by `init`, create-only, so two
//! racing inits leave exactly one key) and `keys/<id>` objects (plain JSON like the config: a
//! slot must be readable before anything can be decrypted). The config slot's id is derived
//! from its wrapped bytes, so it is listed and removed like any other; removing it rewrites the
//! config without it (one atomic PUT, under the exclusive lock, after the replacement key is
//! durable).
//!
//! Opening tries the config slot, then every `keys/` slot; a slot whose parameters exceed the
//! engine's limits is not tried (a hostile slot must not cost terabytes) and is named if no
//! other slot opens.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, KdfParams};
use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::lock::{self, LockKind};
use crate::objects::{self, CONFIG_KEY, KEYS};
use crate::repo::{key_aad, ConfigFile, Repository};

/// `magic` of a key object.
pub const KEY_MAGIC: &str = "shmpipe-key";
/// Key objects larger than this are not read (a slot is a few hundred bytes).
const MAX_KEY_OBJECT: u64 = 64 << 10;
/// Slots tried at most when opening (each costs one Argon2 derivation).
const MAX_SLOTS: usize = 256;

/// A `keys/<id>` object.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    magic: String,
    kdf: KdfParams,
    /// `E(KEK, "shmpipe/key/v1" ‖ repo id, master key)`, hex: the config slot's format.
    wrapped_key: String,
    /// Informational (not authenticated): who added it, where, when.
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    created_ns: Option<i64>,
}

/// One key slot, wherever it lives.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub id: Id,
    pub kdf: KdfParams,
    pub wrapped: Vec<u8>,
    /// The config's own slot (else `keys/<id>`).
    pub in_config: bool,
    pub host: Option<String>,
    pub username: Option<String>,
    pub created_ns: Option<i64>,
}

/// A key as `key list` reports it (restic's `key list --json` field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The slot id (hex).
    pub id: String,
    /// This repository handle was opened with it.
    pub current: bool,
    /// Who added it (absent for the config's slot).
    #[serde(rename = "userName")]
    pub user_name: Option<String>,
    /// Where it was added.
    #[serde(rename = "hostName")]
    pub host_name: Option<String>,
    /// When, ns since the epoch.
    pub created_ns: Option<i64>,
    /// The config's own slot (written by `init`).
    pub in_config: bool,
    /// Argon2 memory (KiB) and passes.
    pub kdf_m_kib: u32,
    pub kdf_t: u32,
}

/// The id of the config's slot: derived from its wrapped bytes, so it is stable.
pub(crate) fn config_slot_id(wrapped: &[u8]) -> Id {
    let mut h = blake3::Hasher::new();
    h.update(b"shmpipe/config-key/v1\0");
    h.update(wrapped);
    Id(*h.finalize().as_bytes())
}

pub(crate) fn config_slot(config: &ConfigFile) -> Result<Option<Slot>> {
    let (Some(kdf), Some(wrapped)) = (&config.kdf, &config.wrapped_key) else { return Ok(None) };
    let wrapped = hex::decode(wrapped).map_err(|_| EngineError::NotARepository { reason: "wrapped key is not hex".into() })?;
    Ok(Some(Slot {
        id: config_slot_id(&wrapped),
        kdf: kdf.clone(),
        wrapped,
        in_config: true,
        host: None,
        username: None,
        created_ns: None,
    }))
}

/// Every slot: the config's first, then `keys/` in key order. An unreadable key object is an
/// `Integrity` error naming it.
pub(crate) async fn all_slots(store: &shmpipe_store::Store, config: &ConfigFile) -> Result<Vec<Slot>> {
    let mut out: Vec<Slot> = config_slot(config)?.into_iter().collect();
    for (key, size) in objects::list_keys(store, KEYS).await? {
        let Some(id) = objects::id_of_key(&key) else { continue };
        if size > MAX_KEY_OBJECT {
            return Err(EngineError::integrity(key, format!("key object of {size} bytes (at most {MAX_KEY_OBJECT})")));
        }
        let data = match objects::read_all(store, &key).await {
            Ok(d) => d,
            Err(EngineError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let f: KeyFile = serde_json::from_slice(&data).map_err(|e| EngineError::integrity(&key, format!("not a key object: {e}")))?;
        if f.magic != KEY_MAGIC {
            return Err(EngineError::integrity(&key, format!("magic {:?}", f.magic)));
        }
        let wrapped = hex::decode(&f.wrapped_key).map_err(|_| EngineError::integrity(&key, "wrapped key is not hex"))?;
        out.push(Slot { id, kdf: f.kdf, wrapped, in_config: false, host: f.host, username: f.username, created_ns: f.created_ns });
        if out.len() > MAX_SLOTS {
            return Err(EngineError::RepoLimit { what: format!("more than {MAX_SLOTS} keys") });
        }
    }
    Ok(out)
}

/// Unwraps the master key with `password` from the first slot it opens. The config's slot is
/// tried first; a config slot beyond the limits fails at once (`RepoLimit`), a `keys/` slot
/// beyond them is skipped (and reported if nothing opens).
pub(crate) async fn unwrap_master(slots: Vec<Slot>, password: &[u8], repo_id: &Id) -> Result<(Zeroizing<[u8; 32]>, Id)> {
    let mut skipped: Option<EngineError> = None;
    for slot in slots {
        if let Err(e) = slot.kdf.check_limits() {
            if slot.in_config {
                return Err(e);
            }
            tracing::warn!(key = %slot.id, error = %e, "key slot not tried");
            skipped.get_or_insert(EngineError::RepoLimit { what: format!("key {} not tried: {e}", slot.id) });
            continue;
        }
        let kdf = slot.kdf.clone();
        let pw = Zeroizing::new(password.to_vec());
        let kek = tokio::task::spawn_blocking(move || kdf.derive(&pw)).await??;
        match crypto::unwrap_key(&kek, &key_aad(repo_id), &slot.wrapped) {
            Ok(m) => {
                let m: [u8; 32] = m[..].try_into().map_err(|_| EngineError::integrity(CONFIG_KEY, "master key has the wrong length"))?;
                return Ok((Zeroizing::new(m), slot.id));
            }
            Err(EngineError::WrongPassword) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(skipped.unwrap_or(EngineError::WrongPassword))
}

fn user_name() -> Option<String> {
    std::env::var("USER").ok().or_else(|| std::env::var("LOGNAME").ok()).filter(|u| !u.is_empty())
}

impl Repository {
    async fn config_file(&self) -> Result<ConfigFile> {
        let data = objects::read_all(&self.inner.store, CONFIG_KEY).await?;
        serde_json::from_slice(&data).map_err(|e| EngineError::integrity(CONFIG_KEY, format!("config: {e}")))
    }

    /// The key slot this handle was opened with (or last changed its password to).
    pub fn current_key(&self) -> Id {
        *self.inner.current_key.lock().expect("current key")
    }

    /// Every key of the repository (`key list`).
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        let config = self.config_file().await?;
        let current = self.current_key();
        Ok(all_slots(&self.inner.store, &config).await?.iter().map(|s| info(s, current)).collect())
    }

    /// Adds a key for `password` (`key add`): a new slot wrapping the same master key. `kdf`
    /// must be within the limits and, unless `allow_weak_kdf` (tests), above the floor.
    pub async fn add_key(&self, password: &[u8], kdf: KdfParams, allow_weak_kdf: bool) -> Result<KeyInfo> {
        kdf.check_limits()?;
        if !allow_weak_kdf {
            kdf.check_floor()?;
        }
        let pw = Zeroizing::new(password.to_vec());
        let k = kdf.clone();
        let kek = tokio::task::spawn_blocking(move || k.derive(&pw)).await??;
        let wrapped = crypto::wrap_key(&kek, &key_aad(&self.inner.id), self.inner.master.as_ref());
        let file = KeyFile {
            magic: KEY_MAGIC.into(),
            kdf,
            wrapped_key: hex::encode(&wrapped),
            host: Some(lock::host_name()),
            username: user_name(),
            created_ns: Some(lock::now_ns()),
        };
        let id = Id::random();
        let json = serde_json::to_vec_pretty(&file).map_err(|e| EngineError::internal(e.to_string()))?;
        self.inner.store.put_if_absent(&objects::key_key(&id), [Bytes::from(json)]).await?;
        let slot = Slot { id, kdf: file.kdf, wrapped, in_config: false, host: file.host, username: file.username, created_ns: file.created_ns };
        Ok(info(&slot, self.current_key()))
    }

    /// Removes the key whose id starts with `id_prefix` (`key remove`), under an exclusive
    /// lock. Refused (`Refused`) for the key in use and for the last key.
    pub async fn remove_key(&self, id_prefix: &str) -> Result<KeyInfo> {
        let lock = self.lock(LockKind::Exclusive, "key remove").await?;
        let r = self.remove_key_locked(id_prefix).await;
        lock.release().await?;
        r
    }

    async fn remove_key_locked(&self, id_prefix: &str) -> Result<KeyInfo> {
        let config = self.config_file().await?;
        let slots = all_slots(&self.inner.store, &config).await?;
        let prefix = id_prefix.to_ascii_lowercase();
        let matching: Vec<&Slot> = slots.iter().filter(|s| s.id.to_hex().starts_with(&prefix)).collect();
        let slot = match matching[..] {
            [s] if !prefix.is_empty() => s,
            [] => return Err(EngineError::NotFound { what: format!("key {id_prefix:?}") }),
            _ => return Err(EngineError::InvalidArgument { message: format!("key id {id_prefix:?} is ambiguous: give more digits") }),
        };
        let current = self.current_key();
        if slot.id == current {
            return Err(EngineError::Refused { message: format!("key {} is the one in use; open the repository with another key to remove it", slot.id) });
        }
        if slots.len() == 1 {
            return Err(EngineError::Refused { message: "it is the repository's last key".into() });
        }
        self.delete_slot(slot, config).await?;
        Ok(info(slot, current))
    }

    async fn delete_slot(&self, slot: &Slot, mut config: ConfigFile) -> Result<()> {
        if slot.in_config {
            config.kdf = None;
            config.wrapped_key = None;
            let json = serde_json::to_vec_pretty(&config).map_err(|e| EngineError::internal(e.to_string()))?;
            self.inner.store.put(CONFIG_KEY, [Bytes::from(json)]).await?;
        } else {
            self.inner.store.delete(&objects::key_key(&slot.id)).await?;
        }
        Ok(())
    }

    /// Changes the password of the key in use (`key passwd`): adds a key for `new_password`,
    /// makes it current, then removes the old one — under an exclusive lock, in that order, so
    /// a crash leaves both keys, never none. Returns (new key, removed key).
    pub async fn change_password(&self, new_password: &[u8], kdf: KdfParams, allow_weak_kdf: bool) -> Result<(KeyInfo, KeyInfo)> {
        let lock = self.lock(LockKind::Exclusive, "key passwd").await?;
        let r = async {
            let config = self.config_file().await?;
            let old_id = self.current_key();
            let slots = all_slots(&self.inner.store, &config).await?;
            let old = slots
                .iter()
                .find(|s| s.id == old_id)
                .cloned()
                .ok_or_else(|| EngineError::NotFound { what: format!("key {old_id} (in use) was removed by another process") })?;
            let mut new = self.add_key(new_password, kdf, allow_weak_kdf).await?;
            *self.inner.current_key.lock().expect("current key") = Id::from_hex(&new.id)?;
            new.current = true;
            // Re-read: the config slot's removal rewrites the config as it is now.
            self.delete_slot(&old, self.config_file().await?).await?;
            Ok((new, info(&old, Id([0; 32]))))
        }
        .await;
        lock.release().await?;
        r
    }
}

fn info(s: &Slot, current: Id) -> KeyInfo {
    KeyInfo {
        id: s.id.to_hex(),
        current: s.id == current,
        user_name: s.username.clone(),
        host_name: s.host.clone(),
        created_ns: s.created_ns,
        in_config: s.in_config,
        kdf_m_kib: s.kdf.m_kib,
        kdf_t: s.kdf.t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::RepoParams;
    use shmpipe_store::{Store, StoreConfig, StoreOptions};

    fn weak() -> KdfParams {
        KdfParams::insecure_for_tests()
    }

    #[tokio::test]
    async fn several_passwords_open_one_repository_and_the_master_key_never_changes() {
        let store = Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap();
        let repo = Repository::init(store.clone(), b"one", RepoParams::insecure_for_tests()).await.unwrap();
        let first = repo.current_key();
        let keys = repo.keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].current && keys[0].in_config);

        let two = repo.add_key(b"two", weak(), true).await.unwrap();
        assert!(!two.current);
        let by_two = Repository::open(store.clone(), b"two").await.unwrap();
        assert_eq!(by_two.current_key().to_hex(), two.id);
        assert_eq!(by_two.settings().id_key, repo.settings().id_key, "same master key, same settings");
        assert_eq!(Repository::open(store.clone(), b"three").await.unwrap_err().code(), "SHMPIPE_E_WRONG_PASSWORD");

        // The key in use and the last key are refused.
        let e = repo.remove_key(&first.to_hex()[..8]).await.unwrap_err();
        assert_eq!(e.code(), "SHMPIPE_E_REFUSED", "{e}");
        // Removing the config's slot (from a handle opened with the other key) rewrites the config.
        let removed = by_two.remove_key(&first.to_hex()[..8]).await.unwrap();
        assert!(removed.in_config);
        assert_eq!(Repository::open(store.clone(), b"one").await.unwrap_err().code(), "SHMPIPE_E_WRONG_PASSWORD");
        let e = by_two.remove_key(&two.id).await.unwrap_err();
        assert_eq!(e.code(), "SHMPIPE_E_REFUSED", "{e}");

        // passwd: the new password opens, the old one no longer does.
        let (new, old) = by_two.change_password(b"four", weak(), true).await.unwrap();
        assert_eq!(old.id, two.id);
        assert!(new.current);
        assert_eq!(Repository::open(store.clone(), b"two").await.unwrap_err().code(), "SHMPIPE_E_WRONG_PASSWORD");
        let by_four = Repository::open(store.clone(), b"four").await.unwrap();
        assert_eq!(by_four.keys().await.unwrap().len(), 1);
        assert_eq!(by_four.settings().id_key, repo.settings().id_key);
        // Weak parameters are refused for a new key unless asked for (tests).
        assert_eq!(by_four.add_key(b"five", weak(), false).await.unwrap_err().code(), "SHMPIPE_E_REPO_LIMIT");
        assert!(store.list("locks", None, 10).await.unwrap().entries.is_empty(), "locks released");
    }
}
