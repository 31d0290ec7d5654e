//! `shm-protocol`: the normative shmpipe shared-memory protocol (see `SPEC.md` beside this
//! crate) — segment layout, SPSC rings with the NEED_WAKEUP handshake, entry codec, error codes.
//!
//! It sits under both sides: the sidecar builds on it, and the TS client mirrors it (checked
//! by the shared vectors in `vectors/`). It does no I/O, creates no threads, maps nothing.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod entry;
pub mod error;
pub mod layout;
pub mod ring;
pub mod sync;

#[cfg(not(loom))]
pub mod shm;

#[cfg(loom)]
pub mod loom_ring;

pub use entry::{Completion, Grant, Opcode, RawSubmission, SlotRef, Submission};
pub use error::ErrorCode;
pub use layout::{Layout, LayoutError, Params, SessionState};
pub use ring::{Consumer, Producer, RingError, RingStorage};
