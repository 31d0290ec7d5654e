//! `Repository`: an opened repository — the store, the unwrapped keys, the repository's
//! settings, the in-memory index, and the CPU budget every engine operation on it shares.
//!
//! `config` (plain JSON, so tools and humans can see what it is) holds the format version, the
//! repository id, the KDF parameters, the master key wrapped under the password-derived key,
//! and the *settings* — chunker parameters, the chunk-id key, default compression and pack
//! size — sealed under the master key (so they are authenticated and the id key is secret).
//! See REPOSITORY.md §Config.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use shmpipe_store::{Store, StoreError};
use zeroize::Zeroizing;

use crate::blob::{self, BlobKind, Compression};
use crate::cache::{self, Cache};
use crate::chunker::{Cdc, ChunkerParams};
use crate::crypto::{self, AeadKey, KdfParams};
use crate::error::{EngineError, Result};
use crate::id::{BlobId, Id, SnapshotId};
use crate::keys;
use crate::index::{BlobLocation, IndexFile, MemIndex};
use crate::objects::{self, CONFIG_KEY, INDEX, SNAPSHOTS};
use crate::snapshot::{SnapshotFile, SnapshotInfo};

/// The repository format version this engine writes (2: keyed chunker, REPOSITORY.md §Config).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this engine reads (and keeps writing, in a repository of it).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// `magic` of the config object.
pub const CONFIG_MAGIC: &str = "shmpipe-repository";

/// Parameters of a new repository.
#[derive(Clone, Debug)]
pub struct RepoParams {
    /// Password KDF.
    pub kdf: KdfParams,
    /// Chunker sizes (`None`: the recommended ones). Format 2 ignores `gear_seed` (the table
    /// comes from a fresh secret `chunker_key`); format 1 uses it (`None`: a random one).
    pub chunker: Option<ChunkerParams>,
    /// Default compression of backups.
    pub compression: Compression,
    /// Target pack size in bytes (16–32 MiB recommended; a pack is closed once it reaches it).
    pub pack_size: u32,
    /// Format version to write: [`FORMAT_VERSION`], or 1 for a repository that engines from
    /// before the keyed chunker must read (restic's `init --repository-version`).
    pub format_version: u32,
    /// Accept KDF costs below the floor ([`KdfParams::check_floor`]): tests only.
    pub allow_weak_kdf: bool,
}

impl RepoParams {
    /// Argon2id 64 MiB/t=3, ~1 MiB chunks, zstd level 1, 16 MiB packs.
    pub fn recommended() -> Self {
        Self {
            kdf: KdfParams::recommended(),
            chunker: None,
            compression: Compression::default(),
            pack_size: 16 << 20,
            format_version: FORMAT_VERSION,
            allow_weak_kdf: false,
        }
    }

    /// Like `recommended` with a trivially cheap KDF: tests only.
    pub fn insecure_for_tests() -> Self {
        Self { kdf: KdfParams::insecure_for_tests(), allow_weak_kdf: true, ..Self::recommended() }
    }
}

/// How an opened repository runs its work.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// CPU-bound jobs (chunk hashing/compression/encryption, decryption) running at once
    /// across every session and reader of this repository: the sidecar's worker count.
    pub workers: usize,
    /// Base directory of the local metadata cache (`cache.rs`; the repository's cache is
    /// `<base>/<repository id>`), `None`: no cache. The sidecar passes
    /// [`crate::cache::default_base`] unless the agent asked for none.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { workers: 2, cache_dir: None }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConfigFile {
    pub magic: String,
    pub version: u32,
    pub id: String,
    /// The config's key slot (absent once removed: `keys.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
    /// Master key material, AEAD-sealed under the KDF output (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_key: Option<String>,
    /// `Settings`, AEAD-sealed under the master key (hex).
    pub settings: String,
}

/// Repository-wide settings (sealed in the config).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Key of the keyed BLAKE3 blob ids.
    pub id_key: Id,
    /// Chunker parameters (fixed for the repository's life: dedup depends on them).
    pub chunker: ChunkerParams,
    /// Format 2: the secret the chunker's gear table and the tree-cut key are derived from
    /// (`chunker::Cdc::keyed`). Absent in format 1, whose table is public XOR `gear_seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunker_key: Option<Id>,
    /// Default compression.
    pub compression: Compression,
    /// Default target pack size.
    pub pack_size: u32,
}

/// The config object's JSON, with a magic and a format version this engine reads.
pub(crate) fn parse_config(data: &[u8]) -> Result<ConfigFile> {
    let not_repo = |reason: String| EngineError::NotARepository { reason };
    let config: ConfigFile = serde_json::from_slice(data).map_err(|e| not_repo(format!("config is not a shmpipe config: {e}")))?;
    if config.magic != CONFIG_MAGIC {
        return Err(not_repo(format!("config magic {:?}", config.magic)));
    }
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&config.version) {
        return Err(EngineError::UnsupportedVersion { found: config.version, supported: FORMAT_VERSION });
    }
    Ok(config)
}

/// The settings' authenticated CBOR, checked before use: a chunker key exactly in format 2
/// (the plain `version` field is not authenticated itself; this binds it), chunker sizes
/// within fastcdc's limits, a pack size of 1 MiB–1 GiB, a zstd level zstd has. Any failure
/// is corruption of `config` (`SHMPIPE_E_INTEGRITY`).
pub(crate) fn decode_settings(version: u32, plain: &[u8]) -> Result<Settings> {
    let bad = |why: String| EngineError::integrity(CONFIG_KEY, format!("settings: {why}"));
    let settings: Settings = ciborium::from_reader(plain).map_err(|e| bad(e.to_string()))?;
    match (version, settings.chunker_key.is_some()) {
        (1, false) | (2, true) => {}
        (v, _) => return Err(bad(format!("they do not match format version {v} (chunker key)"))),
    }
    settings.chunker.validate().map_err(|e| bad(e.to_string()))?;
    if !PACK_SIZES.contains(&settings.pack_size) {
        return Err(bad(format!("pack size {}", settings.pack_size)));
    }
    if let Compression::Zstd(level) = settings.compression {
        if !zstd::compression_level_range().contains(&level) {
            return Err(bad(format!("zstd level {level}")));
        }
    }
    Ok(settings)
}

/// Pack sizes a repository may set (a pack buffer of this size is allocated per upload).
const PACK_SIZES: std::ops::RangeInclusive<u32> = 1 << 20..=1 << 30;

pub(crate) fn key_aad(repo_id: &Id) -> Vec<u8> {
    let mut a = b"shmpipe/key/v1".to_vec();
    a.extend_from_slice(&repo_id.0);
    a
}

fn settings_aad(repo_id: &Id) -> Vec<u8> {
    let mut a = b"shmpipe/settings/v1".to_vec();
    a.extend_from_slice(&repo_id.0);
    a
}

/// An opened repository (cheap to clone; clones share everything).
#[derive(Clone, Debug)]
pub struct Repository {
    pub(crate) inner: Arc<RepoInner>,
}

#[derive(Debug)]
pub(crate) struct RepoInner {
    pub store: Store,
    pub id: Id,
    /// The master key (wrapped again for a new key slot).
    pub master: Zeroizing<[u8; 32]>,
    pub aead: AeadKey,
    /// The key slot this handle was opened with.
    pub current_key: std::sync::Mutex<Id>,
    pub settings: Settings,
    pub cdc: Cdc,
    pub index: RwLock<MemIndex>,
    /// Serializes index refreshes.
    pub refresh: tokio::sync::Mutex<()>,
    pub index_ready: AtomicBool,
    /// Index and snapshot objects skipped because they cannot be read (key → why): a backup
    /// goes on without them and reports them; `check` reports them; `repair` fixes them.
    pub unreadable: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// CPU workers shared by every operation on this repository.
    pub cpu: crate::pool::CpuPool,
    pub workers: usize,
    /// Small blobs read a pack window at a time (packread.rs).
    pub windows: crate::packread::PackWindows,
    /// The local metadata cache, if any.
    pub cache: Option<Cache>,
    /// Set once cached tree blobs no longer in the index were removed (first full refresh).
    pub trees_pruned: AtomicBool,
}

impl Repository {
    /// Creates a repository in `store` (which must not hold one) and opens it.
    pub async fn init(store: Store, password: &[u8], params: RepoParams) -> Result<Self> {
        Self::init_with(store, password, params, OpenOptions::default()).await
    }

    /// [`Repository::init`] with explicit open options.
    pub async fn init_with(store: Store, password: &[u8], params: RepoParams, opts: OpenOptions) -> Result<Self> {
        params.kdf.check_limits()?;
        if !params.allow_weak_kdf {
            params.kdf.check_floor()?;
        }
        // Fails early (before the KDF) in the common case; the create-only PUT below decides.
        match store.stat(CONFIG_KEY).await {
            Ok(_) => return Err(EngineError::RepositoryExists),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let keyed = match params.format_version {
            1 => false,
            FORMAT_VERSION => true,
            v => {
                return Err(EngineError::InvalidArgument {
                    message: format!("repository format version {v}: this engine writes {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"),
                })
            }
        };
        let chunker = match (params.chunker, keyed) {
            (Some(c), false) => c,
            (Some(c), true) => ChunkerParams { gear_seed: 0, ..c },
            (None, true) => ChunkerParams::recommended(0),
            (None, false) => {
                let mut seed = [0u8; 8];
                crypto::fill_random(&mut seed);
                ChunkerParams::recommended(u64::from_le_bytes(seed))
            }
        };
        Cdc::new(chunker.clone())?;
        let chunker_key = keyed.then(Id::random);
        if !PACK_SIZES.contains(&params.pack_size) {
            return Err(EngineError::InvalidArgument { message: format!("pack size {} outside 1 MiB..1 GiB", params.pack_size) });
        }
        let id = Id::random();
        let mut master = Zeroizing::new([0u8; 32]);
        crypto::fill_random(master.as_mut());
        let settings = Settings { id_key: Id::random(), chunker, chunker_key, compression: params.compression, pack_size: params.pack_size };
        let kdf = params.kdf.clone();
        let pw = Zeroizing::new(password.to_vec());
        let kek = tokio::task::spawn_blocking(move || kdf.derive(&pw)).await??;
        let wrapped = crypto::wrap_key(&kek, &key_aad(&id), master.as_ref());
        let aead = AeadKey::new(&master);
        let mut settings_cbor = Zeroizing::new(Vec::new());
        ciborium::into_writer(&settings, &mut *settings_cbor).map_err(|e| EngineError::internal(e.to_string()))?;
        let sealed_settings = aead.seal(&settings_aad(&id), &settings_cbor);
        let config = ConfigFile {
            magic: CONFIG_MAGIC.into(),
            version: params.format_version,
            id: id.to_hex(),
            kdf: Some(params.kdf),
            wrapped_key: Some(hex::encode(&wrapped)),
            settings: hex::encode(sealed_settings),
        };
        let json = serde_json::to_vec_pretty(&config).map_err(|e| EngineError::internal(e.to_string()))?;
        // Create-only: of two racing inits exactly one writes the config (and so the one master
        // key); the other fails here and writes nothing.
        match store.put_if_absent(CONFIG_KEY, [Bytes::from(json.clone())]).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => return Err(EngineError::RepositoryExists),
            Err(e) => return Err(e.into()),
        }
        // A server that ignores `If-None-Match: *` overwrites instead of refusing: reading the
        // config back catches a racing init that wrote after us (REPOSITORY.md §Config).
        if objects::read_all(&store, CONFIG_KEY).await?[..] != json[..] {
            return Err(EngineError::RepositoryExists);
        }
        let key_id = keys::config_slot_id(&wrapped);
        Self::assemble(store, id, master, key_id, settings, opts)
    }

    /// Opens the repository in `store` with `password`.
    pub async fn open(store: Store, password: &[u8]) -> Result<Self> {
        Self::open_with(store, password, OpenOptions::default()).await
    }

    /// [`Repository::open`] with explicit options.
    pub async fn open_with(store: Store, password: &[u8], opts: OpenOptions) -> Result<Self> {
        let data = match objects::read_all_max(&store, CONFIG_KEY, crate::limits::MAX_CONFIG_BYTES).await {
            Ok(d) => d,
            Err(EngineError::NotFound { .. }) => {
                return Err(EngineError::NotARepository { reason: format!("no {CONFIG_KEY} object in {}", store.describe()) })
            }
            Err(e) => return Err(e),
        };
        let not_repo = |reason: String| EngineError::NotARepository { reason };
        let config = parse_config(&data)?;
        let id = Id::from_hex(&config.id).map_err(|_| not_repo("bad repository id".into()))?;
        let sealed_settings = hex::decode(&config.settings).map_err(|_| not_repo("settings are not hex".into()))?;
        // The config's slot first: a single-key repository costs one KDF run, as before.
        if let Some(slot) = keys::config_slot(&config)? {
            slot.kdf.check_limits()?;
        }
        let slots = keys::all_slots(&store, &config).await?;
        let (master, key_id) = keys::unwrap_master(slots, password, &id).await?;
        let aead = AeadKey::new(&master);
        let plain = Zeroizing::new(
            aead.open(&settings_aad(&id), &sealed_settings)
                .map_err(|_| EngineError::integrity(CONFIG_KEY, "settings failed authentication"))?,
        );
        let settings = decode_settings(config.version, &plain)?;
        Self::assemble(store, id, master, key_id, settings, opts)
    }

    fn assemble(store: Store, id: Id, master: Zeroizing<[u8; 32]>, key_id: Id, settings: Settings, opts: OpenOptions) -> Result<Self> {
        let aead = AeadKey::new(&master);
        let cdc = match &settings.chunker_key {
            Some(k) => Cdc::keyed(settings.chunker.clone(), &k.0),
            None => Cdc::new(settings.chunker.clone()),
        }
        .map_err(|e| EngineError::integrity(CONFIG_KEY, format!("settings: {e}")))?;
        let workers = opts.workers.max(1);
        let cache = opts.cache_dir.as_deref().and_then(|base| match Cache::open(base, &id) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(dir = %base.display(), error = %e, "the metadata cache is unusable; going on without it");
                None
            }
        });
        Ok(Self {
            inner: Arc::new(RepoInner {
                store,
                id,
                master,
                aead,
                current_key: std::sync::Mutex::new(key_id),
                settings,
                cdc,
                index: RwLock::new(MemIndex::default()),
                refresh: tokio::sync::Mutex::new(()),
                index_ready: AtomicBool::new(false),
                unreadable: std::sync::Mutex::new(Default::default()),
                cpu: crate::pool::CpuPool::new(workers)?,
                workers,
                windows: crate::packread::PackWindows::default(),
                cache,
                trees_pruned: AtomicBool::new(false),
            }),
        })
    }

    /// The repository id.
    pub fn id(&self) -> Id {
        self.inner.id
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The repository settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Blobs in the in-memory index, and its approximate heap size in bytes.
    pub fn index_stats(&self) -> (usize, usize) {
        let idx = self.inner.index.read().expect("index lock");
        (idx.len(), idx.memory_bytes())
    }

    /// Loads index objects not loaded yet (written by other sessions since the last refresh).
    /// An index object listed but gone when read was deleted by a prune replacing the index
    /// (it writes the new objects first): list again.
    pub async fn refresh_index(&self) -> Result<()> {
        let _g = self.inner.refresh.lock().await;
        let mut relisted = 0;
        loop {
            match self.refresh_index_once().await {
                Err(EngineError::NotFound { .. }) if relisted < 8 => relisted += 1,
                r => return r,
            }
        }
    }

    async fn refresh_index_once(&self) -> Result<()> {
        let keys = objects::list_keys(&self.inner.store, INDEX).await?;
        {
            // An index object loaded before and gone now was replaced by a prune, which may
            // have deleted packs it named: start over, or dedup could reuse a deleted blob.
            let listed: HashSet<Id> = keys.iter().filter_map(|(k, _)| objects::id_of_key(k)).collect();
            let mut idx = self.inner.index.write().expect("index lock");
            if idx.loaded_ids().any(|id| !listed.contains(id)) {
                *idx = MemIndex::default();
            }
        }
        if let Some(c) = &self.inner.cache {
            let listed: HashSet<Id> = keys.iter().filter_map(|(k, _)| objects::id_of_key(k)).collect();
            c.retain(INDEX, |id| listed.contains(id)).await;
        }
        let todo: Vec<(Id, String)> = {
            let idx = self.inner.index.read().expect("index lock");
            keys.into_iter()
                .filter_map(|(k, _)| objects::id_of_key(&k).map(|id| (id, k)))
                .filter(|(id, _)| !idx.is_loaded(id))
                .collect()
        };
        let mut loads = futures::stream::iter(todo)
            .map(|(id, key)| async move {
                // Impossible rows are damage like a failed authentication (limits.rs).
                let f = self.get_object_cached::<IndexFile>(&key).await.and_then(|f| match crate::limits::index_problem(&f) {
                    Some(why) => Err(EngineError::integrity(key.clone(), why)),
                    None => Ok(f),
                });
                (id, key, f)
            })
            .buffer_unordered(4);
        // Staged (appended, unsorted) as they arrive and made visible together: one sort and
        // one merge per refresh, not one per object (index.rs).
        let mut loaded = Vec::new();
        let staged = async {
            while let Some((id, key, f)) = loads.next().await {
                let f = match f {
                    Ok(f) => f,
                    // Removed since the listing (a prune replaced it).
                    Err(EngineError::NotFound { .. }) => continue,
                    // Damaged: skipped (its blobs are stored again if needed), reported.
                    Err(e) if e.is_damage() => {
                        self.note_unreadable(&key, &e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut idx = self.inner.index.write().expect("index lock");
                for p in &f.packs {
                    idx.stage_pack(p)?;
                }
                loaded.push(id);
            }
            Ok::<_, EngineError>(())
        }
        .await;
        {
            let mut idx = self.inner.index.write().expect("index lock");
            idx.commit_staged();
            for id in loaded {
                idx.mark_loaded(id);
            }
        }
        staged?;
        self.inner.index_ready.store(true, Ordering::Release);
        if let Some(c) = &self.inner.cache {
            if !self.inner.trees_pruned.swap(true, Ordering::AcqRel) {
                let idx = &self.inner.index;
                c.retain(cache::TREES, |id| idx.read().expect("index lock").contains(id)).await;
            }
        }
        Ok(())
    }

    /// Forgets the in-memory index (prune deleted packs it may name); the next use reloads it.
    pub(crate) fn reset_index(&self) {
        *self.inner.index.write().expect("index lock") = MemIndex::default();
        self.inner.index_ready.store(false, Ordering::Release);
    }

    /// Reads and opens a sealed object, from the cache when it holds a copy that opens, else
    /// from the store (then caching it). Callers ask only for keys the store lists.
    pub(crate) async fn get_object_cached<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let Some(c) = &self.inner.cache else {
            return objects::get_object(&self.inner.store, &self.inner.aead, key).await;
        };
        if let Some(data) = c.get(key).await {
            match objects::open_object(&self.inner.aead, key, data) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(key, error = %e, "cached copy is damaged; reading the repository's");
                    c.remove(key).await;
                }
            }
        }
        let data = objects::read_all_max(&self.inner.store, key, crate::limits::MAX_OBJECT_BYTES).await?;
        let v = objects::open_object(&self.inner.aead, key, data.clone())?;
        c.put(key, &data).await;
        Ok(v)
    }

    /// Writes a sealed object to the store and, once stored, to the cache.
    pub(crate) async fn put_object_cached<T: Serialize>(&self, key: &str, value: &T) -> Result<u64> {
        let data = Bytes::from(objects::seal_object(&self.inner.aead, key, value)?);
        self.inner.store.put(key, [data.clone()]).await?;
        if let Some(c) = &self.inner.cache {
            c.put(key, &data).await;
        }
        Ok(data.len() as u64)
    }

    /// Loads the index once if nothing has loaded it yet.
    pub(crate) async fn ensure_index(&self) -> Result<()> {
        if !self.inner.index_ready.load(Ordering::Acquire) {
            self.refresh_index().await?;
        }
        Ok(())
    }

    /// Where a blob is (after loading the index if needed). A miss reloads new index objects
    /// once: another process may have written the snapshot being read after this repository
    /// was opened.
    pub async fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.ensure_index().await?;
        let get = || self.inner.index.read().expect("index lock").get(id);
        if let Some(l) = get() {
            return Ok(l);
        }
        self.refresh_index().await?;
        get().ok_or_else(|| EngineError::NotFound { what: format!("blob {id}") })
    }

    /// Reads one blob: ranged read from its pack, then authentication, decompression and the
    /// id check on a worker.
    /// A pack that has vanished (a prune elsewhere repacked the blob after this handle loaded
    /// the index) reloads the index once and reads the blob where it is now.
    pub async fn read_blob(&self, id: &BlobId) -> Result<Bytes> {
        match self.read_blob_once(id).await {
            Err(EngineError::NotFound { what }) => {
                let before = self.locate(id).await?;
                self.refresh_index().await?;
                if self.locate(id).await? == before {
                    return Err(EngineError::NotFound { what });
                }
                self.read_blob_once(id).await
            }
            r => r,
        }
    }

    /// Tree and chunk-list blobs go through the cache (verified like any read); `check` reads
    /// with [`Repository::read_blob_at`], from the store.
    async fn read_blob_once(&self, id: &BlobId) -> Result<Bytes> {
        let loc = self.locate(id).await?;
        let Some(c) = self.inner.cache.as_ref().filter(|_| loc.kind != BlobKind::Data) else {
            return self.read_blob_at(id, &loc).await;
        };
        let key = cache::blob_key(id);
        if let Some(env) = c.get(&key).await {
            match self.open_blob_on_worker(id, &loc, env).await {
                Ok(plain) => return Ok(plain),
                Err(e) => {
                    tracing::warn!(blob = %id, error = %e, "cached copy is damaged; reading the repository's");
                    c.remove(&key).await;
                }
            }
        }
        let env = self.read_envelope(&loc).await?;
        let plain = self.open_blob_on_worker(id, &loc, env.clone()).await?;
        c.put(&key, &env).await;
        Ok(plain)
    }

    async fn read_envelope(&self, loc: &BlobLocation) -> Result<Bytes> {
        let key = objects::pack_key(&loc.pack);
        let start = u64::from(loc.offset);
        let range = start..start + u64::from(loc.length);
        match self.read_windowed(&key, loc, range.clone()).await {
            Some(env) => Ok(env),
            None => objects::read_range(&self.inner.store, &key, range).await,
        }
    }

    async fn open_blob_on_worker(&self, id: &BlobId, loc: &BlobLocation, env: Bytes) -> Result<Bytes> {
        let repo = self.clone();
        let (id, kind, raw_len) = (*id, loc.kind, loc.raw_len);
        self.inner.cpu.run(move || repo.open_blob(kind, &id, raw_len, env)).await?
    }

    pub(crate) async fn read_blob_at(&self, id: &BlobId, loc: &BlobLocation) -> Result<Bytes> {
        let env = self.read_envelope(loc).await?;
        self.open_blob_on_worker(id, loc, env).await
    }

    /// A small blob's envelope out of its pack window (packread.rs), or `None` to read it alone.
    async fn read_windowed(&self, key: &str, loc: &BlobLocation, range: std::ops::Range<u64>) -> Option<Bytes> {
        let sizes = || self.inner.index.read().expect("index lock").packs().collect::<Vec<_>>();
        let w = self.inner.windows.window_for(loc.pack, range.clone(), sizes)?;
        match w.bytes(|r| objects::read_range(&self.inner.store, key, r)).await {
            Ok(data) => w.slice(&data, range),
            Err(e) => {
                tracing::debug!(pack = %key, error = %e, "pack window unreadable; reading the blob alone");
                None
            }
        }
    }

    /// Opens a sealed blob with this repository's keys (verifying its id).
    pub(crate) fn open_blob(&self, kind: BlobKind, id: &BlobId, raw_len: u32, env: Bytes) -> Result<Bytes> {
        blob::open(&self.inner.aead, Some(&self.inner.settings.id_key.0), kind, id, raw_len, env)
    }

    /// Reads a snapshot's manifest.
    pub async fn snapshot(&self, id: &SnapshotId) -> Result<SnapshotFile> {
        let key = objects::snapshot_key(id);
        let file: SnapshotFile = self.get_object_cached(&key).await?;
        if file.v != 1 {
            return Err(EngineError::integrity(key, format!("snapshot version {}", file.v)));
        }
        Ok(file)
    }

    /// Every snapshot, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let keys = objects::list_keys(&self.inner.store, SNAPSHOTS).await?;
        let ids: Vec<SnapshotId> = keys.iter().filter_map(|(k, _)| objects::id_of_key(k)).collect();
        if let Some(c) = &self.inner.cache {
            let listed: HashSet<Id> = ids.iter().copied().collect();
            c.retain(SNAPSHOTS, |id| listed.contains(id)).await;
        }
        let results: Vec<(SnapshotId, Result<SnapshotFile>)> =
            futures::stream::iter(ids).map(|id| async move { (id, self.snapshot(&id).await) }).buffer_unordered(8).collect().await;
        let mut out = Vec::with_capacity(results.len());
        for (id, r) in results {
            match r {
                Ok(file) => out.push(SnapshotInfo { id, file }),
                // Forgotten since the listing.
                Err(EngineError::NotFound { .. }) => {}
                // Damaged: left out (a backup picks another parent), reported.
                Err(e) if e.is_damage() => self.note_unreadable(&objects::snapshot_key(&id), &e),
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|s| (s.file.time_ns, s.id));
        Ok(out)
    }

    fn note_unreadable(&self, key: &str, e: &EngineError) {
        tracing::warn!(object = %key, error = %e, "skipping an unreadable repository object (run `shmpipe check`, then `shmpipe repair`)");
        self.inner.unreadable.lock().expect("unreadable").insert(key.to_owned(), e.to_string());
    }

    /// Index and snapshot objects this handle skipped because they could not be read, each
    /// with why: `"<key>: <error>"`.
    pub fn unreadable_objects(&self) -> Vec<String> {
        self.inner.unreadable.lock().expect("unreadable").iter().map(|(k, e)| format!("{k}: {e}")).collect()
    }
}
