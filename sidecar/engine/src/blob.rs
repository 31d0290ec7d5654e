//! Blobs: the unit stored in packs — one chunk of file data, one piece of a snapshot's tree, or
//! one chunk list of a big file. A blob's id is keyed BLAKE3 of its plaintext; its stored form
//! is an AEAD envelope (crypto.rs) of `mode (1) ‖ payload`, where mode 0 = stored as is and
//! 1 = zstd frame. The associated data is `"shmpipe/blob/v1" ‖ kind ‖ id`, so a blob cannot be
//! passed off as another blob or kind; it does not name the pack, so a future repack can move
//! sealed blobs between packs without re-encrypting them.
//!
//! Compress-or-not: zstd at the configured level (1 by default: ~0.5 GB/s/core here, most of
//! the gain of higher levels on logs) unless a quick test says the data will not compress:
//! blobs over 64 KiB first compress their first 64 KiB; if that does not shrink by ≥ 3 %, the
//! blob is stored raw (already-compressed media and archives cost one small test, not a full
//! pass). A full compression that saves < 1/64 is also thrown away.

use std::cell::RefCell;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crypto::{AeadKey, AuthFailed, NONCE_LEN, OVERHEAD};
use crate::error::{EngineError, Result};
use crate::id::BlobId;

/// Mode byte: stored as is.
const MODE_RAW: u8 = 0;
/// Mode byte: zstd frame.
const MODE_ZSTD: u8 = 1;
/// Size of the compressibility sample.
const SAMPLE: usize = 64 * 1024;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum BlobKind {
    /// A chunk of a file's content.
    Data,
    /// A piece of a snapshot's tree (a CBOR sequence of entries).
    Tree,
    /// The chunk list of a big file (CBOR array of chunk refs).
    ChunkList,
}

impl From<BlobKind> for u8 {
    fn from(k: BlobKind) -> u8 {
        match k {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
            BlobKind::ChunkList => 2,
        }
    }
}

impl TryFrom<u8> for BlobKind {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        match v {
            0 => Ok(Self::Data),
            1 => Ok(Self::Tree),
            2 => Ok(Self::ChunkList),
            other => Err(format!("unknown blob kind {other}")),
        }
    }
}

/// Compression setting for new blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// Store every blob raw.
    Off,
    /// zstd at this level (negative = zstd's fast levels), with the incompressibility test.
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Self::Zstd(1)
    }
}

/// A sealed blob, ready to be appended to a pack.
#[derive(Clone, Debug)]
pub struct SealedBlob {
    /// What it holds.
    pub kind: BlobKind,
    /// Keyed BLAKE3 of the plaintext.
    pub id: BlobId,
    /// Plaintext length.
    pub raw_len: u32,
    /// The envelope (nonce ‖ ciphertext ‖ tag).
    pub data: Bytes,
    /// Whether the payload is zstd.
    pub compressed: bool,
}

fn aad(kind: BlobKind, id: &BlobId) -> [u8; 48] {
    let mut a = [0u8; 48];
    a[..15].copy_from_slice(b"shmpipe/blob/v1");
    a[15] = kind.into();
    a[16..].copy_from_slice(&id.0);
    a
}

/// Per CPU worker thread: a zstd context (~1 MB at low levels; one per chunk would cost
/// more than compressing a small chunk) and the buffers it compresses into. The pool has
/// `workers` threads, so there are `workers` of each. The buffers are zeroed once, when they
/// grow, never per blob (a per-blob `resize` of the output bound was 3 % of a backup's CPU).
struct Zstd {
    level: i32,
    cx: zstd::bulk::Compressor<'static>,
    sample: Vec<u8>,
    out: Vec<u8>,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Zstd>> = const { RefCell::new(None) };
}

/// Compresses `src` and, if it pays, writes `header` zero bytes plus the compressed bytes
/// into `out` (replacing its content) and returns true.
fn compress_into(level: i32, src: &[u8], out: &mut Vec<u8>, header: usize) -> bool {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|z| z.level != level) {
            let Ok(cx) = zstd::bulk::Compressor::new(level) else { return false };
            *cell = Some(Zstd { level, cx, sample: Vec::new(), out: Vec::new() });
        }
        let z = cell.as_mut().expect("set above");
        if src.len() > SAMPLE {
            let bound = zstd::zstd_safe::compress_bound(SAMPLE);
            if z.sample.len() < bound {
                z.sample.resize(bound, 0);
            }
            match z.cx.compress_to_buffer(&src[..SAMPLE], &mut z.sample[..bound]) {
                Ok(n) if n <= SAMPLE - SAMPLE / 32 => {}
                _ => return false,
            }
        }
        let bound = zstd::zstd_safe::compress_bound(src.len());
        if z.out.len() < bound {
            z.out.resize(bound, 0);
        }
        let n = match z.cx.compress_to_buffer(src, &mut z.out[..bound]) {
            Ok(n) if n < src.len() - src.len() / 64 => n,
            _ => return false,
        };
        out.clear();
        out.reserve(header + n + crate::crypto::TAG_LEN);
        out.resize(header, 0);
        out.extend_from_slice(&z.out[..n]);
        // An output buffer grown for an unusually large blob (a big chunk list) is not kept.
        if z.out.len() > 8 << 20 {
            z.out = Vec::new();
        }
        true
    })
}

/// What [`seal_into`] stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealInfo {
    /// Plaintext length.
    pub raw_len: u32,
    /// Whether the payload is zstd.
    pub compressed: bool,
}

/// Seals `plain` as a blob of `kind` with id `id` (the caller computed it, usually while
/// deciding whether the blob is new) into `out`, replacing its content: the engine passes a
/// per-thread scratch buffer and copies the envelope into the pack, so sealing allocates
/// nothing in steady state.
pub fn seal_into(
    key: &AeadKey,
    kind: BlobKind,
    id: BlobId,
    plain: &[u8],
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<SealInfo> {
    let raw_len = u32::try_from(plain.len())
        .map_err(|_| EngineError::InvalidArgument { message: format!("blob of {} bytes", plain.len()) })?;
    let header = NONCE_LEN + 1;
    let compressed = match compression {
        Compression::Zstd(level) if plain.len() >= 128 => compress_into(level, plain, out, header),
        _ => false,
    };
    if !compressed {
        out.clear();
        out.reserve(plain.len() + OVERHEAD + 1);
        out.resize(header, 0);
        out.extend_from_slice(plain);
    }
    out[NONCE_LEN] = if compressed { MODE_ZSTD } else { MODE_RAW };
    key.seal_in_place(&aad(kind, &id), out);
    Ok(SealInfo { raw_len, compressed })
}

/// Seals `plain` into a new, exactly sized buffer.
pub fn seal(key: &AeadKey, kind: BlobKind, id: BlobId, plain: &[u8], compression: Compression) -> Result<SealedBlob> {
    let mut out = Vec::new();
    let info = seal_into(key, kind, id, plain, compression, &mut out)?;
    out.shrink_to_fit();
    Ok(SealedBlob { kind, id, raw_len: info.raw_len, data: Bytes::from(out), compressed: info.compressed })
}

/// Opens a sealed blob: authenticates, decompresses, checks the length and (with `id_key`)
/// that the plaintext hashes to `id`. `what` names the blob in errors.
pub fn open(
    key: &AeadKey,
    id_key: Option<&[u8; 32]>,
    kind: BlobKind,
    id: &BlobId,
    raw_len: u32,
    envelope: Bytes,
) -> Result<Bytes> {
    let what = || format!("{kind:?} blob {id}");
    let mut buf = Vec::from(envelope);
    let range = key
        .open_in_place(&aad(kind, id), &mut buf)
        .map_err(|AuthFailed| EngineError::integrity(what(), "authentication failed"))?;
    if range.is_empty() {
        return Err(EngineError::integrity(what(), "no mode byte"));
    }
    let mode = buf[range.start];
    let payload = range.start + 1..range.end;
    let plain = match mode {
        MODE_RAW => Bytes::from(buf).slice(payload),
        MODE_ZSTD => {
            let out = zstd::bulk::decompress(&buf[payload], raw_len as usize)
                .map_err(|e| EngineError::integrity(what(), format!("zstd: {e}")))?;
            Bytes::from(out)
        }
        other => return Err(EngineError::integrity(what(), format!("unknown mode {other}"))),
    };
    if plain.len() != raw_len as usize {
        return Err(EngineError::integrity(what(), format!("length {} != indexed {raw_len}", plain.len())));
    }
    if let Some(k) = id_key {
        if crate::crypto::keyed_id(k, &plain) != id.0 {
            return Err(EngineError::integrity(what(), "plaintext does not hash to its id"));
        }
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    const IDK: [u8; 32] = [9u8; 32];

    fn seal_open(data: &[u8], c: Compression) -> (SealedBlob, Bytes) {
        let key = AeadKey::new(&[3u8; 32]);
        let id = Id(crate::crypto::keyed_id(&IDK, data));
        let s = seal(&key, BlobKind::Data, id, data, c).unwrap();
        let p = open(&key, Some(&IDK), BlobKind::Data, &id, s.raw_len, s.data.clone()).unwrap();
        (s, p)
    }

    #[test]
    fn compressible_is_compressed_incompressible_is_not() {
        let text: Vec<u8> = (0..300_000u32).flat_map(|i| format!("line {i} GET /index.html 200\n").into_bytes()).collect();
        let (s, p) = seal_open(&text, Compression::Zstd(1));
        assert!(s.compressed && s.data.len() < text.len() / 3, "{} of {}", s.data.len(), text.len());
        assert_eq!(&p[..], &text[..]);

        let noise = crate::chunker::tests::noise(9, 200_000);
        let (s, p) = seal_open(&noise, Compression::Zstd(1));
        assert!(!s.compressed);
        assert_eq!(s.data.len(), noise.len() + OVERHEAD + 1);
        assert_eq!(&p[..], &noise[..]);

        let (s, p) = seal_open(&text, Compression::Off);
        assert!(!s.compressed);
        assert_eq!(&p[..], &text[..]);

        for c in [Compression::Zstd(-5), Compression::Zstd(3)] {
            let (s, p) = seal_open(&text, c);
            assert!(s.compressed);
            assert_eq!(&p[..], &text[..]);
        }
        let (s, p) = seal_open(b"", Compression::Zstd(1));
        assert_eq!((s.raw_len, p.len()), (0, 0));
    }

    #[test]
    fn tampering_wrong_kind_wrong_id_and_wrong_length_fail() {
        let key = AeadKey::new(&[3u8; 32]);
        let data = b"some blob content that is long enough to be compressed maybe maybe maybe".repeat(10);
        let id = Id(crate::crypto::keyed_id(&IDK, &data));
        let s = seal(&key, BlobKind::Data, id, &data, Compression::default()).unwrap();
        let ok = |kind, id: &Id, len, env: Bytes| open(&key, Some(&IDK), kind, id, len, env);
        assert!(ok(BlobKind::Data, &id, s.raw_len, s.data.clone()).is_ok());
        let mut bad = s.data.to_vec();
        bad[20] ^= 1;
        let e = ok(BlobKind::Data, &id, s.raw_len, bad.into()).unwrap_err();
        assert_eq!(e.code(), "SHMPIPE_E_INTEGRITY");
        assert!(ok(BlobKind::Tree, &id, s.raw_len, s.data.clone()).is_err());
        assert!(ok(BlobKind::Data, &Id([1; 32]), s.raw_len, s.data.clone()).is_err());
        assert!(ok(BlobKind::Data, &id, s.raw_len + 1, s.data.clone()).is_err());
        // Sealed under the right AAD but with a wrong id claim: caught by the hash check.
        let liar = seal(&key, BlobKind::Data, Id([5; 32]), &data, Compression::Off).unwrap();
        let e = ok(BlobKind::Data, &Id([5; 32]), liar.raw_len, liar.data).unwrap_err();
        assert!(e.to_string().contains("hash"), "{e}");
    }
}
