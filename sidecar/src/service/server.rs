//! The sidecar's top level: sweep stale segments, bind the sockets and the admin listener,
//! serve until a signal, then drain and close (see `shutdown`), remove the socket files, stop
//! the admin listener last (so `/live` answers through the whole drain) and return.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::service::admin::{self, AdminState, Readiness};
use crate::service::config::Config;
use crate::service::control::{self, ServerCtx};
use crate::peer::segment;
use crate::service::shutdown::{self, Shutdown, Signals};
use crate::stats::GlobalStats;
use crate::service::baseline;
use crate::service::metrics::Metrics;
use crate::service::store_probe;
use shmpipe_store::Store;

/// How long closing sessions may take after the grace period before we stop waiting.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);
/// How long the admin listener may take to stop at exit.
const ADMIN_STOP_LIMIT: Duration = Duration::from_secs(2);

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

    // After the control socket, so a second sidecar on the same socket reports that, not the
    // admin port.
    let admin = match cfg.admin_addr.0 {
        Some(addr) => match admin::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) if cfg.admin_addr_explicit => {
                remove_socket_files(&cfg);
                return Err(format!("cannot listen on SHMPIPE_ADMIN_ADDR {addr}: {e} (choose another address, or `off`)"));
            }
            Err(e) => {
                // The default address: probably another sidecar on this host. Serve anyway.
                warn!(%addr, error = %e, "cannot listen on the default SHMPIPE_ADMIN_ADDR; running without the admin endpoint (set SHMPIPE_ADMIN_ADDR to choose one)");
                None
            }
        },
        None => None,
    };

    // Validated by `Config::load`; opening creates a file:// directory but sends no request.
    let store_cfg = cfg.store.store_config()?;
    let store = match Store::open(&store_cfg) {
        Ok(s) => s,
        Err(e) => {
            remove_socket_files(&cfg);
            return Err(format!("cannot open the store {}: {e}", store_cfg.url));
        }
    };

    let global = Arc::new(GlobalStats::default());
    let shutdown = Shutdown::new();
    let readiness = Arc::new(Readiness::new(shutdown.clone()));
    // Not ready until the store has answered once (the probe below).
    readiness.set_store_reachable(false);
    let tracker = TaskTracker::new();
    let admin_stop = CancellationToken::new();
    let admin_task = match admin {
        Some(listener) => {
            let addr = listener.local_addr().map_err(|e| format!("admin listener: {e}"))?;
            info!(%addr, "admin listening");
            let state = Arc::new(AdminState { readiness: readiness.clone(), metrics: Metrics::new(global.clone()) });
            Some(tokio::spawn(admin::serve(listener, state, admin_stop.clone())))
        }
        None => None,
    };
    let ctx = Arc::new(ServerCtx::new(
        cfg.clone(),
        global.clone(),
        shutdown.clone(),
        readiness.clone(),
        tokio::runtime::Handle::current(),
        store.clone(),
    ));
    let probe_stop = CancellationToken::new();
    let probe = tokio::spawn(store_probe::run(store.clone(), readiness.clone(), probe_stop.clone()));
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
        tracker.spawn(baseline::accept_loop(listener, max_payload, shutdown.clone(), global.clone(), store.clone(), tracker.clone()));
    }
    readiness.set_listening();

    shutdown::on_signal(&mut signals, &shutdown, &global, cfg.shutdown_grace).await;
    tracker.close();
    if tokio::time::timeout(CLOSE_LIMIT, tracker.wait()).await.is_err() {
        warn!("sessions did not close in time; exiting anyway");
    }
    probe_stop.cancel();
    let _ = probe.await;
    // Writers of the closed sessions abort their uploads in the background: let them finish,
    // so no multipart upload or staging file outlives a graceful shutdown.
    if tokio::time::timeout(CLOSE_LIMIT, store.wait_background()).await.is_err() {
        warn!("store clean-up did not finish in time; exiting anyway");
    }
    remove_socket_files(&cfg);
    admin_stop.cancel();
    if let Some(task) = admin_task {
        if tokio::time::timeout(ADMIN_STOP_LIMIT, task).await.is_err() {
            warn!("admin listener did not stop in time");
        }
    }
    info!("stopped");
    Ok(())
}

fn remove_socket_files(cfg: &Config) {
    for path in [Some(&cfg.socket), cfg.baseline_socket.as_ref()].into_iter().flatten() {
        if let Err(e) = std::fs::remove_file(path) {
            warn!(path = %path.display(), error = %e, "cannot remove socket file");
        }
    }
}
