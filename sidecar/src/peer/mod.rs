//! The trust boundary: the only code that touches memory an agent can write (SPEC §9). An
//! agent may be buggy, racing or hostile; nothing here trusts what it reads from a segment.
//!
//! - [`segment`]: creating, mapping, unlinking and sweeping a session's shared memory.
//! - [`doorbell`]: the eventfds both sides ring.
//! - [`slots`]: the slot table (SPEC §9 ownership) and the [`slots::Lease`] /
//!   [`slots::SlotRange`] tokens naming slot memory the sidecar may touch.
//! - [`lease`]: slot memory leased to the store, returned when dropped; small arguments
//!   copied out of slots and small documents written into them.

pub mod doorbell;
pub mod lease;
pub mod segment;
pub mod slots;
