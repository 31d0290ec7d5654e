//! placeholder
pub mod crypto;
pub mod error;
pub mod id;
pub mod chunker;
pub mod blob;
pub mod objects;
pub mod pack;
pub mod index;
pub mod snapshot;
pub mod repo;
pub mod lock;
pub mod backup;
pub mod restore;
