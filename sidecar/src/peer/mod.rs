//! The trust boundary: the only code that touches memory an agent can write (SPEC §9, §12).
//! An agent may be buggy, racing or hostile; nothing here trusts what it reads from a segment,
//! and nothing outside this module holds a pointer or a reference into one.
//!
//! - [`segment`]: creating, sealing and mapping a session's shared memory; sweeping old names.
//! - [`memory`]: the only reads and writes of slot bytes — opaque copies between a slot and
//!   private memory, never a reference into the segment.
//! - [`private`]: the pooled private buffers those copies land in (copy once, then trust).
//! - [`lease`]: slot ranges leased to the store (a consumed upload, a read stream's buffer),
//!   returned to the pool when dropped.
//! - [`slots`]: the slot table (SPEC §9 ownership) and the [`slots::Lease`] /
//!   [`slots::SlotRange`] tokens naming slot memory the sidecar may touch.
//! - [`doorbell`]: the eventfds both sides ring.

pub mod doorbell;
pub mod lease;
pub mod memory;
pub mod private;
pub mod segment;
pub mod slots;
