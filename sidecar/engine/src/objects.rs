//! The repository's object key layout, and reading/writing whole objects through the store:
//! plain reads, ranged reads, and *sealed objects* — index files, snapshots and locks, each a
//! CBOR document, zstd-compressed, in an AEAD envelope whose associated data is
//! `"shmpipe/object/v1" ‖ 0 ‖ key`, binding it to the key it was written under (an old
//! snapshot copied over a new name, or an index renamed, fails to open).
//!
//! Layout (REPOSITORY.md §Layout): `config`, `keys/<id>` (key slots), `packs/<2 hex>/<id>`,
//! `index/<id>`, `snapshots/<id>`, `locks/<id>`; ids are 64 lowercase hex digits.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shmpipe_store::Store;

use crate::crypto::{AeadKey, NONCE_LEN};
use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::limits;

/// The config object's key.
pub const CONFIG_KEY: &str = "config";
/// Prefix of pack objects.
pub const PACKS: &str = "packs";
/// Prefix of index objects.
pub const INDEX: &str = "index";
/// Prefix of snapshot objects.
pub const SNAPSHOTS: &str = "snapshots";
/// Prefix of lock objects.
pub const LOCKS: &str = "locks";
/// Prefix of key objects (additional key slots, plain JSON).
pub const KEYS: &str = "keys";

/// `packs/<first 2 hex>/<id>`: 256 fan-out directories keep file:// directories small.
pub fn pack_key(id: &Id) -> String {
    let h = id.to_hex();
    format!("{PACKS}/{}/{h}", &h[..2])
}

/// `index/<id>`
pub fn index_key(id: &Id) -> String {
    format!("{INDEX}/{}", id.to_hex())
}

/// `snapshots/<id>`
pub fn snapshot_key(id: &Id) -> String {
    format!("{SNAPSHOTS}/{}", id.to_hex())
}

/// `locks/<id>`
pub fn lock_key(id: &Id) -> String {
    format!("{LOCKS}/{}", id.to_hex())
}

/// `keys/<id>`
pub fn key_key(id: &Id) -> String {
    format!("{KEYS}/{}", id.to_hex())
}

/// The id in the last segment of a key, if it is one.
pub fn id_of_key(key: &str) -> Option<Id> {
    let last = key.rsplit('/').next()?;
    (last.len() == 64).then(|| Id::from_hex(last).ok()).flatten()
}

/// Every key under `prefix`, in order (paged LIST).
pub async fn list_keys(store: &Store, prefix: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store.list(prefix, token.as_deref(), 1000).await?;
        out.extend(page.entries.into_iter().map(|e| (e.key, e.size)));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// A whole object's data (verified against its store checksum at the end).
pub async fn read_all(store: &Store, key: &str) -> Result<Bytes> {
    read_all_max(store, key, u64::MAX).await
}

/// [`read_all`] of an object that may hold at most `max` bytes: a larger one is an integrity
/// error as soon as more has arrived, without reading (or buffering) the rest.
pub async fn read_all_max(store: &Store, key: &str, max: u64) -> Result<Bytes> {
    let mut r = store.open_read(key, None).await.map_err(|e| EngineError::from_store_for(e, key))?;
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    while let Some(chunk) = r.next_chunk().await? {
        total += chunk.len() as u64;
        if total > max {
            return Err(EngineError::integrity(key, format!("object larger than {max} bytes")));
        }
        if first.is_none() && buf.is_empty() {
            first = Some(chunk);
        } else {
            if let Some(f) = first.take() {
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&chunk);
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Data bytes `range` of an object (not covered by the store checksum: callers authenticate
/// what they read).
pub async fn read_range(store: &Store, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
    let len = (range.end - range.start) as usize;
    let mut r = store.open_read(key, Some(range)).await.map_err(|e| EngineError::from_store_for(e, key))?;
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = r.next_chunk().await? {
        if first.is_none() && buf.is_empty() && chunk.len() == len {
            first = Some(chunk);
        } else {
            if buf.is_empty() {
                buf.reserve(len);
            }
            if let Some(f) = first.take() {
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&chunk);
        }
    }
    let out = first.unwrap_or_else(|| buf.freeze());
    if out.len() != len {
        return Err(EngineError::integrity(key, format!("ranged read returned {} of {len} bytes", out.len())));
    }
    Ok(out)
}

fn object_aad(key: &str) -> Vec<u8> {
    let mut a = b"shmpipe/object/v1\0".to_vec();
    a.extend_from_slice(key.as_bytes());
    a
}

/// Encodes `value` as a sealed object for `key`: CBOR, zstd level 3 (small documents: size
/// matters more than speed), AEAD.
pub fn seal_object<T: Serialize>(aead: &AeadKey, key: &str, value: &T) -> Result<Vec<u8>> {
    let mut cbor = Vec::new();
    ciborium::into_writer(value, &mut cbor).map_err(|e| EngineError::internal(format!("encoding {key}: {e}")))?;
    let mut buf = vec![0u8; NONCE_LEN];
    zstd::stream::copy_encode(&cbor[..], &mut buf, 3).map_err(|e| EngineError::internal(format!("zstd: {e}")))?;
    aead.seal_in_place(&object_aad(key), &mut buf);
    Ok(buf)
}

/// Opens a sealed object read from `key`.
pub fn open_object<T: DeserializeOwned>(aead: &AeadKey, key: &str, data: Bytes) -> Result<T> {
    let mut buf = Vec::from(data);
    let range = aead
        .open_in_place(&object_aad(key), &mut buf)
        .map_err(|_| EngineError::integrity(key, "authentication failed"))?;
    decode_object(key, &buf[range])
}

/// An authenticated object's payload: one zstd frame of CBOR. Decompressed as a stream into
/// memory that grows with what the frame really yields, up to [`limits::MAX_OBJECT_PLAIN`]
/// (a frame's declared size is not trusted).
pub fn decode_object<T: DeserializeOwned>(key: &str, compressed: &[u8]) -> Result<T> {
    decode_object_max(key, compressed, limits::MAX_OBJECT_PLAIN)
}

/// [`decode_object`] with a given bound on the decompressed size.
pub(crate) fn decode_object_max<T: DeserializeOwned>(key: &str, compressed: &[u8], max: u64) -> Result<T> {
    let mut cbor = Vec::new();
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(|e| EngineError::integrity(key, format!("zstd: {e}")))?;
    decoder.take(max + 1).read_to_end(&mut cbor).map_err(|e| EngineError::integrity(key, format!("zstd: {e}")))?;
    if cbor.len() as u64 > max {
        return Err(EngineError::integrity(key, format!("decompresses to more than {max} bytes")));
    }
    ciborium::from_reader(&cbor[..]).map_err(|e| EngineError::integrity(key, format!("decoding: {e}")))
}

/// Writes a sealed object.
pub async fn put_object<T: Serialize>(store: &Store, aead: &AeadKey, key: &str, value: &T) -> Result<u64> {
    let data = seal_object(aead, key, value)?;
    let len = data.len() as u64;
    store.put(key, [Bytes::from(data)]).await?;
    Ok(len)
}

/// Reads and opens a sealed object (at most [`limits::MAX_OBJECT_BYTES`] of it).
pub async fn get_object<T: DeserializeOwned>(store: &Store, aead: &AeadKey, key: &str) -> Result<T> {
    let data = read_all_max(store, key, limits::MAX_OBJECT_BYTES).await?;
    open_object(aead, key, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        let id = Id([0xab; 32]);
        assert_eq!(pack_key(&id), format!("packs/ab/{}", "ab".repeat(32)));
        assert_eq!(id_of_key(&pack_key(&id)), Some(id));
        assert_eq!(id_of_key(&snapshot_key(&id)), Some(id));
        assert_eq!(id_of_key("config"), None);
    }

    #[test]
    fn sealed_objects_are_bound_to_their_key() {
        let k = AeadKey::new(&[1; 32]);
        let v = vec!["a".to_string(), "b".to_string()];
        let data = Bytes::from(seal_object(&k, "snapshots/x", &v).unwrap());
        let back: Vec<String> = open_object(&k, "snapshots/x", data.clone()).unwrap();
        assert_eq!(back, v);
        let e = open_object::<Vec<String>>(&k, "snapshots/y", data).unwrap_err();
        assert_eq!(e.code(), "SHMPIPE_E_INTEGRITY");
    }
}
