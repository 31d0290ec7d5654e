//! Test harness: starts the real `shmpipe-sidecar` binary on a temporary socket, and a
//! minimal Rust agent that does the SPEC §10 handshake (recvmsg with SCM_RIGHTS, mmap, header
//! check, `mapped`) and drives the rings with shm-protocol's own ring halves.
#![allow(dead_code)]

pub mod exposition;
pub mod http;

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::Value;
use shm_protocol::entry::{Completion, Grant, RawSubmission};
use shm_protocol::layout::{Layout, SessionState, NO_SLOT};
use shm_protocol::shm::{CqConsumer, GqConsumer, Mapping, Segment, SqProducer};

pub const BIN: &str = env!("CARGO_BIN_EXE_shmpipe-sidecar");
pub const WAIT: Duration = Duration::from_secs(10);

/// A running sidecar in its own temporary directory. Killed on drop if still running.
pub struct Sidecar {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Sidecar {
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_admin(env, true)
    }

    /// Like `start`, but leaves `SHMPIPE_ADMIN_ADDR` unset (the default, 127.0.0.1:9464) unless
    /// `env` sets it.
    pub fn start_with_default_admin(env: &[(&str, &str)]) -> Self {
        Self::start_admin(env, false)
    }

    fn start_admin(env: &[(&str, &str)], ephemeral_admin: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sidecar.sock");
        let log = dir.path().join("sidecar.log");
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("SHMPIPE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SHMPIPE_SOCKET", &socket).env("SHMPIPE_LOG", "debug").env("SHMPIPE_SPIN_US", "20");
        // A store of its own: never the default under $HOME.
        cmd.env("SHMPIPE_STORE", format!("file://{}", dir.path().join("store").display()));
        // These tests count slots: every slot granted, as before the read reserve (SPEC §9);
        // `grants_stop_at_the_read_reserve` sets it.
        cmd.env("SHMPIPE_READ_RESERVE", "0");
        // The tests' repositories use a cheap KDF (below the floor a real init enforces).
        cmd.env("SHMPIPE_TEST_ALLOW_WEAK_KDF", "1");
        if ephemeral_admin {
            // An ephemeral loopback port: tests run in parallel (see `admin_addr`).
            cmd.env("SHMPIPE_ADMIN_ADDR", "127.0.0.1:0");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        let mut s = Self { dir, socket, child: Some(child), log };
        s.wait_listening();
        s
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sidecar exited early ({status}):\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "sidecar never listened:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The admin listener's address, from the sidecar's "admin listening" log line (plain or
    /// JSON format); waits for the line.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        let mut found = None;
        wait_until("admin listening", || {
            found = self.log_text().lines().filter(|l| l.contains("admin listening")).find_map(|l| {
                let at = l.find("addr=").map(|i| i + 5).or_else(|| l.find("\"addr\":\"").map(|i| i + 8))?;
                let rest = &l[at..];
                let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
                rest[..end].parse().ok()
            });
            found.is_some()
        });
        found.unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sidecar did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn connect(&self) -> Agent {
        Agent::connect(&self.socket, &hello(&[])).unwrap_or_else(|e| panic!("refused: {e}\n{}", self.log_text()))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- sidecar log ----\n{}", self.log_text());
        }
    }
}

pub fn hello(fields: &[(&str, Value)]) -> Value {
    let mut v = serde_json::json!({"type": "hello", "version": 1, "slot_count": 8, "slot_size": 1 << 20,
        "sq_capacity": 64, "cq_capacity": 64, "client": "rust-test"});
    for (k, val) in fields {
        v[*k] = val.clone();
    }
    v
}

pub fn write_frame(s: &mut UnixStream, v: &Value) {
    let json = serde_json::to_vec(v).unwrap();
    s.write_all(&(json.len() as u32).to_le_bytes()).unwrap();
    s.write_all(&json).unwrap();
}

/// Reads one frame (and any fds attached to its first bytes).
pub fn read_frame_with_fds(s: &mut UnixStream) -> std::io::Result<(Value, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 65_536 + 4];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors for us; nobody else owns them.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let mut have = n;
    while have < 4 {
        have += s.read(&mut buf[have..])?;
    }
    let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
    if have < 4 + len {
        s.read_exact(&mut buf[have..4 + len])?;
    }
    Ok((serde_json::from_slice(&buf[4..4 + len]).unwrap(), fds))
}

pub fn read_frame(s: &mut UnixStream) -> std::io::Result<Value> {
    read_frame_with_fds(s).map(|(v, _)| v)
}

/// The agent's own mapping of the segment fd.
pub struct AgentMap(memmap2::MmapMut);

// SAFETY: an mmap'ed region: page-aligned, mapped read/write at a fixed address until drop.
unsafe impl Mapping for AgentMap {
    fn base(&self) -> NonNull<u8> {
        NonNull::new(self.0.as_ptr().cast_mut()).unwrap()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

pub struct Agent {
    pub stream: UnixStream,
    pub welcome: Value,
    pub segment: Segment,
    pub layout: Layout,
    pub sq: SqProducer,
    pub cq: CqConsumer,
    pub gq: GqConsumer,
    pub sq_bell: OwnedFd,
    pub cq_bell: OwnedFd,
    /// The segment fd the welcome carried (hostile tests try to resize it).
    pub segment_file: std::fs::File,
    pub grants: Vec<Grant>,
    next_id: u64,
}

impl Agent {
    /// Handshake; `Err` carries the error frame's `code`.
    pub fn connect(socket: &Path, hello: &Value) -> Result<Agent, String> {
        let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write_frame(&mut stream, hello);
        let (welcome, fds) = read_frame_with_fds(&mut stream).map_err(|e| e.to_string())?;
        if welcome["type"] == "error" {
            return Err(welcome["code"].as_str().unwrap().to_owned());
        }
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let [seg_fd, sq_bell, cq_bell]: [OwnedFd; 3] = fds.try_into().expect("three fds with the welcome");
        let file = std::fs::File::from(seg_fd);
        // SAFETY: the segment is created and sized by the sidecar before the welcome; we never
        // truncate it. Concurrent access follows the protocol (atomics, ring/slot ownership).
        let map = unsafe { memmap2::MmapMut::map_mut(&file).unwrap() };
        assert_eq!(map.len() as u64, welcome["segment_size"].as_u64().unwrap());
        let map: Arc<dyn Mapping> = Arc::new(AgentMap(map));
        let provisional = Segment::new(map.clone(), Layout::new(shm_protocol::Params::new(2, 2, 1, 4096).unwrap()).unwrap()).unwrap();
        assert_eq!(provisional.read_state(), Some(SessionState::Ready));
        let (layout, generation) = Segment::read_header(&map).unwrap();
        assert_eq!(generation.to_string(), welcome["generation"].as_str().unwrap());
        let l = &welcome["layout"];
        assert_eq!(l["sq_offset"].as_u64(), Some(layout.sq_offset));
        assert_eq!(l["cq_offset"].as_u64(), Some(layout.cq_offset));
        assert_eq!(l["gq_offset"].as_u64(), Some(layout.gq_offset));
        assert_eq!(l["slot_offset"].as_u64(), Some(layout.slot_offset));
        assert_eq!(l["slot_count"].as_u64(), Some(u64::from(layout.params.slot_count)));
        assert_eq!(l["slot_size"].as_u64(), Some(u64::from(layout.params.slot_size)));
        assert_eq!(l["sq_capacity"].as_u64(), Some(u64::from(layout.params.sq_capacity)));
        assert_eq!(l["cq_capacity"].as_u64(), Some(u64::from(layout.params.cq_capacity)));
        assert_eq!(l["gq_capacity"].as_u64(), Some(u64::from(layout.gq_capacity)));
        let segment = Segment::new(map, layout).unwrap();
        write_frame(&mut stream, &serde_json::json!({"type": "mapped"}));
        let mut agent = Agent {
            sq: SqProducer::new(segment.sq(), 0),
            cq: CqConsumer::new(segment.cq(), 0),
            gq: GqConsumer::new(segment.gq(), 0),
            stream,
            welcome,
            segment,
            layout,
            sq_bell,
            cq_bell,
            segment_file: file,
            grants: Vec::new(),
            next_id: 1,
        };
        agent.pop_grants();
        Ok(agent)
    }

    pub fn pop_grants(&mut self) -> usize {
        let mut n = 0;
        while let Some(b) = self.gq.try_pop().unwrap() {
            let g = Grant::decode(&b);
            assert!(g.slot_id < self.layout.params.slot_count);
            self.grants.push(g);
            n += 1;
        }
        self.gq.release();
        n
    }

    /// Takes a granted slot (waiting for grants if needed).
    pub fn alloc(&mut self) -> Grant {
        let deadline = Instant::now() + WAIT;
        loop {
            self.pop_grants();
            if let Some(g) = self.grants.pop() {
                return g;
            }
            assert!(Instant::now() < deadline, "no grant arrived");
            self.sleep_on_cq(Duration::from_millis(20));
        }
    }

    /// Waits for a grant of `slot_id` (e.g. after a release).
    pub fn wait_grant(&mut self, slot_id: u32) -> Grant {
        let deadline = Instant::now() + WAIT;
        loop {
            self.pop_grants();
            if let Some(i) = self.grants.iter().position(|g| g.slot_id == slot_id) {
                return self.grants.remove(i);
            }
            assert!(Instant::now() < deadline, "no grant for slot {slot_id}");
            self.sleep_on_cq(Duration::from_millis(20));
        }
    }

    pub fn slot_write(&self, id: u32, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.layout.params.slot_size as usize);
        // SAFETY: in bounds of slot `id` (checked above); the agent holds the slot.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.segment.slot_ptr(id).unwrap().as_ptr().add(offset), bytes.len()) };
    }

    pub fn slot_read(&self, id: u32, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset + len <= self.layout.params.slot_size as usize);
        let mut out = vec![0u8; len];
        // SAFETY: in bounds of slot `id`; the agent holds the slot again (completion received).
        unsafe { std::ptr::copy_nonoverlapping(self.segment.slot_ptr(id).unwrap().as_ptr().add(offset), out.as_mut_ptr(), len) };
        out
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Pushes raw entry bytes (unpublished).
    pub fn push_bytes(&mut self, bytes: &[u8; 64]) {
        self.sq.try_push(bytes).expect("SQ has room");
    }

    /// Publishes the SQ and rings the doorbell if the dispatcher asked for it (SPEC §6).
    pub fn publish(&mut self) {
        if self.sq.publish_and_check_wakeup(self.segment.sidecar_need_wakeup()) {
            nix::unistd::write(&self.sq_bell, &1u64.to_ne_bytes()).unwrap();
        }
    }

    pub fn submit(&mut self, raw: RawSubmission) -> u64 {
        self.push_bytes(&raw.encode());
        self.publish();
        raw.request_id
    }

    pub fn request(&mut self, raw: RawSubmission) -> Completion {
        let id = self.submit(raw);
        let c = self.wait_completion();
        assert_eq!(c.request_id, id);
        c
    }

    pub fn nop(&mut self) -> Completion {
        let request_id = self.next_id();
        self.request(RawSubmission { request_id, slot_id: NO_SLOT, ..Default::default() })
    }

    pub fn slot_op(&mut self, opcode: u8, g: Grant, offset: u32, length: u32, flags: u8) -> Completion {
        let request_id = self.next_id();
        self.request(RawSubmission { request_id, opcode, flags, slot_id: g.slot_id, slot_gen: g.slot_gen, offset, length, ..Default::default() })
    }

    pub fn stats(&mut self) -> Value {
        let g = self.alloc();
        let size = self.layout.params.slot_size;
        let c = self.slot_op(3, g, 0, size, 0);
        assert_eq!(c.status, 0, "stats failed: {c:?}");
        assert_eq!((c.slot_id, c.slot_gen), (g.slot_id, g.slot_gen));
        let doc = self.slot_read(g.slot_id, 0, c.result as usize);
        self.grants.push(g);
        serde_json::from_slice(&doc).unwrap()
    }

    fn sleep_on_cq(&mut self, timeout: Duration) {
        let flag = self.segment.agent_need_wakeup();
        if self.cq.prepare_sleep(flag).unwrap() {
            let mut fds = [PollFd::new(self.cq_bell.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::try_from(timeout).unwrap());
            let mut b = [0u8; 8];
            let _ = nix::unistd::read(&self.cq_bell, &mut b);
            self.cq.woke(flag);
        }
    }

    pub fn try_completion(&mut self) -> Option<Completion> {
        let b = self.cq.try_pop().unwrap()?;
        self.cq.release();
        Some(Completion::decode(&b).expect("valid completion"))
    }

    pub fn wait_completion(&mut self) -> Completion {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(c) = self.try_completion() {
                return c;
            }
            assert!(Instant::now() < deadline, "no completion arrived");
            self.sleep_on_cq(Duration::from_millis(20));
        }
    }

    pub fn state(&self) -> Option<SessionState> {
        self.segment.read_state()
    }

    /// Waits for EOF on the control socket (the sidecar closed the session), skipping frames.
    pub fn wait_closed(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            match read_frame(&mut self.stream) {
                Ok(v) => frames.push(v),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return frames,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return frames,
                Err(e) => panic!("waiting for close: {e}"),
            }
        }
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
