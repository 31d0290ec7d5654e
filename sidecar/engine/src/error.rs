//! `EngineError`: every failure of the backup engine as one enum, each with a stable string
//! code (`code()`) the sidecar reports to the agent. Store failures keep the store's own code
//! (NOT_FOUND / STORE / INTEGRITY / MALFORMED); the engine adds its own for repository-level
//! conditions (wrong password, not a repository, locked, ...).
//!
//! Crypto failures are split on purpose: an AEAD failure while unwrapping the master key means
//! the password is wrong (`WrongPassword`); an AEAD failure anywhere else means the data was
//! damaged or tampered with (`Integrity`). The two must never be confused: "wrong password"
//! on a corrupt repository would send a user hunting for a password that was right.

use shmpipe_store::StoreError;

/// The password does not unwrap the repository's master key.
pub const CODE_WRONG_PASSWORD: &str = "SHMPIPE_E_WRONG_PASSWORD";
/// No repository config at this location, or it is not ours.
pub const CODE_NOT_A_REPOSITORY: &str = "SHMPIPE_E_NOT_A_REPOSITORY";
/// `init` on a location that already holds a repository.
pub const CODE_REPO_EXISTS: &str = "SHMPIPE_E_REPO_EXISTS";
/// The repository format version is not one this engine reads.
pub const CODE_REPO_VERSION: &str = "SHMPIPE_E_REPO_VERSION";
/// Data failed authentication, its id check, or its framing.
pub const CODE_INTEGRITY: &str = "SHMPIPE_E_INTEGRITY";
/// A conflicting repository lock is held.
pub const CODE_LOCKED: &str = "SHMPIPE_E_LOCKED";
/// A repository parameter (Argon2 cost, ...) outside the bounds this engine accepts.
pub const CODE_REPO_LIMIT: &str = "SHMPIPE_E_REPO_LIMIT";
/// A held lock could not be refreshed in time, or was removed by someone else.
pub const CODE_LOCK_LOST: &str = "SHMPIPE_E_LOCK_LOST";
/// An operation refused because it would leave the repository unusable (removing the last
/// key or the key in use).
pub const CODE_REFUSED: &str = "SHMPIPE_E_REFUSED";
/// The store failed.
pub const CODE_STORE: &str = "SHMPIPE_E_STORE";
/// A snapshot, blob or object does not exist.
pub const CODE_NOT_FOUND: &str = "SHMPIPE_E_NOT_FOUND";
/// A caller's argument is out of range / malformed.
pub const CODE_MALFORMED: &str = "SHMPIPE_E_MALFORMED";
/// The session was aborted, already failed, or is closed.
pub const CODE_CANCELLED: &str = "SHMPIPE_E_CANCELLED";
/// An engine bug (a worker panicked).
pub const CODE_INTERNAL: &str = "SHMPIPE_E_INTERNAL";

/// An engine failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The password does not unwrap the master key (authentication of the key slot failed).
    #[error("wrong password")]
    WrongPassword,
    /// There is no repository config, or it is not a shmpipe repository.
    #[error("not a shmpipe repository: {reason}")]
    NotARepository { reason: String },
    /// `init` found an existing repository config.
    #[error("a repository already exists here")]
    RepositoryExists,
    /// The config names a format version this engine does not read.
    #[error("repository format version {found} is not supported (this engine reads versions 1 to {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// Authentication, id verification or framing failed for `what` (an object key or blob id).
    #[error("integrity error in {what}: {reason}")]
    Integrity { what: String, reason: String },
    /// A conflicting lock is held.
    #[error("repository is locked: {holder}")]
    Locked { holder: String },
    /// A repository parameter outside the engine's bounds (REPOSITORY.md §Config): a hostile
    /// config must not make the engine allocate terabytes, and init refuses weak KDF costs.
    #[error("repository limit: {what}")]
    RepoLimit { what: String },
    /// The repository lock `key` can no longer be trusted to be held.
    #[error("repository lock {key} lost: {reason}")]
    LockLost { key: String, reason: String },
    /// Refused: it would leave the repository unusable.
    #[error("refused: {message}")]
    Refused { message: String },
    /// `what` does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The store failed (its own error, with its own code).
    #[error("store: {0}")]
    Store(#[from] StoreArc),
    /// An argument out of its range.
    #[error("invalid argument: {message}")]
    InvalidArgument { message: String },
    /// The session is no longer usable (aborted, committed, or failed earlier: `reason`).
    #[error("session is closed: {reason}")]
    Closed { reason: String },
    /// A bug: a worker task panicked or similar.
    #[error("internal error: {message}")]
    Internal { message: String },
}

/// `StoreError` is not `Clone`; the engine shares one failure among every writer of a session,
/// so it keeps store errors behind an `Arc`.
#[derive(Debug, Clone)]
pub struct StoreArc(pub std::sync::Arc<StoreError>);

impl std::fmt::Display for StoreArc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreArc {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        Self::Store(StoreArc(std::sync::Arc::new(e)))
    }
}

impl From<tokio::task::JoinError> for EngineError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal { message: format!("engine task failed: {e}") }
    }
}

impl EngineError {
    /// The stable code the sidecar reports for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongPassword => CODE_WRONG_PASSWORD,
            Self::NotARepository { .. } => CODE_NOT_A_REPOSITORY,
            Self::RepositoryExists => CODE_REPO_EXISTS,
            Self::UnsupportedVersion { .. } => CODE_REPO_VERSION,
            Self::Integrity { .. } => CODE_INTEGRITY,
            Self::Locked { .. } => CODE_LOCKED,
            Self::NotFound { .. } => CODE_NOT_FOUND,
            Self::RepoLimit { .. } => CODE_REPO_LIMIT,
            Self::LockLost { .. } => CODE_LOCK_LOST,
            Self::Refused { .. } => CODE_REFUSED,
            Self::Store(e) => e.0.code(),
            Self::InvalidArgument { .. } => CODE_MALFORMED,
            Self::Closed { .. } => CODE_CANCELLED,
            Self::Internal { .. } => CODE_INTERNAL,
        }
    }

    /// True for failures that may go away if the whole operation is retried later (the
    /// store was unreachable through all its retries).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(e) if e.0.is_transient())
    }

    /// The object read is damaged — it failed authentication, decoding, or the store's
    /// checksum — as opposed to missing, or the store failing.
    pub fn is_damage(&self) -> bool {
        self.code() == CODE_INTEGRITY
    }

    pub(crate) fn integrity(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Integrity { what: what.into(), reason: reason.into() }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal { message: message.into() }
    }

    /// Maps a store NotFound for `what` to the engine's NotFound, other store errors as is.
    pub(crate) fn from_store_for(e: StoreError, what: &str) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::NotFound { what: what.to_owned() },
            other => other.into(),
        }
    }
}

/// Engine result.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(EngineError::WrongPassword.code(), "SHMPIPE_E_WRONG_PASSWORD");
        assert_eq!(EngineError::NotARepository { reason: String::new() }.code(), "SHMPIPE_E_NOT_A_REPOSITORY");
        assert_eq!(EngineError::integrity("x", "y").code(), "SHMPIPE_E_INTEGRITY");
        assert_eq!(EngineError::Locked { holder: String::new() }.code(), "SHMPIPE_E_LOCKED");
        assert_eq!(EngineError::NotFound { what: String::new() }.code(), "SHMPIPE_E_NOT_FOUND");
        let store: EngineError = StoreError::Store { message: "down".into(), transient: true }.into();
        assert_eq!(store.code(), "SHMPIPE_E_STORE");
        assert!(store.is_transient());
        let integ: EngineError = StoreError::Corrupt { key: "k".into(), reason: "r".into() }.into();
        assert_eq!(integ.code(), "SHMPIPE_E_INTEGRITY");
        assert_eq!(EngineError::InvalidArgument { message: String::new() }.code(), "SHMPIPE_E_MALFORMED");
        assert_eq!(EngineError::RepoLimit { what: String::new() }.code(), "SHMPIPE_E_REPO_LIMIT");
        assert_eq!(EngineError::LockLost { key: String::new(), reason: String::new() }.code(), "SHMPIPE_E_LOCK_LOST");
        assert_eq!(EngineError::Refused { message: String::new() }.code(), "SHMPIPE_E_REFUSED");
        assert_eq!(EngineError::Closed { reason: String::new() }.code(), "SHMPIPE_E_CANCELLED");
    }
}
