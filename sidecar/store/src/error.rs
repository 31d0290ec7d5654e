//! `StoreError`: every failure of the store layer as one enum, each with the SPEC §8 wire
//! code the sidecar completes the request with (`code()`) and the store's own message.
//!
//! Mapping from object_store: `NotFound` → NotFound; `InvalidPath` → InvalidKey; everything
//! else → Store, whose `transient` flag says the failure was of the kind object_store already
//! retried (connection refused/reset, timeouts, 5xx, 429) and gave up on after the configured
//! retries — worth retrying later as a whole (the server may come back), as opposed to
//! permission, precondition or malformed-request failures that will fail again. The flag is
//! decided by type, in [`crate::transient`].

use crate::checksum::Checksum;

/// SPEC §8 name for "no such object".
pub const CODE_NOT_FOUND: &str = "SHMPIPE_E_NOT_FOUND";
/// SPEC §8 name for "the store failed".
pub const CODE_STORE: &str = "SHMPIPE_E_STORE";
/// SPEC §8 name for "checksum mismatch".
pub const CODE_INTEGRITY: &str = "SHMPIPE_E_INTEGRITY";
/// SPEC §8 name for "an argument out of its range".
pub const CODE_MALFORMED: &str = "SHMPIPE_E_MALFORMED";

/// A store-layer failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object under this key.
    #[error("object {key:?} not found: {message}")]
    NotFound { key: String, message: String },
    /// The data read back does not match the checksum stored with it.
    #[error("object {key:?} failed its integrity check: stored {expected}, data has {actual}")]
    Integrity { key: String, expected: Checksum, actual: Checksum },
    /// The object's framing is damaged (missing/garbled trailer, wrong length): it cannot even
    /// be checked. Same wire code as `Integrity`.
    #[error("object {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// The key (or prefix, or page token) is not a valid object name.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A read range outside the object's data, or otherwise invalid.
    #[error("invalid range {start}..{end} for object {key:?} of {size} data bytes")]
    InvalidRange { key: String, start: u64, end: u64, size: u64 },
    /// The store failed. `transient`: the store was unreachable, timed out or answered 5xx/429
    /// through all configured retries.
    #[error("store error{}: {message}", if *transient { " (transient)" } else { "" })]
    Store { message: String, transient: bool },
    /// Another argument out of its range (e.g. a LIST page size).
    #[error("invalid argument: {message}")]
    InvalidArgument { message: String },
    /// The upload was aborted (after an earlier failure of the same writer); nothing of it
    /// is visible.
    #[error("upload of {key:?} was aborted: {reason}")]
    Aborted { key: String, reason: String },
    /// Bad store URL or options.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A create-only PUT ([`crate::Store::put_if_absent`]) found an object under the key.
    #[error("object {key:?} already exists")]
    AlreadyExists { key: String },
}

impl StoreError {
    /// The SPEC §8 error name the sidecar reports for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => CODE_NOT_FOUND,
            Self::Integrity { .. } | Self::Corrupt { .. } => CODE_INTEGRITY,
            Self::InvalidKey { .. }
            | Self::InvalidRange { .. }
            | Self::InvalidArgument { .. }
            | Self::Config(_) => CODE_MALFORMED,
            Self::Store { .. } | Self::Aborted { .. } | Self::AlreadyExists { .. } => CODE_STORE,
        }
    }

    /// True for store failures that may succeed if the whole operation is tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store { transient: true, .. })
    }

    /// Maps an object_store error for an operation on `key`.
    pub(crate) fn from_object_store(err: object_store::Error, key: &str) -> Self {
        match err {
            object_store::Error::NotFound { source, .. } => Self::NotFound {
                key: key.to_owned(),
                message: source.to_string(),
            },
            object_store::Error::InvalidPath { source } => Self::InvalidKey {
                key: key.to_owned(),
                reason: source.to_string(),
            },
            object_store::Error::AlreadyExists { .. } => Self::AlreadyExists { key: key.to_owned() },
            other => Self::Store {
                transient: crate::transient::is_transient(&other),
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Store { message: message.into(), transient: false }
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("store task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_spec_names() {
        let k = || "k".to_string();
        assert_eq!(StoreError::NotFound { key: k(), message: String::new() }.code(), "SHMPIPE_E_NOT_FOUND");
        assert_eq!(
            StoreError::Integrity { key: k(), expected: Checksum(1), actual: Checksum(2) }.code(),
            "SHMPIPE_E_INTEGRITY"
        );
        assert_eq!(StoreError::Corrupt { key: k(), reason: String::new() }.code(), "SHMPIPE_E_INTEGRITY");
        assert_eq!(StoreError::InvalidKey { key: k(), reason: String::new() }.code(), "SHMPIPE_E_MALFORMED");
        assert_eq!(
            StoreError::InvalidRange { key: k(), start: 0, end: 1, size: 0 }.code(),
            "SHMPIPE_E_MALFORMED"
        );
        assert_eq!(StoreError::Store { message: String::new(), transient: true }.code(), "SHMPIPE_E_STORE");
        assert_eq!(StoreError::Aborted { key: k(), reason: String::new() }.code(), "SHMPIPE_E_STORE");
    }

    #[test]
    fn maps_object_store_errors() {
        let nf = object_store::Error::NotFound { path: "a".into(), source: "gone".into() };
        assert!(matches!(StoreError::from_object_store(nf, "a"), StoreError::NotFound { .. }));

        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        let e = StoreError::from_object_store(refused, "a");
        assert!(e.is_transient(), "{e}");

        let denied = object_store::Error::PermissionDenied { path: "a".into(), source: "no".into() };
        let e = StoreError::from_object_store(denied, "a");
        assert!(matches!(e, StoreError::Store { transient: false, .. }), "{e}");
        assert!(e.to_string().contains("privileges"), "store message kept: {e}");

        let http = object_store::Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                object_store::client::HttpErrorKind::Connect,
                std::io::Error::other("refused"),
            )),
        };
        assert!(StoreError::from_object_store(http, "a").is_transient());
    }
}
