//! Graceful shutdown (SIGTERM/SIGINT): the phases every task watches, and the sequence that
//! moves through them. Like mini-redis, the signal is passed in to whoever needs it rather
//! than read from a global.
//!
//! 1. `draining`: stop accepting; sessions send `{"type":"draining"}`, set header state
//!    DRAINING, and new submissions complete with SHUTTING_DOWN; async ops keep running.
//! 2. up to `SHMPIPE_SHUTDOWN_GRACE` (or until no async op is in flight, or a second signal),
//! 3. `closing`: remaining async ops complete with SHUTTING_DOWN, sessions post what is left
//!    and close; then the caller removes the socket files and exits 0.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stats::GlobalStats;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub draining: CancellationToken,
    pub closing: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
}

/// SIGTERM and SIGINT; installed before the sidecar starts listening, so a signal is never
/// missed between "listening" and "waiting".
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Waits for a signal, then runs phases 1–3. Returns when `closing` has been cancelled.
pub async fn on_signal(signals: &mut Signals, shutdown: &Shutdown, global: &GlobalStats, grace: Duration) {
    let which = signals.recv().await;
    tracing::info!(signal = which, grace_s = grace.as_secs_f64(), "draining");
    shutdown.draining.cancel();
    let deadline = Instant::now() + grace;
    loop {
        let in_flight = global.in_flight_async.load(Ordering::Relaxed);
        if in_flight == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(in_flight, "grace period over; cancelling the rest");
                break;
            }
            which = signals.recv() => {
                tracing::info!(signal = which, in_flight, "second signal; cancelling the rest");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    shutdown.closing.cancel();
}
