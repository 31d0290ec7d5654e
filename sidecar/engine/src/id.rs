//! `Id`: the 32-byte names of everything in a repository. Blob ids (chunks, tree blobs, chunk
//! lists) are keyed BLAKE3 of the plaintext (content addressed: equal content, equal id, so
//! dedup is a lookup). Pack, index, snapshot and lock ids are random (nothing to address by
//! content, and random names make concurrent writers collision-free without coordination).
//!
//! Serialized as a CBOR/serde byte string (32 bytes, not an array of 32 integers) and shown as
//! 64 lowercase hex digits.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{EngineError, Result};

/// A 32-byte identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

/// A blob's id: keyed BLAKE3 of its plaintext.
pub type BlobId = Id;
/// A pack's id (random).
pub type PackId = Id;
/// A snapshot's id (random).
pub type SnapshotId = Id;

impl Id {
    /// A fresh random id from the system RNG.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        crate::crypto::fill_random(&mut b);
        Self(b)
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|e| EngineError::InvalidArgument { message: format!("bad id {s:?}: {e}") })?;
        Ok(Self(b))
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::str::FromStr for Id {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_hex(s)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Id, E> {
                let b: [u8; 32] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Id(b))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> std::result::Result<Id, E> {
                self.visit_bytes(&v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Id, E> {
                Id::from_hex(v).map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Id, A::Error> {
                let mut b = [0u8; 32];
                for (i, slot) in b.iter_mut().enumerate() {
                    *slot = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(de::Error::invalid_length(33, &self));
                }
                Ok(Id(b))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_cbor_is_bytes() {
        let id = Id::random();
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        let mut buf = Vec::new();
        ciborium::into_writer(&id, &mut buf).unwrap();
        assert_eq!(buf.len(), 34, "0x58 0x20 + 32 bytes");
        let back: Id = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!(back, id);
        assert!(Id::from_hex("zz").is_err());
        assert_ne!(Id::random(), Id::random());
    }
}
