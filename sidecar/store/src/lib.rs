//! shmpipe-store: the sidecar's store layer. Objects live in a `file://` directory (the
//! embedded default), an `s3://` bucket (AWS or any S3-compatible server) or `memory://`
//! (tests), all through the `object_store` crate. The sidecar's store ops (PUT, OPEN_WRITE /
//! WRITE / COMMIT / ABORT, OPEN_READ / READ, STAT, LIST, DELETE) map onto [`Store`],
//! [`Writer`] and [`Reader`]; their failures onto [`StoreError::code`] (SPEC §8 names).
//!
//! Every object is `data ‖ 32-byte trailer` with the data's CRC-32C ([`trailer`]); full reads
//! verify it. Payload comes in as `Bytes` — the sidecar wraps slot leases with
//! `Bytes::from_owner` — and is not copied on its way to file:// or S3 (see [`store`]).
//! This crate knows nothing of shared memory or the wire protocol.

mod backend;
pub mod checksum;
pub mod config;
pub mod error;
pub mod key;
pub mod ratelimit;
pub mod reader;
mod staging;
pub mod store;
pub mod trailer;
pub mod transient;
pub mod writer;

pub use checksum::{Checksum, Crc32c};
pub use config::{RetryOptions, StoreConfig, StoreOptions, StoreUrl};
pub use error::StoreError;
pub use reader::{Filled, Reader};
pub use store::{ListPage, ObjectInfo, Store};
pub use writer::Writer;

#[cfg(test)]
mod tests {
    /// The sidecar moves these across tasks and threads.
    #[test]
    fn handles_are_send() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<super::Store>();
        sync::<super::Store>();
        send::<super::Writer>();
        send::<super::Reader>();
        send::<super::StoreError>();
        sync::<super::StoreError>();
    }
}
