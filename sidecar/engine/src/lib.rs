//! placeholder
pub mod crypto;
pub mod error;
pub mod id;
pub mod chunker;
pub mod blob;
