//! The control plane (SPEC §10): the Unix listener, and per connection the peer-credential
//! check, the `hello`/`welcome`/`mapped` handshake with SCM_RIGHTS fd passing, and the
//! session's lifetime after it: the socket stays open, and its EOF (or a protocol violation
//! reported by the dispatcher, or shutdown) ends the session — in-flight work cancelled, every
//! slot reclaimed, header CLOSED, dispatcher stopped, mapping dropped.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use shm_protocol::layout::{Layout, PAGE_SIZE};
use shm_protocol::shm::{Mapping, Segment};
use shm_protocol::{Params, SessionState};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::service::admin::Readiness;
use crate::service::config::Config;
use crate::dispatch::{DispatchEnd, Dispatcher, DispatcherConfig, EndReason, Links, Mode, SessionControl};
use crate::peer::doorbell::Doorbell;
use crate::peer::segment::{self, Backend, SegmentError, SegmentMemory};
use crate::dispatch::session::Session;
use crate::service::shutdown::Shutdown;
use crate::stats::GlobalStats;
use crate::ops::store::StoreLinks;
use crate::service::wire::{self, codes, FrameError, Hello, HelloError, Limits, ServerMsg, WelcomeLayout};

/// What the client gets when it does not say (contract "Client defaults").
const DEFAULT_SLOT_COUNT: u64 = 64;
const DEFAULT_SLOT_SIZE: u64 = 1 << 20;
const DEFAULT_RING: u64 = 1024;

/// The socket file's mode: owner and group may connect (a pod's containers typically share a
/// group via fsGroup); the uid check below is the real gate.
const SOCKET_MODE: u32 = 0o660;

/// How long a refused connection stays open for the client to read the error frame.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Server-wide state every connection needs.
pub struct ServerCtx {
    pub cfg: Config,
    pub backend: Backend,
    pub global: Arc<GlobalStats>,
    pub shutdown: Shutdown,
    /// What `/ready` reports; the store wiring sets its store hook.
    pub readiness: Arc<Readiness>,
    pub runtime: Handle,
    /// The object store every session's store ops use.
    pub store: StoreLinks,
    own_uid: u32,
    next_session: AtomicU64,
}

impl ServerCtx {
    pub fn new(cfg: Config, global: Arc<GlobalStats>, shutdown: Shutdown, readiness: Arc<Readiness>, runtime: Handle, store: shmpipe_store::Store) -> Self {
        let backend = cfg.segment_dir.clone().map_or(Backend::Shm, Backend::Dir);
        let store = StoreLinks {
            store,
            read_ahead: cfg.store.read_ahead,
            engine_workers: usize::from(cfg.worker_threads),
            pack_uploads: cfg.store.pack_uploads(),
        };
        Self {
            cfg,
            backend,
            global,
            shutdown,
            readiness,
            runtime,
            store,
            own_uid: nix::unistd::geteuid().as_raw(),
            next_session: AtomicU64::new(1),
        }
    }

    fn uid_allowed(&self, uid: u32) -> bool {
        uid == self.own_uid || self.cfg.allow_uids.0.contains(&uid)
    }
}

/// Binds a Unix listener at `path`, replacing a stale socket file only if nothing answers on
/// it, and sets the socket's mode.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and is not a socket", path.display())));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("another process is listening on {}", path.display())))
            }
            Err(_) => {
                info!(path = %path.display(), "removing stale socket");
                std::fs::remove_file(path)?;
            }
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// Accepts connections until draining begins.
pub async fn accept_loop(listener: UnixListener, ctx: Arc<ServerCtx>, tracker: TaskTracker) {
    loop {
        tokio::select! {
            _ = ctx.shutdown.draining.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tracker.spawn(connection(stream, ctx.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    debug!("control listener closed");
}

/// A refusal: the error frame, then the socket closes (dropped by the caller). Before that we
/// half-close and read what the client still sends (its `hello`, typically) for a moment:
/// closing a Unix socket with unread input makes the peer's read fail with ECONNRESET, which
/// could hide the error frame from it.
async fn refuse(stream: &mut UnixStream, code: &'static str, message: String) {
    info!(code, %message, "refusing client");
    let frame = wire::encode_frame(&ServerMsg::Error { code, message });
    let linger = async {
        stream.write_all(&frame).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < wire::MAX_FRAME * 2 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
}

/// Holds one of `SHMPIPE_MAX_CLIENTS` places; gives it back on drop.
struct ClientPlace(Arc<GlobalStats>);

impl ClientPlace {
    fn take(global: &Arc<GlobalStats>, max: u32) -> Option<Self> {
        global
            .clients
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < u64::from(max)).then_some(n + 1))
            .ok()
            .map(|_| Self(global.clone()))
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Clamps and rounds what the client asked for to the sidecar's limits (SPEC §10 step 1).
pub fn negotiate(hello: &Hello, cfg: &Config) -> Params {
    fn ring(asked: Option<u64>, max: u32) -> u32 {
        let v = asked.unwrap_or(DEFAULT_RING).clamp(2, u64::from(max));
        (v as u32).next_power_of_two().min(max)
    }
    let slot_count = hello.slot_count.unwrap_or(DEFAULT_SLOT_COUNT).clamp(1, u64::from(cfg.max_slots)) as u32;
    let page = PAGE_SIZE as u64;
    let slot_size = hello.slot_size.unwrap_or(DEFAULT_SLOT_SIZE).clamp(page, u64::from(cfg.max_slot_size));
    let slot_size = (slot_size.div_ceil(page) * page).min(u64::from(cfg.max_slot_size)) as u32;
    Params::new(ring(hello.sq_capacity, cfg.max_ring), ring(hello.cq_capacity, cfg.max_ring), slot_count, slot_size)
        .expect("negotiated parameters are within the protocol's limits")
}

/// A session between `welcome` and its end.
struct NewSession {
    id: u64,
    memory: Arc<SegmentMemory>,
    segment: Segment,
    segment_fd: std::os::fd::OwnedFd,
    generation: u64,
    dispatcher: Dispatcher,
    control: Arc<SessionControl>,
    abort: CancellationToken,
}

impl NewSession {
    /// Creates the segment, writes the header, grants every slot and publishes READY.
    fn create(ctx: &ServerCtx, params: Params) -> Result<Self, (&'static str, String)> {
        let internal = |what: &str, e: &dyn std::fmt::Display| (codes::HANDSHAKE, format!("{what}: {e}"));
        let layout = Layout::new(params).map_err(|e| internal("layout", &e))?;
        let created = segment::create(&ctx.backend, layout.segment_size as usize, ctx.cfg.prefault, ctx.global.clone())
            .map_err(|e| match e {
                SegmentError::NoSpace(_) => (codes::BUSY, e.to_string()),
                SegmentError::Other(_) => (codes::HANDSHAKE, e.to_string()),
            })?;
        let map: Arc<dyn Mapping> = created.memory.clone();
        let segment = Segment::new(map, layout).map_err(|e| internal("segment", &e))?;
        let generation = loop {
            let g: u64 = rand::random();
            if g != 0 {
                break g;
            }
        };
        segment.write_header(generation);
        let id = ctx.next_session.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(SessionControl::new().map_err(|e| internal("eventfd", &e))?);
        let abort = CancellationToken::new();
        let links = Links {
            sq_bell: Doorbell::new().map_err(|e| internal("eventfd", &e))?,
            cq_bell: Doorbell::new().map_err(|e| internal("eventfd", &e))?,
            control: control.clone(),
            global: ctx.global.clone(),
            runtime: ctx.runtime.clone(),
            abort: abort.clone(),
            closing: ctx.shutdown.closing.clone(),
            store: ctx.store.clone(),
        };
        let read_reserve = ctx.cfg.store.read_reserve_for(params.slot_count);
        let cfg = DispatcherConfig { spin: ctx.cfg.spin(), max_in_flight: ctx.cfg.max_in_flight, read_reserve };
        let session = Session::new(id, params.slot_count, params.slot_size);
        let dispatcher = Dispatcher::new(session, segment.clone(), links, cfg).map_err(|e| internal("rings", &e))?;
        // [STATE] Release (in `set_state`): the header and the initial grants are visible to
        // an agent that loads READY with Acquire.
        segment.set_state(SessionState::Ready);
        Ok(Self { id, memory: created.memory, segment, segment_fd: created.fd, generation, dispatcher, control, abort })
    }

    fn welcome(&self, ctx: &ServerCtx) -> Vec<u8> {
        let layout = self.segment.layout();
        wire::encode_frame(&ServerMsg::Welcome {
            version: shm_protocol::layout::VERSION,
            session: self.id,
            segment: self.memory.path().display().to_string(),
            segment_size: layout.segment_size,
            generation: self.generation.to_string(),
            layout: WelcomeLayout::from(layout),
            limits: Limits {
                max_in_flight: ctx.cfg.max_in_flight,
                read_reserve: ctx.cfg.store.read_reserve_for(layout.params.slot_count),
                part_size: ctx.store.store.part_size() as u64,
            },
        })
    }
}

/// Sends `bytes` with `fds` attached (SCM_RIGHTS) to the first sendmsg; any rest follows.
async fn send_with_fds(stream: &mut UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(bytes)];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None).map_err(io::Error::from)
        })
        .await?;
    stream.write_all(&bytes[sent..]).await
}

/// Reads one frame within the handshake timeout, or gives up when shutdown closes.
async fn handshake_frame(stream: &mut UnixStream, ctx: &ServerCtx, step: &str) -> Result<Vec<u8>, Option<String>> {
    tokio::select! {
        _ = ctx.shutdown.closing.cancelled() => Err(None),
        r = tokio::time::timeout(ctx.cfg.handshake_timeout, wire::read_frame(stream)) => match r {
            Err(_) => Err(Some(format!("timed out waiting for {step}"))),
            Ok(Err(FrameError::Eof)) => Err(None),
            Ok(Err(e)) => Err(Some(format!("reading {step}: {e}"))),
            Ok(Ok(frame)) => Ok(frame),
        },
    }
}

/// One control connection, from accept to close.
async fn connection(mut stream: UnixStream, ctx: Arc<ServerCtx>) {
    // Before anything else: who is this?
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read peer credentials");
            return;
        }
    };
    let (uid, pid) = (cred.uid(), cred.pid());
    if !ctx.uid_allowed(uid) {
        refuse(&mut stream, codes::PERMISSION, format!("uid {uid} is not allowed to use this sidecar")).await;
        return;
    }
    let hello = match handshake_frame(&mut stream, &ctx, "hello").await {
        Ok(frame) => frame,
        Err(None) => return,
        Err(Some(msg)) => return refuse(&mut stream, codes::HANDSHAKE, msg).await,
    };
    let hello = match wire::parse_hello(&hello) {
        Ok(h) => h,
        Err(HelloError::Version(msg)) => return refuse(&mut stream, codes::VERSION, msg).await,
        Err(HelloError::Handshake(msg)) => return refuse(&mut stream, codes::HANDSHAKE, msg).await,
    };
    if ctx.shutdown.is_draining() {
        return refuse(&mut stream, codes::BUSY, "the sidecar is shutting down".into()).await;
    }
    let Some(_place) = ClientPlace::take(&ctx.global, ctx.cfg.max_clients) else {
        return refuse(&mut stream, codes::BUSY, format!("too many clients (SHMPIPE_MAX_CLIENTS={})", ctx.cfg.max_clients)).await;
    };
    let params = negotiate(&hello, &ctx.cfg);
    let session = match NewSession::create(&ctx, params) {
        Ok(s) => s,
        Err((code, msg)) => return refuse(&mut stream, code, msg).await,
    };
    ctx.global.sessions_opened.fetch_add(1, Ordering::Relaxed);
    let id = session.id;
    let span = tracing::info_span!("session", id, uid, pid = pid.unwrap_or(0));
    let lifetime = async {
        info!(client = hello.client.as_deref().unwrap_or(""), ?params, segment = %session.memory.path().display(), "session created");
        let end = run_session(&mut stream, &ctx, session).await;
        ctx.global.sessions_closed.fetch_add(1, Ordering::Relaxed);
        info!(%end, "session closed");
    };
    lifetime.instrument(span).await;
}

enum SessionEnd {
    PeerGone,
    Handshake(String),
    Violation(shm_protocol::RingError),
    Shutdown,
    DispatcherFailed,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerGone => f.write_str("peer closed the control socket"),
            Self::Handshake(msg) => write!(f, "handshake failed: {msg}"),
            Self::Violation(e) => write!(f, "protocol violation: {e}"),
            Self::Shutdown => f.write_str("sidecar shutdown"),
            Self::DispatcherFailed => f.write_str("dispatcher failed"),
        }
    }
}

async fn run_session(stream: &mut UnixStream, ctx: &ServerCtx, session: NewSession) -> SessionEnd {
    let welcome = session.welcome(ctx);
    let NewSession { memory, segment, segment_fd, dispatcher, control, abort, .. } = session;
    let [sq_fd, cq_fd] = dispatcher.doorbell_fds();
    let fds = [segment_fd.as_fd(), sq_fd, cq_fd];
    let handshake = async {
        send_with_fds(stream, &welcome, &fds).await.map_err(|e| Some(format!("sending welcome: {e}")))?;
        let frame = handshake_frame(stream, ctx, "mapped").await?;
        if !wire::is_mapped(&frame) {
            return Err(Some("expected {\"type\":\"mapped\"}".to_owned()));
        }
        Ok(())
    };
    let handshake = handshake.await;
    drop(segment_fd);
    match handshake {
        Ok(()) => {}
        Err(reason) => {
            segment.set_state(SessionState::Closed);
            ctx.global.slots_reclaimed_total.fetch_add(u64::from(dispatcher.outstanding_slots()), Ordering::Relaxed);
            return match reason {
                Some(msg) => {
                    refuse(stream, codes::HANDSHAKE, msg.clone()).await;
                    SessionEnd::Handshake(msg)
                }
                None => SessionEnd::PeerGone,
            };
        }
    }
    // The agent has its own mapping: no name needs to exist any more (SPEC §10 step 4).
    if let Err(e) = memory.unlink() {
        warn!(error = %e, "cannot unlink segment");
    }
    drop(memory);

    let (end_tx, mut end_rx) = oneshot::channel::<DispatchEnd>();
    if let Err(e) = dispatcher.spawn(move |end| {
        let _ = end_tx.send(end);
    }) {
        warn!(error = %e, "cannot start dispatcher thread");
        segment.set_state(SessionState::Closed);
        return SessionEnd::DispatcherFailed;
    }
    debug!("dispatcher started");

    let (mut rd, mut wr) = stream.split();
    // Kept alive across loop turns: `read_frame` is not cancel-safe.
    let reader = async {
        loop {
            match wire::read_frame(&mut rd).await {
                Ok(frame) => debug!(len = frame.len(), "ignoring control frame after handshake"),
                Err(e) => return e,
            }
        }
    };
    tokio::pin!(reader);
    let mut draining = false;
    let mut finishing = false;
    let (reason, dispatch_end) = loop {
        // Biased: shutdown phases are seen in order (the draining frame always goes out before
        // the session finishes), and before the dispatcher's end or the peer's EOF.
        tokio::select! {
            biased;
            _ = ctx.shutdown.draining.cancelled(), if !draining => {
                draining = true;
                segment.set_state(SessionState::Draining);
                control.set_mode(Mode::Draining);
                let frame = wire::encode_frame(&ServerMsg::Draining);
                let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&frame)).await;
            }
            _ = ctx.shutdown.closing.cancelled(), if !finishing => {
                finishing = true;
                control.set_mode(Mode::Finishing);
            }
            e = &mut reader => {
                debug!(reason = %e, "control socket closed");
                break (SessionEnd::PeerGone, None);
            }
            end = &mut end_rx => {
                let reason = match end {
                    Ok(DispatchEnd { reason: EndReason::Violation(e), .. }) => {
                        warn!(error = %e, "protocol violation; closing session");
                        SessionEnd::Violation(e)
                    }
                    Ok(_) => SessionEnd::Shutdown,
                    Err(_) => {
                        warn!("dispatcher ended without a result");
                        SessionEnd::DispatcherFailed
                    }
                };
                break (reason, Some(end.ok()));
            }
        }
    };
    // Teardown, whatever ended the session.
    control.set_mode(Mode::Stopping);
    abort.cancel();
    let dispatch_end = match dispatch_end {
        Some(end) => end,
        None => end_rx.await.ok(),
    };
    segment.set_state(SessionState::Closed);
    match dispatch_end {
        Some(end) => {
            ctx.global.slots_reclaimed_total.fetch_add(u64::from(end.outstanding_slots), Ordering::Relaxed);
            debug!(reclaimed = end.outstanding_slots, "slots reclaimed");
        }
        None => warn!("dispatcher state lost; slots not counted"),
    }
    reason
}
