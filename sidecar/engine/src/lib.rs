//! placeholder
pub mod crypto;
pub mod error;
pub mod id;
