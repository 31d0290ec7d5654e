//! The sidecar's top level: sweep stale segments, bind the sockets, serve until a signal, then
//! drain and close (see `shutdown`), remove the socket files and return.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::{self, ServerCtx};
use crate::segment;
use crate::shutdown::{self, Shutdown, Signals};
use crate::stats::GlobalStats;
use crate::baseline;
use shmpipe_store::Store;

/// How long closing sessions may take after the grace period before we stop waiting.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// Runs the sidecar until SIGTERM/SIGINT has been handled. Errors are startup failures.
pub async fn run(cfg: Config) -> Result<(), String> {
    for dir in [Some(Path::new(segment::SHM_DIR)), cfg.segment_dir.as_deref()].into_iter().flatten() {
        let removed = segment::sweep(dir);
        if removed > 0 {
            info!(dir = %dir.display(), removed, "swept stale segments");
        }
    }
    let mut signals = Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = control::bind(&cfg.socket).map_err(|e| format!("cannot listen on {}: {e}", cfg.socket.display()))?;
    let baseline = match &cfg.baseline_socket {
        Some(path) => Some(control::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?),
        None => None,
    };

    // Validated by `Config::load`; opening creates a file:// directory but sends no request.
    let store_cfg = cfg.store.store_config()?;
    let store = Store::open(&store_cfg).map_err(|e| format!("cannot open the store {}: {e}", store_cfg.url))?;

    let global = Arc::new(GlobalStats::default());
    let shutdown = Shutdown::new();
    let tracker = TaskTracker::new();
    let ctx = Arc::new(ServerCtx::new(cfg.clone(), global.clone(), shutdown.clone(), tokio::runtime::Handle::current(), store.clone()));
    info!(
        socket = %cfg.socket.display(),
        baseline = cfg.baseline_socket.as_ref().map(|p| p.display().to_string()),
        backend = ?ctx.backend,
        store = store.describe(),
        pid = std::process::id(),
        "listening"
    );
    tracker.spawn(control::accept_loop(listener, ctx, tracker.clone()));
    if let Some(listener) = baseline {
        let max_payload = cfg.max_slot_size as usize;
        tracker.spawn(baseline::accept_loop(listener, max_payload, shutdown.clone(), global.clone(), tracker.clone()));
    }

    shutdown::on_signal(&mut signals, &shutdown, &global, cfg.shutdown_grace).await;
    tracker.close();
    if tokio::time::timeout(CLOSE_LIMIT, tracker.wait()).await.is_err() {
        warn!("sessions did not close in time; exiting anyway");
    }
    // Writers of the closed sessions abort their uploads in the background: let them finish,
    // so no multipart upload or staging file outlives a graceful shutdown.
    if tokio::time::timeout(CLOSE_LIMIT, store.wait_background()).await.is_err() {
        warn!("store clean-up did not finish in time; exiting anyway");
    }
    for path in [Some(&cfg.socket), cfg.baseline_socket.as_ref()].into_iter().flatten() {
        if let Err(e) = std::fs::remove_file(path) {
            warn!(path = %path.display(), error = %e, "cannot remove socket file");
        }
    }
    info!("stopped");
    Ok(())
}
