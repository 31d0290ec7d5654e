//! End-to-end: the real binary on a temporary socket, driven by a Rust agent (tests/support).
//! No test asserts a duration; waits have generous deadlines and only order is checked.

mod support;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use shm_protocol::entry::{cq_flags, RawSubmission};
use shm_protocol::layout::{SessionState, NO_SLOT};
use shm_protocol::ring::RingStorage;
use shm_protocol::ErrorCode;
use support::*;

const NOP: u8 = 0;
const ECHO: u8 = 1;
const SLOT_RELEASE: u8 = 2;
const STATS: u8 = 3;
const DELAY: u8 = 4;

fn code(c: &shm_protocol::Completion) -> Option<ErrorCode> {
    ErrorCode::from_status(c.status)
}

fn check_stats_invariant(s: &Value) {
    let n = |k: &str| s["session"][k].as_u64().unwrap_or_else(|| panic!("session.{k} in {s}"));
    assert_eq!(n("grants_total") - n("returns_total"), n("slots_granted") + n("slots_in_flight"), "{s}");
    assert_eq!(n("slots_free") + n("slots_granted") + n("slots_in_flight"), n("slot_count"), "{s}");
}

#[test]
fn handshake_then_nop_echo_stats_release_delay() {
    let sidecar = Sidecar::start(&[]);
    let mut a = sidecar.connect();

    // Welcome per the contract.
    let w = &a.welcome;
    assert_eq!(w["version"], 1);
    assert!(w["session"].as_u64().unwrap() >= 1);
    assert!(w["generation"].is_string());
    assert_eq!(w["limits"]["max_in_flight"], 4096);
    let name = w["segment"].as_str().unwrap().to_owned();
    assert!(name.starts_with(&format!("memfd:shmpipe-{}-", sidecar.pid())), "{name}");
    let leftover = |n: &str| std::fs::read_dir("/dev/shm").unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains(n));
    assert!(!leftover(&format!("shmpipe-{}-", sidecar.pid())), "a memfd segment has no name in /dev/shm");
    assert_eq!(a.state(), Some(SessionState::Ready));

    // Every slot is granted up front, with generation 1.
    assert_eq!(a.grants.len(), 8);
    assert!(a.grants.iter().all(|g| g.slot_gen == 1));

    let c = a.nop();
    assert_eq!((c.status, c.result, c.flags, c.slot_id), (0, 0, 0, NO_SLOT));

    // Inline ECHO: CRC-32C in place; the slot comes back with the completion.
    let g = a.alloc();
    a.slot_write(g.slot_id, 100, b"123456789");
    let c = a.slot_op(ECHO, g, 100, 9, 0);
    assert_eq!((c.status, c.result, c.aux[0]), (0, 9, 0xE306_9283));
    assert_eq!(c.flags, cq_flags::SLOT);
    assert_eq!((c.slot_id, c.slot_gen), (g.slot_id, g.slot_gen));

    // Large ECHO (runs on the runtime).
    let data: Vec<u8> = (0..700_000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
    a.slot_write(g.slot_id, 5, &data);
    let c = a.slot_op(ECHO, g, 5, data.len() as u32, 0);
    assert_eq!((c.status, c.result, c.aux[0]), (0, data.len() as u64, u64::from(crc32c::crc32c(&data))));
    assert_eq!(c.flags, cq_flags::SLOT);

    // SLOT_RELEASE: back to the pool, granted again with the next generation.
    let c = a.slot_op(SLOT_RELEASE, g, 0, 0, 0);
    assert_eq!((c.status, c.flags, c.slot_id), (0, 0, NO_SLOT));
    let again = a.wait_grant(g.slot_id);
    assert_eq!(again.slot_gen, g.slot_gen + 1);
    a.grants.push(again);

    // ECHO with RELEASE_SLOT: no SLOT flag, slot regranted.
    let g = a.alloc();
    let c = a.slot_op(ECHO, g, 0, 16, 1);
    assert_eq!((c.status, c.flags, c.result), (0, 0, 16));
    assert_eq!(a.wait_grant(g.slot_id).slot_gen, g.slot_gen + 1);

    // DELAY.
    let id = a.next_id();
    let c = a.request(RawSubmission { request_id: id, opcode: DELAY, slot_id: NO_SLOT, args: [1500, 0, 0, 0], ..Default::default() });
    assert_eq!((c.status, c.result), (0, 1500));

    let s = a.stats();
    check_stats_invariant(&s);
    let sess = &s["session"];
    assert_eq!(sess["id"], a.welcome["session"]);
    assert_eq!(sess["slot_count"], 8);
    assert_eq!(sess["requests_by_op"]["nop"], 1);
    assert_eq!(sess["requests_by_op"]["echo"], 3);
    assert_eq!(sess["requests_by_op"]["slot_release"], 1);
    assert_eq!(sess["requests_by_op"]["delay"], 1);
    assert_eq!(sess["requests_by_op"]["stats"], 1);
    assert_eq!(sess["requests_total"], 7);
    assert_eq!(sess["returns_total"], 2);
    assert_eq!(sess["grants_total"], 10);
    assert_eq!(sess["slots_in_flight"], 1, "the STATS slot itself");
    assert_eq!(sess["in_flight_async"], 0);
    assert!(sess["errors_by_code"].as_object().unwrap().values().all(|v| v == 0));
    let glob = &s["global"];
    assert_eq!(glob["clients"], 1);
    assert_eq!(glob["sessions_opened"], 1);
    assert_eq!(glob["segments_live"], 1);
    assert_eq!(glob["requests_total"], 7);
    assert_eq!(glob["protocol_violations"], 0);
}

#[test]
fn invalid_requests_complete_with_their_code_and_change_nothing() {
    let sidecar = Sidecar::start(&[]);
    let mut a = sidecar.connect();
    let g = a.alloc();
    // A slot we will release and then use again with its old generation.
    let spare = a.alloc();
    let before = a.stats();
    let slot_size = a.layout.params.slot_size;
    let raw = |request_id: u64, opcode: u8, slot_id: u32, slot_gen: u32, offset: u32, length: u32| RawSubmission {
        request_id,
        opcode,
        slot_id,
        slot_gen,
        offset,
        length,
        ..Default::default()
    };
    let cases: Vec<(RawSubmission, ErrorCode)> = vec![
        (raw(100, ECHO, 8, 1, 0, 1), ErrorCode::InvalidSlot),
        (raw(101, ECHO, u32::MAX - 1, 1, 0, 1), ErrorCode::InvalidSlot),
        (raw(102, ECHO, NO_SLOT, 0, 0, 0), ErrorCode::InvalidSlot),
        (raw(103, ECHO, g.slot_id, g.slot_gen + 1, 0, 1), ErrorCode::StaleSlot),
        (raw(104, ECHO, g.slot_id, g.slot_gen, slot_size, 1), ErrorCode::OutOfRange),
        (raw(105, ECHO, g.slot_id, g.slot_gen, u32::MAX, u32::MAX), ErrorCode::OutOfRange),
        (raw(106, STATS, g.slot_id, g.slot_gen, 0, slot_size + 1), ErrorCode::OutOfRange),
        (raw(107, STATS, g.slot_id, g.slot_gen, 0, 10), ErrorCode::OutOfRange), // document does not fit
        (raw(108, SLOT_RELEASE, g.slot_id, 7, 0, 0), ErrorCode::StaleSlot),
        (raw(109, 99, NO_SLOT, 0, 0, 0), ErrorCode::UnknownOpcode), // reserved (SPEC §7)
        (raw(110, 255, g.slot_id, g.slot_gen, 0, 0), ErrorCode::UnknownOpcode),
        (raw(111, NOP, 0, 0, 0, 0), ErrorCode::Malformed), // NOP naming a slot
        (RawSubmission { reserved0: 1, ..raw(112, NOP, NO_SLOT, 0, 0, 0) }, ErrorCode::Malformed),
        (RawSubmission { reserved1: 1, ..raw(113, ECHO, g.slot_id, g.slot_gen, 0, 1) }, ErrorCode::Malformed),
        (RawSubmission { flags: 0x80, ..raw(114, ECHO, g.slot_id, g.slot_gen, 0, 1) }, ErrorCode::Malformed),
        (RawSubmission { args: [60_000_001, 0, 0, 0], ..raw(115, DELAY, NO_SLOT, 0, 0, 0) }, ErrorCode::Malformed),
    ];
    let mut expected = std::collections::BTreeMap::<&str, u64>::new();
    for (sub, want) in &cases {
        let c = a.request(*sub);
        assert_eq!(code(&c), Some(*want), "{sub:?} -> {c:?}");
        // STATS with a document that does not fit: the slot validated, so it comes back.
        if sub.request_id == 107 {
            assert_eq!((c.flags, c.slot_id, c.slot_gen), (cq_flags::SLOT, g.slot_id, g.slot_gen));
        } else {
            assert_eq!((c.flags, c.slot_id), (0, NO_SLOT), "{sub:?}: a refused slot is not handed back");
        }
        *expected.entry(want.name()).or_default() += 1;
    }
    // Use after release: the sidecar regrants a released slot in the same turn, so the old
    // generation is stale by the time anything else can name it.
    let c = a.slot_op(SLOT_RELEASE, spare, 0, 0, 0);
    assert_eq!(c.status, 0);
    let c = a.slot_op(ECHO, spare, 0, 1, 0);
    assert_eq!(code(&c), Some(ErrorCode::StaleSlot), "{c:?}");
    assert_eq!((c.flags, c.slot_id), (0, NO_SLOT));
    *expected.entry("SHMPIPE_E_STALE_SLOT").or_default() += 1;

    // Garbage entries: random bytes never crash the session, each gets a completion.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut garbage_ids = Vec::new();
    for i in 0..40u64 {
        let mut b = [0u8; 64];
        for chunk in b.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes());
        }
        b[..8].copy_from_slice(&(1_000_000 + i).to_le_bytes());
        garbage_ids.push(1_000_000 + i);
        a.push_bytes(&b);
        a.publish();
        let c = a.wait_completion();
        assert_eq!(c.request_id, 1_000_000 + i);
        assert!(c.status < 0, "garbage accepted: {c:?}");
        *expected.entry(code(&c).unwrap().name()).or_default() += 1;
    }

    // The session still works and nothing about the slots changed.
    assert_eq!(a.nop().status, 0);
    let after = a.stats();
    check_stats_invariant(&after);
    for (name, n) in &expected {
        let was = before["session"]["errors_by_code"][name].as_u64().unwrap();
        assert_eq!(after["session"]["errors_by_code"][name].as_u64().unwrap() - was, *n, "{name}");
    }
    assert_eq!(after["session"]["slots_granted"], before["session"]["slots_granted"]);
    assert_eq!(after["session"]["returns_total"].as_u64().unwrap(), before["session"]["returns_total"].as_u64().unwrap() + 1);
    let c = a.slot_op(ECHO, g, 0, 4, 0);
    assert_eq!(c.status, 0, "the slot used by refused requests is intact");
}

#[test]
fn corrupt_sq_tail_closes_only_that_session() {
    let sidecar = Sidecar::start(&[]);
    let mut bad = sidecar.connect();
    let mut good = sidecar.connect();
    assert_eq!(bad.nop().status, 0);

    // A tail far past the head: out of the window (SPEC §4).

    bad.segment.sq().tail().store(1 << 40, std::sync::atomic::Ordering::SeqCst);
    nix::unistd::write(&bad.sq_bell, &1u64.to_ne_bytes()).unwrap();
    bad.wait_closed();
    assert_eq!(bad.state(), Some(SessionState::Closed));

    assert_eq!(good.nop().status, 0);
    let s = good.stats();
    assert_eq!(s["global"]["protocol_violations"], 1);
    assert_eq!(s["global"]["sessions_closed"], 1);
    assert_eq!(s["global"]["clients"], 1);
    assert!(s["global"]["slots_reclaimed_total"].as_u64().unwrap() >= 8);
    wait_until("bad session's segment unmapped", || good.stats()["global"]["segments_live"] == 1);
}

#[test]
fn disconnect_reclaims_slots_and_frees_the_client_place() {
    let sidecar = Sidecar::start(&[("SHMPIPE_MAX_CLIENTS", "1")]);
    let mut a = sidecar.connect();
    let id = a.next_id();
    // Leave a DELAY in flight (and every slot granted); then vanish.
    a.submit(RawSubmission { request_id: id, opcode: DELAY, slot_id: NO_SLOT, args: [30_000_000, 0, 0, 0], ..Default::default() });
    assert_eq!(Agent::connect(&sidecar.socket, &hello(&[])).err().as_deref(), Some("SHMPIPE_E_BUSY"));
    let seg = a.segment.clone();
    drop(a);
    wait_until("session closed", || seg.read_state() == Some(SessionState::Closed));
    let mut b = Agent::connect(&sidecar.socket, &hello(&[])).unwrap();
    let s = b.stats();
    assert_eq!(s["global"]["sessions_closed"], 1);
    assert_eq!(s["global"]["slots_reclaimed_total"], 8);
    assert_eq!(s["global"]["clients"], 1);
}

#[test]
fn handshake_refusals() {
    let sidecar = Sidecar::start(&[("SHMPIPE_HANDSHAKE_TIMEOUT", "0.3")]);
    let refuse = |v: Value| Agent::connect(&sidecar.socket, &v).err();
    assert_eq!(refuse(json!({"type": "hello", "version": 2})).as_deref(), Some("SHMPIPE_E_VERSION"));
    assert_eq!(refuse(json!({"type": "hello"})).as_deref(), Some("SHMPIPE_E_HANDSHAKE"));
    assert_eq!(refuse(json!({"type": "mapped"})).as_deref(), Some("SHMPIPE_E_HANDSHAKE"));
    assert_eq!(refuse(hello(&[("slot_count", json!(-3))])).as_deref(), Some("SHMPIPE_E_HANDSHAKE"));

    // A frame over 64 KiB.
    let mut s = std::os::unix::net::UnixStream::connect(&sidecar.socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(&mut s, &(70_000u32).to_le_bytes()).unwrap();
    assert_eq!(read_frame(&mut s).unwrap()["code"], "SHMPIPE_E_HANDSHAKE");

    // No hello at all: timeout.
    let mut s = std::os::unix::net::UnixStream::connect(&sidecar.socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_frame(&mut s).unwrap()["code"], "SHMPIPE_E_HANDSHAKE");

    // Welcome but never `mapped`: the session is dropped.
    let mut s = std::os::unix::net::UnixStream::connect(&sidecar.socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write_frame(&mut s, &hello(&[]));
    let (w, fds) = read_frame_with_fds(&mut s).unwrap();
    assert_eq!(w["type"], "welcome");
    assert_eq!(fds.len(), 3);
    let err = read_frame(&mut s).unwrap();
    assert_eq!(err["code"], "SHMPIPE_E_HANDSHAKE", "{err}");
    assert!(err["message"].as_str().unwrap().contains("mapped"));

    // The sidecar still serves.
    let mut a = sidecar.connect();
    assert_eq!(a.nop().status, 0);
    wait_until("the unmapped session closed", || a.stats()["global"]["sessions_closed"] == 1);
    let s = a.stats();
    assert_eq!(s["global"]["sessions_opened"], 2);
    assert_eq!(s["global"]["sessions_closed"], 1);
    assert_eq!(s["global"]["slots_reclaimed_total"], 8);
}

#[test]
fn parameters_are_clamped_and_rounded() {
    let sidecar = Sidecar::start(&[("SHMPIPE_MAX_SLOTS", "4"), ("SHMPIPE_MAX_SLOT_SIZE", "65536"), ("SHMPIPE_MAX_RING", "128")]);
    let h = hello(&[("slot_count", json!(100)), ("slot_size", json!(5000)), ("sq_capacity", json!(100)), ("cq_capacity", json!(100_000))]);
    let a = Agent::connect(&sidecar.socket, &h).unwrap();
    let l = &a.welcome["layout"];
    assert_eq!((l["slot_count"].as_u64(), l["slot_size"].as_u64()), (Some(4), Some(8192)));
    assert_eq!((l["sq_capacity"].as_u64(), l["cq_capacity"].as_u64()), (Some(128), Some(128)));
    let a = Agent::connect(&sidecar.socket, &json!({"type": "hello", "version": 1})).unwrap();
    let l = &a.welcome["layout"];
    assert_eq!((l["slot_count"].as_u64(), l["slot_size"].as_u64(), l["sq_capacity"].as_u64()), (Some(4), Some(65536), Some(128)));
}

#[test]
fn in_flight_limit_stops_draining_instead_of_failing() {
    let sidecar = Sidecar::start(&[("SHMPIPE_MAX_IN_FLIGHT", "2")]);
    let mut a = sidecar.connect();
    assert_eq!(a.welcome["limits"]["max_in_flight"], 2);
    let delay = |id: u64, us: u64| RawSubmission { request_id: id, opcode: DELAY, slot_id: NO_SLOT, args: [us, 0, 0, 0], ..Default::default() };
    a.push_bytes(&delay(1, 300_000).encode());
    a.push_bytes(&delay(2, 300_000).encode());
    a.push_bytes(&RawSubmission { request_id: 3, slot_id: NO_SLOT, ..Default::default() }.encode());
    a.publish();
    let order: Vec<u64> = (0..3).map(|_| a.wait_completion()).map(|c| {
        assert_eq!(c.status, 0, "{c:?}");
        c.request_id
    }).collect();
    // The NOP waited in the SQ until a DELAY finished (and freed a place).
    assert_ne!(order[0], 3, "{order:?}");
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 2, 3]);
}

#[test]
fn full_cq_keeps_every_completion() {
    let sidecar = Sidecar::start(&[]);
    let mut a = Agent::connect(&sidecar.socket, &hello(&[("cq_capacity", json!(2)), ("sq_capacity", json!(64))])).unwrap();
    for id in 1..=50u64 {
        a.push_bytes(&RawSubmission { request_id: id, slot_id: NO_SLOT, ..Default::default() }.encode());
    }
    a.publish();
    // The sidecar fills the CQ (2 entries) and must then hold the other 48 completions back.
    wait_until("CQ full", || a.segment.cq().tail().load(std::sync::atomic::Ordering::SeqCst) >= 2);
    for id in 1..=50u64 {
        let c = a.wait_completion();
        assert_eq!((c.request_id, c.status), (id, 0));
    }
    assert_eq!(a.nop().status, 0);
}

#[test]
fn segment_dir_is_only_swept_segments_are_memfds() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("shmpipe-999999999-0123456789abcdef");
    std::fs::write(&stale, b"old").unwrap();
    let sidecar = Sidecar::start(&[("SHMPIPE_SEGMENT_DIR", dir.path().to_str().unwrap())]);
    assert!(!stale.exists(), "stale segment of a dead pid swept at startup");
    let mut a = sidecar.connect();
    let name = a.welcome["segment"].as_str().unwrap().to_owned();
    assert!(name.starts_with("memfd:shmpipe-"), "{name}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing created in SHMPIPE_SEGMENT_DIR");
    let g = a.alloc();
    a.slot_write(g.slot_id, 0, b"123456789");
    let c = a.slot_op(ECHO, g, 0, 9, 0);
    assert_eq!(c.aux[0], 0xE306_9283);
}

#[test]
fn stale_socket_is_replaced_but_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut first = std::process::Command::new(BIN)
        .env("SHMPIPE_SOCKET", &path)
        .env("SHMPIPE_ADMIN_ADDR", "off")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("first sidecar listening", || std::os::unix::net::UnixStream::connect(&path).is_ok());
    let second = std::process::Command::new(BIN).env("SHMPIPE_SOCKET", &path).env("SHMPIPE_ADMIN_ADDR", "off").output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another process is listening"));
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok(), "the live socket was left alone");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.id() as i32), Signal::SIGTERM).unwrap();
    assert!(first.wait().unwrap().success());
    assert!(!path.exists());
}

#[test]
fn bad_config_exits_64_with_one_line() {
    for env in [
        vec![],
        vec![("SHMPIPE_SOCKET", "/tmp/x.sock"), ("SHMPIPE_MAX_RING", "1000")],
        vec![("SHMPIPE_SOCKET", "/tmp/x.sock"), ("SHMPIPE_MAX_CLIENTS", "lots")],
        vec![("SHMPIPE_SOCKET", "/tmp/x.sock"), ("SHMPIPE_LOG_FORMAT", "xml")],
        vec![("SHMPIPE_SOCKET", "/tmp/x.sock"), ("SHMPIPE_PREFAULT", "perhaps")],
    ] {
        let mut cmd = std::process::Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("SHMPIPE_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.envs(env.iter().copied()).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{env:?}: {err}");
    }
}

#[test]
fn sigterm_lets_in_flight_work_finish_then_exits_zero() {
    let mut sidecar = Sidecar::start(&[("SHMPIPE_SHUTDOWN_GRACE", "20")]);
    let mut a = sidecar.connect();
    let delay = RawSubmission { request_id: 77, opcode: DELAY, slot_id: NO_SLOT, args: [300_000, 0, 0, 0], ..Default::default() };
    a.submit(delay);
    // Make sure the DELAY was taken before the signal.
    wait_until("delay in flight", || a.segment.sq().tail().load(std::sync::atomic::Ordering::SeqCst) == shm_ring_head(&a));
    sidecar.signal(Signal::SIGTERM);
    let frame = read_frame(&mut a.stream).unwrap();
    assert_eq!(frame, json!({"type": "draining"}));
    wait_until("DRAINING published", || a.state() == Some(SessionState::Draining));
    let nop = a.next_id();
    a.submit(RawSubmission { request_id: nop, slot_id: NO_SLOT, ..Default::default() });
    let mut got: Vec<_> = (0..2).map(|_| a.wait_completion()).collect();
    got.sort_by_key(|c| c.request_id);
    assert_eq!((got[0].request_id, got[0].status, got[0].result), (nop, ErrorCode::ShuttingDown.status(), 0));
    assert_eq!((got[1].request_id, got[1].status, got[1].result), (77, 0, 300_000));
    a.wait_closed();
    assert_eq!(a.state(), Some(SessionState::Closed));
    assert!(sidecar.wait_exit().success());
    assert!(!sidecar.socket.exists());
}

#[test]
fn sigterm_grace_over_completes_the_rest_with_shutting_down() {
    let mut sidecar = Sidecar::start(&[("SHMPIPE_SHUTDOWN_GRACE", "0.2")]);
    let mut a = sidecar.connect();
    let delay = RawSubmission { request_id: 5, opcode: DELAY, slot_id: NO_SLOT, args: [50_000_000, 0, 0, 0], ..Default::default() };
    a.submit(delay);
    wait_until("delay in flight", || a.segment.sq().tail().load(std::sync::atomic::Ordering::SeqCst) == shm_ring_head(&a));
    sidecar.signal(Signal::SIGINT);
    let c = a.wait_completion();
    assert_eq!((c.request_id, code(&c)), (5, Some(ErrorCode::ShuttingDown)));
    a.wait_closed();
    assert!(sidecar.wait_exit().success());
    assert!(!sidecar.socket.exists());
}

fn shm_ring_head(a: &Agent) -> u64 {

    a.segment.sq().head().load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn baseline_transport_does_nop_and_echo() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("baseline.sock");
    let _sidecar = Sidecar::start(&[("SHMPIPE_BASELINE_SOCKET", base.to_str().unwrap())]);
    let mut s = std::os::unix::net::UnixStream::connect(&base).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let payload = b"123456789";
    let mut req = Vec::new();
    for (id, op, data) in [(1u64, NOP, &b""[..]), (2, ECHO, &payload[..]), (3, STATS, &b""[..])] {
        let e = RawSubmission { request_id: id, opcode: op, slot_id: NO_SLOT, ..Default::default() }.encode();
        req.extend_from_slice(&((64 + data.len()) as u32).to_le_bytes());
        req.extend_from_slice(&e);
        req.extend_from_slice(data);
    }
    s.write_all(&req).unwrap();
    let mut replies = Vec::new();
    for _ in 0..3 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        assert_eq!(u32::from_le_bytes(len), 64);
        let mut b = [0u8; 64];
        s.read_exact(&mut b).unwrap();
        replies.push(shm_protocol::Completion::decode(&b).unwrap());
    }
    assert_eq!((replies[0].request_id, replies[0].status), (1, 0));
    assert_eq!((replies[1].request_id, replies[1].result, replies[1].aux[0]), (2, 9, 0xE306_9283));
    assert_eq!((replies[2].request_id, code(&replies[2])), (3, Some(ErrorCode::UnknownOpcode)));
}

#[test]
fn stale_shm_segments_of_dead_pids_are_swept_at_startup() {
    let stale = std::path::Path::new("/dev/shm/shmpipe-999999998-00000000deadbeef");
    std::fs::write(stale, b"old").unwrap();
    let _sidecar = Sidecar::start(&[]);
    assert!(!stale.exists());
}

/// Helper mode for `uid_refusal`: when re-executed with this variable set, connect as the
/// current (unprivileged) uid and print the first frame's JSON.
#[test]
fn uid_helper_client() {
    let Ok(socket) = std::env::var("SHMPIPE_TEST_HELPER_SOCKET") else { return };
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // The uid check comes first: a refused client may find the socket already half-closed.
    let json = serde_json::to_vec(&hello(&[])).unwrap();
    let _ = std::io::Write::write_all(&mut s, &(json.len() as u32).to_le_bytes());
    let _ = std::io::Write::write_all(&mut s, &json);
    let (frame, fds) = read_frame_with_fds(&mut s).unwrap();
    println!("HELPER-FRAME {frame} FDS {}", fds.len());
}

#[test]
fn uid_refusal_and_allow_list() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client under another uid");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65_534;
    // The helper runs as another uid, which may not reach this test binary (a checkout under a
    // 0700 home, or `mktemp -d`): run a copy from a directory it can reach.
    let exe_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(exe_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = exe_dir.path().join("e2e-uid-helper");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = std::process::Command::new(&exe).arg("--list").uid(NOBODY).gid(0).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: uid {NOBODY} cannot run a copy of the test binary in {} ({probe:?})", exe_dir.path().display());
        return;
    }
    let run_helper = |sidecar: &Sidecar| -> String {
        // Let the other uid reach the socket: directory traversable, socket group-writable
        // (mode 0660) and the helper in group 0.
        std::fs::set_permissions(sidecar.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&exe)
            .args(["--exact", "uid_helper_client", "--nocapture", "--test-threads=1"])
            .env("SHMPIPE_TEST_HELPER_SOCKET", &sidecar.socket)
            .uid(NOBODY)
            .gid(0)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "helper failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let at = stdout.find("HELPER-FRAME").unwrap_or_else(|| panic!("helper printed no frame: {stdout}"));
        stdout[at..].lines().next().unwrap().to_owned()
    };
    let refused = Sidecar::start(&[]);
    let line = run_helper(&refused);
    assert!(line.contains("SHMPIPE_E_PERMISSION") && line.contains("FDS 0"), "{line}");

    let allowed = Sidecar::start(&[("SHMPIPE_ALLOW_UIDS", "65534")]);
    let line = run_helper(&allowed);
    assert!(line.contains("\"type\":\"welcome\"") && line.contains("FDS 3"), "{line}");
}

#[test]
fn sigterm_with_nothing_in_flight_still_says_draining() {
    let mut sidecar = Sidecar::start(&[("SHMPIPE_SHUTDOWN_GRACE", "0"), ("SHMPIPE_LOG_FORMAT", "json")]);
    let mut a = sidecar.connect();
    let mut b = sidecar.connect();
    // A round trip each: both sessions are past the handshake (the sidecar has read `mapped`).
    // A SIGTERM that lands while it still waits for `mapped` ends that session without a
    // draining frame — the session never started — which made this test fail now and then.
    assert_eq!(a.nop().status, 0);
    assert_eq!(b.nop().status, 0);
    sidecar.signal(Signal::SIGTERM);
    for agent in [&mut a, &mut b] {
        let frames = agent.wait_closed();
        assert_eq!(frames, vec![json!({"type": "draining"})]);
        assert_eq!(agent.state(), Some(SessionState::Closed));
    }
    assert!(sidecar.wait_exit().success());
    // JSON logs: every line is an object.
    let log = sidecar.log_text();
    assert!(log.lines().count() > 3);
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
}

/// The object-store ops through the real binary (SPEC §7.2) and the grant reserve (§9): PUT
/// of a slot, STAT, a whole-object read stream, LIST, DELETE, with the STATS invariant kept.
#[test]
fn store_ops_and_the_read_reserve() {
    use shm_protocol::entry::RANGE_TO_END;
    use shm_protocol::Opcode;
    let sidecar = Sidecar::start(&[("SHMPIPE_READ_RESERVE", "2")]);
    let mut a = sidecar.connect();
    assert_eq!(a.welcome["limits"]["read_reserve"], 2);
    assert_eq!(a.welcome["limits"]["part_size"], 8 << 20);
    assert_eq!(a.grants.len(), 6, "8 slots, 2 kept back for read streams");
    let s = a.stats();
    assert_eq!(s["session"]["slots_free"], 2);
    check_stats_invariant(&s);

    // PUT: data at [0, n), key after it; the slot is consumed (no SLOT), later granted anew.
    let g = a.alloc();
    let data: Vec<u8> = (0..(1u32 << 20) - 4096).map(|i| (i % 253) as u8).collect();
    a.slot_write(g.slot_id, 0, &data);
    a.slot_write(g.slot_id, data.len(), b"e2e/one");
    let id = a.next_id();
    let c = a.request(RawSubmission {
        request_id: id,
        opcode: Opcode::Put as u8,
        slot_id: g.slot_id,
        slot_gen: g.slot_gen,
        length: data.len() as u32,
        args: [7, data.len() as u64, 0, 0],
        ..Default::default()
    });
    assert_eq!((c.status, c.flags, c.result, c.aux[0]), (0, 0, data.len() as u64, u64::from(crc32c::crc32c(&data))));
    let again = a.wait_grant(g.slot_id);
    assert_eq!(again.slot_gen, g.slot_gen + 1);
    assert!(sidecar.dir.path().join("store/e2e/one").is_file());

    // STAT.
    let k = a.alloc();
    a.slot_write(k.slot_id, 0, b"e2e/one");
    let c = a.slot_op(Opcode::Stat as u8, k, 0, 7, 0);
    assert_eq!((c.status, c.flags, c.result), (0, cq_flags::SLOT, data.len() as u64));

    // A whole-object read: the key slot carries the first (and only) chunk, then the end.
    let id = a.next_id();
    a.submit(RawSubmission {
        request_id: id,
        opcode: Opcode::OpenRead as u8,
        slot_id: k.slot_id,
        slot_gen: k.slot_gen,
        length: 7,
        args: [0, RANGE_TO_END, 0, 0],
        ..Default::default()
    });
    let chunk = a.wait_completion();
    assert_eq!((chunk.request_id, chunk.flags, chunk.result, chunk.aux[0]), (id, cq_flags::MORE | cq_flags::SLOT, data.len() as u64, 0));
    assert_eq!(chunk.slot_id, k.slot_id);
    assert_eq!(a.slot_read(chunk.slot_id, 0, data.len()), data);
    let end = a.wait_completion();
    assert_eq!((end.request_id, end.status, end.flags, end.result, end.aux[0]), (id, 0, 0, data.len() as u64, 1));
    let chunk_slot = shm_protocol::Grant { slot_id: chunk.slot_id, slot_gen: chunk.slot_gen };

    // LIST into the chunk slot, then DELETE; NOT_FOUND afterwards, with the message in the slot.
    let req = br#"{"prefix":"e2e"}"#;
    a.slot_write(chunk_slot.slot_id, 0, req);
    let c = a.slot_op(Opcode::List as u8, chunk_slot, 0, req.len() as u32, 0);
    assert_eq!(c.status, 0);
    let doc: Value = serde_json::from_slice(&a.slot_read(chunk_slot.slot_id, 0, c.result as usize)).unwrap();
    assert_eq!(doc, json!({"entries": [{"key": "e2e/one", "size": data.len(), "mtime_ms": doc["entries"][0]["mtime_ms"]}], "next": null}));
    a.slot_write(chunk_slot.slot_id, 0, b"e2e/one");
    assert_eq!(a.slot_op(Opcode::Delete as u8, chunk_slot, 0, 7, 0).status, 0);
    let c = a.slot_op(Opcode::Stat as u8, chunk_slot, 0, 7, 0);
    assert_eq!((code(&c), c.flags), (Some(ErrorCode::NotFound), cq_flags::SLOT));
    assert!(String::from_utf8(a.slot_read(chunk_slot.slot_id, 0, c.result as usize)).unwrap().contains("e2e/one"));

    let s = a.stats();
    check_stats_invariant(&s);
    assert_eq!(s["session"]["slots_in_flight"], 1, "only the STATS slot");
}

/// Slot memory is allocated when a slot is first used and given back when a slot stays FREE
/// (SPEC §12 "Memory"): a session that asks for many slots and uses few costs only those.
#[test]
fn slot_memory_is_allocated_on_use_and_given_back_when_idle() {
    use std::os::unix::fs::MetadataExt;
    const MIB: usize = 1 << 20;
    let sidecar = Sidecar::start(&[("SHMPIPE_READ_RESERVE", "4")]);
    let mut a = Agent::connect(&sidecar.socket, &hello(&[("slot_count", json!(8)), ("slot_size", json!(MIB))])).unwrap();
    let allocated = |a: &Agent| a.segment_file.metadata().unwrap().blocks() as usize * 512;
    let rings = a.layout.slot_offset as usize;
    assert_eq!(allocated(&a), rings, "only the header and rings are allocated up front");
    assert_eq!(a.grants.len(), 4, "four slots granted, four FREE (the read reserve)");

    // The agent fills one of its slots, and (misbehaving) one it does not hold.
    let held = a.grants[0].slot_id;
    let free = (0..8).find(|id| a.grants.iter().all(|g| g.slot_id != *id)).unwrap();
    a.slot_write(held, 0, &vec![1u8; MIB]);
    a.slot_write(free, 0, &vec![2u8; MIB]);
    assert_eq!(allocated(&a), rings + 2 * MIB);
    // The FREE slot's pages go back within two sweeps; the held one's stay.
    wait_until("the idle FREE slot released", || allocated(&a) == rings + MIB);
    assert!(a.slot_read(free, 0, 16).iter().all(|&b| b == 0), "a released slot reads as zeros");
    assert_eq!(a.slot_read(held, MIB - 16, 16), vec![1u8; 16]);
    assert_eq!(a.nop().status, 0);
}
