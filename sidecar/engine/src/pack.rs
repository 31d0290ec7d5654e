//! Pack files: many sealed blobs in one object (16 MiB by default), so a backup makes few,
//! large PUTs. Layout:
//!
//! ```text
//! blob_0 ‖ blob_1 ‖ … ‖ blob_n-1 ‖ header ‖ header_len: u32 LE ‖ "SHMPPK01"
//! ```
//!
//! Each blob is its own AEAD envelope (blob.rs). `header` is an envelope (associated data
//! `"shmpipe/pack-header/v1" ‖ pack id`) of a CBOR `PackHeader`: the blob table — kind, id,
//! offset, stored length, plaintext length of every blob. The table is also copied into the
//! index, so normal operation never reads it; it makes every pack self-describing, so indexes
//! can be rebuilt from packs and `check --read-data` can compare the two.
//!
//! The pack is assembled in one buffer (the engine's are pooled and reused; blobs are sealed
//! into a per-worker scratch and copied in), handed to the store as one `Bytes`.

use serde::{Deserialize, Serialize};

use crate::blob::{BlobKind, SealedBlob};
use crate::crypto::AeadKey;
use crate::error::{EngineError, Result};
use crate::id::{BlobId, PackId};
use crate::limits;

/// Last 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"SHMPPK01";
/// `header_len` + magic.
pub const TAIL_LEN: usize = 12;

/// One row of a pack's blob table (also the index's row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// What the blob holds.
    #[serde(rename = "k")]
    pub kind: BlobKind,
    /// Keyed BLAKE3 of the plaintext.
    #[serde(rename = "i")]
    pub id: BlobId,
    /// Offset of the envelope in the pack.
    #[serde(rename = "o")]
    pub offset: u32,
    /// Length of the envelope.
    #[serde(rename = "l")]
    pub length: u32,
    /// Plaintext length.
    #[serde(rename = "r")]
    pub raw_len: u32,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PackHeader {
    pub(crate) v: u32,
    pub(crate) blobs: Vec<BlobEntry>,
}

fn header_aad(id: &PackId) -> Vec<u8> {
    let mut a = b"shmpipe/pack-header/v1".to_vec();
    a.extend_from_slice(&id.0);
    a
}

/// Accumulates sealed blobs for one pack, copied into one buffer (a pooled one in the engine).
#[derive(Debug, Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
    raw: u64,
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// Its id (random).
    pub id: PackId,
    /// Blob envelopes, then the header and tail.
    pub data: Vec<u8>,
    /// The blob table.
    pub entries: Vec<BlobEntry>,
    /// Total size (data bytes of the object).
    pub size: u64,
    /// Plaintext bytes of the blobs in it.
    pub raw_bytes: u64,
}

impl PackBuilder {
    /// A builder writing into `buf` (cleared).
    pub fn with_buf(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self { buf, entries: Vec::new(), raw: 0 }
    }

    /// Bytes of blobs so far.
    pub fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Blobs so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True with no blob.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a sealed blob (its envelope bytes are copied).
    pub fn add_sealed(&mut self, kind: BlobKind, id: BlobId, raw_len: u32, envelope: &[u8]) {
        self.entries.push(BlobEntry { kind, id, offset: self.buf.len() as u32, length: envelope.len() as u32, raw_len });
        self.raw += u64::from(raw_len);
        self.buf.extend_from_slice(envelope);
    }

    /// Appends a blob.
    pub fn add(&mut self, blob: &SealedBlob) {
        self.add_sealed(blob.kind, blob.id, blob.raw_len, &blob.data);
    }

    /// Seals the header and returns the pack.
    pub fn finish(mut self, aead: &AeadKey) -> Result<FinishedPack> {
        let id = PackId::random();
        let mut cbor = Vec::new();
        ciborium::into_writer(&PackHeader { v: 1, blobs: self.entries.clone() }, &mut cbor)
            .map_err(|e| EngineError::internal(format!("pack header: {e}")))?;
        let header = aead.seal(&header_aad(&id), &cbor);
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(PACK_MAGIC);
        let size = self.buf.len() as u64;
        Ok(FinishedPack { id, data: self.buf, entries: self.entries, size, raw_bytes: self.raw })
    }
}

/// The header's byte range in a pack of `pack_size` bytes, from the pack's last 12 bytes.
pub fn header_range(tail: &[u8], pack_size: u64, what: &str) -> Result<std::ops::Range<u64>> {
    if tail.len() != TAIL_LEN || &tail[4..] != PACK_MAGIC {
        return Err(EngineError::integrity(what, "not a pack (bad magic)"));
    }
    let len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    let Some(end) = pack_size.checked_sub(TAIL_LEN as u64) else {
        return Err(EngineError::integrity(what, "shorter than a pack tail"));
    };
    if len > end {
        return Err(EngineError::integrity(what, "header length past the start"));
    }
    if len > limits::MAX_PACK_HEADER {
        return Err(EngineError::integrity(what, format!("header of {len} bytes (at most {})", limits::MAX_PACK_HEADER)));
    }
    Ok(end - len..end)
}

/// Opens a pack header and checks that the blob table tiles the data area.
pub fn open_header(aead: &AeadKey, id: &PackId, header: &[u8], header_start: u64, what: &str) -> Result<Vec<BlobEntry>> {
    let plain = aead.open(&header_aad(id), header).map_err(|_| EngineError::integrity(what, "pack header authentication failed"))?;
    decode_header(&plain, header_start, what)
}

/// Decodes an authenticated header's CBOR and checks its table (limits.rs): every row
/// possible, the rows tiling the data area up to `header_start`.
pub fn decode_header(plain: &[u8], header_start: u64, what: &str) -> Result<Vec<BlobEntry>> {
    let h: PackHeader = ciborium::from_reader(plain).map_err(|e| EngineError::integrity(what, format!("pack header: {e}")))?;
    if h.v != 1 {
        return Err(EngineError::integrity(what, format!("pack header version {}", h.v)));
    }
    if let Some(why) = limits::tiling_problem(&h.blobs, header_start) {
        return Err(EngineError::integrity(what, why));
    }
    Ok(h.blobs)
}

/// Parses a whole pack's blob table from its bytes.
pub fn parse_pack(aead: &AeadKey, id: &PackId, data: &[u8], what: &str) -> Result<Vec<BlobEntry>> {
    if data.len() < TAIL_LEN {
        return Err(EngineError::integrity(what, "shorter than a pack tail"));
    }
    let r = header_range(&data[data.len() - TAIL_LEN..], data.len() as u64, what)?;
    open_header(aead, id, &data[r.start as usize..r.end as usize], r.start, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{self, Compression};
    use crate::id::Id;

    #[test]
    fn build_and_parse() {
        let key = AeadKey::new(&[4; 32]);
        let mut b = PackBuilder::default();
        for i in 0..5u8 {
            let data = vec![i; 1000 * usize::from(i)];
            let id = Id(crate::crypto::keyed_id(&[0; 32], &data));
            b.add(&blob::seal(&key, BlobKind::Data, id, &data, Compression::Off).unwrap());
        }
        let p = b.finish(&key).unwrap();
        let bytes = p.data.clone();
        assert_eq!(bytes.len() as u64, p.size);
        let table = parse_pack(&key, &p.id, &bytes, "p").unwrap();
        assert_eq!(table, p.entries);
        for e in &table {
            let env = bytes::Bytes::copy_from_slice(&bytes[e.offset as usize..(e.offset + e.length) as usize]);
            let plain = blob::open(&key, Some(&[0; 32]), e.kind, &e.id, e.raw_len, env).unwrap();
            assert_eq!(plain.len(), e.raw_len as usize);
        }
        // Wrong pack id (header bound to its pack), truncation, damaged header.
        assert!(parse_pack(&key, &Id([0; 32]), &bytes, "p").is_err());
        assert!(parse_pack(&key, &p.id, &bytes[1..], "p").is_err());
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(parse_pack(&key, &p.id, &bad, "p").is_err());
    }
}
