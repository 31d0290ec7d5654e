//! The failure of an op or job as the agent sees it: a wire code (SPEC §8 names) and a
//! message, which the dispatcher writes into the request's slot (SPEC §7.2, error messages).

use shmpipe_engine::EngineError;

pub const CODE_INVALID_HANDLE: &str = "SHMPIPE_E_INVALID_HANDLE";
pub const CODE_BUSY: &str = "SHMPIPE_E_BUSY";
pub const CODE_MALFORMED: &str = "SHMPIPE_E_MALFORMED";
pub const CODE_OUT_OF_RANGE: &str = "SHMPIPE_E_OUT_OF_RANGE";

/// A failed backup op: a wire code (SPEC §8 names) and a message for the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub code: &'static str,
    pub message: String,
}

impl OpError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(CODE_MALFORMED, message)
    }
}

impl From<EngineError> for OpError {
    fn from(e: EngineError) -> Self {
        Self { code: e.code(), message: e.to_string() }
    }
}

pub type OpResult<T> = std::result::Result<T, OpError>;
