//! The object checksum: CRC-32C (Castagnoli) of an object's data bytes, computed by the
//! sidecar incrementally as chunks pass through it (upload: as slots are handed in; download:
//! as bytes land), reading each byte once, in place.
//!
//! Why CRC-32C and not BLAKE3: it is the checksum the rest of shmpipe already speaks (SPEC's
//! ECHO, the agent's `checksum`), it runs at memory speed on SSE4.2/ARMv8 CRC instructions (a
//! 2-core box must not spend a core hashing a backup stream), it is one of S3's native
//! checksum algorithms, and CRCs combine (`crc32c_combine`) if per-part values are ever
//! wanted. What it is not: a cryptographic hash. It catches accidental corruption (every
//! burst up to 32 bits, any other random damage with probability 1 - 2^-32), not tampering;
//! the trailer has an algorithm byte so a stronger hash can be added as a new version.

use std::fmt;

/// A finished CRC-32C value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Checksum(pub u32);

impl Checksum {
    /// The raw CRC-32C value (what the agent sees as `checksum`).
    pub fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crc32c:{:08x}", self.0)
    }
}

/// Running CRC-32C over a sequence of chunks, plus the number of bytes seen.
#[derive(Clone, Debug, Default)]
pub struct Crc32c {
    crc: u32,
    len: u64,
}

impl Crc32c {
    /// A checksum over no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data` (read in place; nothing is copied).
    pub fn update(&mut self, data: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The checksum of everything fed so far (the state is kept; more may be fed).
    pub fn finish(&self) -> Checksum {
        Checksum(self.crc)
    }
}

/// CRC-32C of one buffer.
pub fn crc32c(data: &[u8]) -> Checksum {
    Checksum(crc32c::crc32c(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros → 0x8a9136aa; "123456789" → 0xe3069283.
        assert_eq!(crc32c(&[0u8; 32]).value(), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789").value(), 0xe306_9283);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for split in [0, 1, 63, 4096, 9_999, 10_000] {
            let mut c = Crc32c::new();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.finish(), crc32c(&data), "split at {split}");
            assert_eq!(c.len(), data.len() as u64);
        }
    }

    #[test]
    fn display_is_hex() {
        assert_eq!(Checksum(0xab).to_string(), "crc32c:000000ab");
    }
}
