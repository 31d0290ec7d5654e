//! What each op does once the dispatcher has validated its request and leased its slot
//! (SPEC §7). Wire-agnostic where it can be: the dispatcher turns results into completions.
//!
//! - [`core`]: NOP, ECHO, STATS, DELAY (SPEC §7.1).
//! - [`store`]: the object-store ops' bodies (SPEC §7.2; `dispatch::store` is their glue).
//! - [`backup`]: the backup-engine ops' per-session handles and semantics over
//!   `shmpipe-engine` (SPEC §7.3; bytes in, bytes out).
//! - [`jobs`]: the repository verbs run as jobs (JOB_START / JOB_NEXT, SPEC §7.3), one module
//!   each; `backup` holds their handles.
//! - [`error`]: what a failed op or job tells the agent.

pub mod backup;
pub mod core;
pub mod error;
pub mod jobs;
pub mod store;
