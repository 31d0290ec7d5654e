//! `shmpipe-sidecar`: serves shared-memory sessions (SPEC.md in `shm-protocol/`) to local
//! agents over a Unix control socket. Three rooms, and a leaf they share:
//!
//! - [`peer`], **the trust boundary**: the only code that touches memory an agent can write —
//!   segments, doorbells, the slot table that says which slot memory the sidecar may touch,
//!   and slot memory leased to the store.
//! - **The data path**, read top to bottom: [`dispatch`] (a session's data-plane thread: rings
//!   → validated requests → completions) → [`ops`] (what each op does: core, store, backup,
//!   and the repository verbs run as jobs) →
//!   the store and the backup engine (`shmpipe-store`, `shmpipe-engine`).
//! - [`service`]: configuration, the control socket and its handshake, startup and shutdown,
//!   the admin endpoint and its metrics, and the UDS baseline transport.
//! - [`stats`]: counters and the STATS document, written by every room.
//!
//! Dependencies point one way: `service` → `dispatch` → `ops` → `peer` → `stats`.

pub mod dispatch;
pub mod ops;
pub mod peer;
pub mod service;
pub mod stats;
