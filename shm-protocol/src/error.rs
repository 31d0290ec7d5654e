//! Wire error codes carried in a completion's `status` (SPEC.md §8), and their stable names
//! (the TS side's `ShmpipeError.code`).

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    UnknownOpcode = -1,
    Malformed = -2,
    InvalidSlot = -3,
    StaleSlot = -4,
    OutOfRange = -5,
    ShuttingDown = -6,
    Cancelled = -7,
    Busy = -8,
    NotFound = -9,
    Store = -10,
    Integrity = -11,
    Internal = -12,
    InvalidHandle = -13,
    WrongPassword = -14,
    NotARepository = -15,
    RepoExists = -16,
    Locked = -17,
    RepoVersion = -18,
    // -19..-24: reserved for other wave-2 helpers (prune, format).
    RepoLimit = -25,
    LockLost = -26,
    Refused = -27,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 21] = [
        Self::UnknownOpcode,
        Self::Malformed,
        Self::InvalidSlot,
        Self::StaleSlot,
        Self::OutOfRange,
        Self::ShuttingDown,
        Self::Cancelled,
        Self::Busy,
        Self::NotFound,
        Self::Store,
        Self::Integrity,
        Self::Internal,
        Self::InvalidHandle,
        Self::WrongPassword,
        Self::NotARepository,
        Self::RepoExists,
        Self::Locked,
        Self::RepoVersion,
        Self::RepoLimit,
        Self::LockLost,
        Self::Refused,
    ];

    pub fn status(self) -> i32 {
        self as i32
    }

    /// Position in [`ErrorCode::ALL`] (codes have gaps: numbers reserved for other features).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).expect("every code is in ALL")
    }

    pub fn from_status(status: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.status() == status)
    }

    /// The code with this stable name (engine failures carry names, not numbers).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The stable string code; never renamed once released.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownOpcode => "SHMPIPE_E_UNKNOWN_OPCODE",
            Self::Malformed => "SHMPIPE_E_MALFORMED",
            Self::InvalidSlot => "SHMPIPE_E_INVALID_SLOT",
            Self::StaleSlot => "SHMPIPE_E_STALE_SLOT",
            Self::OutOfRange => "SHMPIPE_E_OUT_OF_RANGE",
            Self::ShuttingDown => "SHMPIPE_E_SHUTTING_DOWN",
            Self::Cancelled => "SHMPIPE_E_CANCELLED",
            Self::Busy => "SHMPIPE_E_BUSY",
            Self::NotFound => "SHMPIPE_E_NOT_FOUND",
            Self::Store => "SHMPIPE_E_STORE",
            Self::Integrity => "SHMPIPE_E_INTEGRITY",
            Self::Internal => "SHMPIPE_E_INTERNAL",
            Self::InvalidHandle => "SHMPIPE_E_INVALID_HANDLE",
            Self::WrongPassword => "SHMPIPE_E_WRONG_PASSWORD",
            Self::NotARepository => "SHMPIPE_E_NOT_A_REPOSITORY",
            Self::RepoExists => "SHMPIPE_E_REPO_EXISTS",
            Self::Locked => "SHMPIPE_E_LOCKED",
            Self::RepoVersion => "SHMPIPE_E_REPO_VERSION",
            Self::RepoLimit => "SHMPIPE_E_REPO_LIMIT",
            Self::LockLost => "SHMPIPE_E_LOCK_LOST",
            Self::Refused => "SHMPIPE_E_REFUSED",
        }
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_negative_and_round_trip() {
        for (i, c) in ErrorCode::ALL.iter().enumerate().take(18) {
            assert_eq!(c.status(), -(i as i32) - 1);
        }
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(c.status() < 0 && seen.insert(c.status()), "{c}");
            assert_eq!(ErrorCode::from_status(c.status()), Some(c));
            assert!(c.name().starts_with("SHMPIPE_E_"));
        }
        assert_eq!(ErrorCode::from_status(0), None);
        assert_eq!(ErrorCode::from_status(-19), None);
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(c.name()), Some(c));
        }
        assert_eq!(ErrorCode::from_name("SHMPIPE_E_NOPE"), None);
    }
}
