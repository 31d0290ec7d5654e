//! `shmpipe-sidecar`: serves shared-memory sessions (SPEC.md in `shm-protocol/`) to local
//! agents over a Unix control socket. One concept per module:
//!
//! - [`config`]: flags and `SHMPIPE_*` environment, validated once.
//! - [`server`]: startup (sweep, bind) and the shutdown sequence; [`shutdown`]: its phases.
//! - [`control`]: listener, peer credentials, handshake with fd passing, session lifetime.
//! - [`wire`]: control-socket frames and messages.
//! - [`segment`]: creating, mapping, unlinking and sweeping segments.
//! - [`session`]: a client's slot table and counters; [`dispatcher`]: its data-plane thread;
//!   [`ops`]: what each op does; [`doorbell`]: eventfds.
//! - [`stats`]: counters and the STATS document; [`baseline`]: the UDS comparison transport.
//! - [`admin`]: the HTTP endpoint for probes (`/live`, `/ready`) and [`metrics`] (`/metrics`).
//! - [`store_ops`]: the object-store ops' bodies (the dispatcher's `store` child module is
//!   their glue); [`lease`]: slot memory leased to the store, returned when dropped;
//!   [`store_probe`]: the store half of `/ready`.
//! - [`backup_ops`]: the backup-engine ops' per-session handles and semantics over
//!   `shmpipe-engine` (wire-agnostic: bytes in, bytes out); [`jobs`]: the repository verbs run
//!   as jobs (JOB_START / JOB_NEXT).

pub mod admin;
pub mod backup_ops;
pub mod baseline;
pub mod config;
pub mod control;
pub mod dispatcher;
pub mod doorbell;
pub mod jobs;
pub mod lease;
pub mod metrics;
pub mod ops;
pub mod segment;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stats;
pub mod store_ops;
pub mod store_probe;
pub mod wire;
