//! The service around the data path: how the sidecar is configured, reached, observed and
//! stopped. Nothing here touches a segment's memory.
//!
//! - [`config`]: flags and `SHMPIPE_*` environment, validated once.
//! - [`server`]: startup (sweep, bind) and the shutdown sequence; [`shutdown`]: its phases.
//! - [`control`]: listener, peer credentials, handshake with fd passing, session lifetime.
//! - [`wire`]: control-socket frames and messages.
//! - [`admin`]: the HTTP endpoint for probes (`/live`, `/ready`) and [`metrics`] (`/metrics`);
//!   [`store_probe`]: the store half of `/ready`.
//! - [`baseline`]: the UDS comparison transport.

pub mod admin;
pub mod baseline;
pub mod config;
pub mod control;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod store_probe;
pub mod wire;
