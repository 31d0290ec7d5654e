//! The admin HTTP endpoint (`SHMPIPE_ADMIN_ADDR`, loopback by default, `off` to disable): a
//! small HTTP/1.1 server (hyper) beside the control socket, for Kubernetes probes and
//! Prometheus. It never touches the data plane: it reads [`Readiness`] and encodes
//! [`Metrics`].
//!
//! - `GET /live`: 200 while the process runs, through the whole drain, until exit.
//! - `GET /ready`: 200 once the control socket listens and the store is reachable; 503 with the
//!   reason before that, from the first moment of a drain (SIGTERM/SIGINT), or while the store
//!   is unreachable.
//! - `GET /metrics`: the OpenMetrics text exposition ([`metrics::CONTENT_TYPE`]).
//! - Anything else: 404; another method on these paths: 405 (HEAD is served like GET).
//!
//! The server stops when `stop` is cancelled, which the sidecar does after the drain and the
//! sessions' close, so the probes see the whole shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::service::metrics::{self, Metrics};
use crate::service::shutdown::Shutdown;

/// Concurrent admin connections; more are closed at once (probes and a scraper need a few).
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this (slow or stuck clients hold a place).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open admin connections may take to finish once the server stops.
const STOP_LIMIT: Duration = Duration::from_secs(1);

const TEXT: &str = "text/plain; charset=utf-8";

/// What `/ready` answers. Ready = the control socket listens, no drain has begun, and the store
/// is reachable.
///
/// Store hook: `store_reachable` starts true (no store configured: nothing to wait for). The
/// store wiring, when a store is configured, calls `set_store_reachable(false)` before the
/// control socket starts listening and `true` once the store answers, and flips it as the
/// store comes and goes. The flags are Relaxed: each is read on its own, ordering nothing.
#[derive(Debug)]
pub struct Readiness {
    listening: AtomicBool,
    store_reachable: AtomicBool,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(shutdown: Shutdown) -> Self {
        Self { listening: AtomicBool::new(false), store_reachable: AtomicBool::new(true), shutdown }
    }

    /// The control socket accepts connections.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Relaxed);
    }

    pub fn set_store_reachable(&self, reachable: bool) {
        self.store_reachable.store(reachable, Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.shutdown.is_draining() {
            Err("draining")
        } else if !self.listening.load(Ordering::Relaxed) {
            Err("control socket not listening yet")
        } else if !self.store_reachable.load(Ordering::Relaxed) {
            Err("store unreachable")
        } else {
            Ok(())
        }
    }
}

/// What every admin request needs.
pub struct AdminState {
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
}

/// Binds the admin listener (before the sidecar reports itself started, so a taken port is a
/// startup error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests until `stop` is cancelled; then lets open connections finish their
/// current response (closing idle keep-alive ones) for at most [`STOP_LIMIT`].
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            debug!(%peer, "too many admin connections; closing");
            continue;
        };
        let (state, stop) = (state.clone(), stop.clone());
        connections.spawn(async move {
            let _place = place;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&req, &state)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
    connections.close();
    if tokio::time::timeout(STOP_LIMIT, connections.wait()).await.is_err() {
        debug!("admin connections still open at exit");
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    r
}

/// One admin request. HEAD gets GET's headers; hyper leaves the body out.
pub fn respond(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), state)
}

fn route(method: &Method, path: &str, state: &AdminState) -> Response<Full<Bytes>> {
    if !matches!(path, "/live" | "/ready" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found; try /live, /ready or /metrics\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = match path {
        "/live" => text(StatusCode::OK, "ok\n"),
        "/ready" => match state.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        },
        _ => {
            let mut r = text(StatusCode::OK, state.metrics.encode());
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            r
        }
    };
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::GlobalStats;
    use http_body_util::BodyExt;

    fn state() -> (AdminState, Shutdown) {
        let shutdown = Shutdown::new();
        let readiness = Arc::new(Readiness::new(shutdown.clone()));
        (AdminState { readiness, metrics: Metrics::new(Arc::new(GlobalStats::default())) }, shutdown)
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn readiness_follows_listening_store_and_drain() {
        let (s, shutdown) = state();
        let ready = || route(&Method::GET, "/ready", &s);
        let r = ready();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(r).await, "not ready: control socket not listening yet\n");
        s.readiness.set_listening();
        assert_eq!(ready().status(), StatusCode::OK);
        s.readiness.set_store_reachable(false);
        assert_eq!(body(ready()).await, "not ready: store unreachable\n");
        s.readiness.set_store_reachable(true);
        assert_eq!(ready().status(), StatusCode::OK);
        shutdown.draining.cancel();
        let r = ready();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(r).await, "not ready: draining\n");
        // Live throughout.
        assert_eq!(route(&Method::GET, "/live", &s).status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn routes_methods_and_content_types() {
        let (s, _) = state();
        let r = route(&Method::GET, "/metrics", &s);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert!(body(r).await.ends_with("# EOF\n"));
        assert_eq!(route(&Method::HEAD, "/live", &s).status(), StatusCode::OK);
        assert_eq!(route(&Method::GET, "/", &s).status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&Method::GET, "/live/x", &s).status(), StatusCode::NOT_FOUND);
        let r = route(&Method::POST, "/ready", &s);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        assert_eq!(route(&Method::DELETE, "/nowhere", &s).status(), StatusCode::NOT_FOUND);
    }
}
