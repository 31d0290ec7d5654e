//! The on-store object format: `data ‖ trailer`, where the fixed 32-byte trailer carries the
//! data length and its checksum. Every backend stores it the same way.
//!
//! Why a trailer and not object metadata: object_store's `LocalFileSystem` (the embedded
//! default, `file://`) rejects custom attributes, so metadata would need a second mechanism
//! (side files) for the default backend; a trailer is one format everywhere, travels with the
//! bytes through any copy/sync tool that drops metadata, costs no HEAD on GET (it arrives at
//! the end of the same stream), and lets a multipart upload append the checksum in its last
//! part without knowing it up front. The price: the stored object is 32 bytes longer than the
//! data (STAT and LIST subtract it), and foreign tools see the trailer.
//!
//! Layout (little-endian):
//! ```text
//! offset len field
//!  0      8  data_len      bytes of data before the trailer (detects truncation/extension)
//!  8      4  checksum      CRC-32C of the data
//! 12      4  reserved      zero
//! 16      1  algorithm     1 = CRC-32C
//! 17      1  version       1
//! 18      2  trailer_len   32 (lets a later version grow the trailer)
//! 20      4  trailer_crc   CRC-32C of bytes 0..20 (the trailer checks itself)
//! 24      8  magic         "SHMPSTOR"
//! ```

use crate::checksum::{crc32c, Checksum};

/// Size of the trailer appended to every object.
pub const TRAILER_LEN: usize = 32;
/// The last 8 bytes of every object written by this crate.
pub const MAGIC: [u8; 8] = *b"SHMPSTOR";
const VERSION: u8 = 1;
const ALGORITHM_CRC32C: u8 = 1;

/// The decoded trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Bytes of data before the trailer.
    pub data_len: u64,
    /// CRC-32C of those bytes.
    pub checksum: Checksum,
}

impl Trailer {
    /// The 32 trailer bytes.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(&self.data_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.checksum.value().to_le_bytes());
        b[16] = ALGORITHM_CRC32C;
        b[17] = VERSION;
        b[18..20].copy_from_slice(&(TRAILER_LEN as u16).to_le_bytes());
        let own = crc32c(&b[0..20]).value();
        b[20..24].copy_from_slice(&own.to_le_bytes());
        b[24..32].copy_from_slice(&MAGIC);
        b
    }

    /// Parses the last [`TRAILER_LEN`] bytes of an object of `object_len` bytes. The error
    /// says why the object is not one of ours or is damaged.
    pub fn decode(bytes: &[u8], object_len: u64) -> Result<Self, String> {
        let b: &[u8; TRAILER_LEN] = bytes
            .try_into()
            .map_err(|_| format!("trailer has {} bytes, want {TRAILER_LEN}", bytes.len()))?;
        if b[24..32] != MAGIC {
            return Err("no shmpipe trailer (bad magic): not written by shmpipe, or damaged".into());
        }
        let own = u32::from_le_bytes(b[20..24].try_into().expect("4 bytes"));
        if crc32c(&b[0..20]).value() != own {
            return Err("trailer checksum mismatch".into());
        }
        if b[17] != VERSION || b[16] != ALGORITHM_CRC32C {
            return Err(format!("unsupported trailer version {} / algorithm {}", b[17], b[16]));
        }
        let tlen = u16::from_le_bytes([b[18], b[19]]);
        if usize::from(tlen) != TRAILER_LEN || b[12..16] != [0; 4] {
            return Err("malformed trailer (length or reserved bytes)".into());
        }
        let data_len = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
        let expected = object_len.checked_sub(TRAILER_LEN as u64);
        if expected != Some(data_len) {
            return Err(format!(
                "object is {object_len} bytes but its trailer records {data_len} data bytes (truncated or extended)"
            ));
        }
        let checksum = Checksum(u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")));
        Ok(Self { data_len, checksum })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Trailer { data_len: 123_456_789_012, checksum: Checksum(0xdead_beef) };
        let b = t.encode();
        assert_eq!(&b[24..], b"SHMPSTOR");
        assert_eq!(Trailer::decode(&b, 123_456_789_012 + 32), Ok(t));
    }

    #[test]
    fn rejects_damage_and_length_mismatch() {
        let t = Trailer { data_len: 10, checksum: Checksum(1) };
        let good = t.encode();
        assert!(Trailer::decode(&good, 41).unwrap_err().contains("truncated"));
        assert!(Trailer::decode(&good, 10).is_err());
        for i in 0..TRAILER_LEN {
            let mut b = good;
            b[i] ^= 0x01;
            assert!(Trailer::decode(&b, 42).is_err(), "flip in byte {i} not detected");
        }
        assert!(Trailer::decode(&good[1..], 42).is_err());
    }
}
