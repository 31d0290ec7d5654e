//! End-to-end tests of the admin endpoint (`SHMPIPE_ADMIN_ADDR`): probes, the `/metrics`
//! exposition (read by a strict OpenMetrics reader, `support::exposition`) moving with real
//! traffic through a session, readiness during a SIGTERM drain, `off`, and bad addresses.
//! No test asserts a duration; waits have generous deadlines.

mod support;

use nix::sys::signal::Signal;
use serde_json::json;
use shm_protocol::entry::RawSubmission;
use shm_protocol::layout::NO_SLOT;
use shm_protocol::ring::RingStorage;
use shm_protocol::ErrorCode;
use support::exposition::{self, Exposition};
use support::http;
use support::*;

const ECHO: u8 = 1;
const STATS: u8 = 3;
const DELAY: u8 = 4;

fn scrape(addr: std::net::SocketAddr) -> Exposition {
    let r = http::get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    exposition::parse(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
}

fn requests(m: &Exposition, op: &str, status: &str) -> f64 {
    m.get("shmpipe_requests_total", &[("op", op), ("status", status)])
}

/// TCP ports the process `pid` listens on: its socket inodes matched against the LISTEN
/// entries of its network namespace's /proc tcp tables.
fn tcp_listen_ports(pid: i32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| Some(l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address = f[1] ("ADDR:PORT" in hex), st = f[3] (0A = LISTEN), inode = f[9].
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                ports.push(u16::from_str_radix(f[1].rsplit(':').next().unwrap(), 16).unwrap());
            }
        }
    }
    ports
}

#[test]
fn probes_answer_once_listening() {
    let sidecar = Sidecar::start(&[]);
    let addr = sidecar.admin_addr();
    assert!(addr.ip().is_loopback());
    let live = http::get(addr, "/live");
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));
    let ready = http::get(addr, "/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(http::get(addr, "/").status, 404);
    assert_eq!(http::get(addr, "/metrics/x").status, 404);
    let post = http::request(addr, "POST", "/ready").unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    let head = http::request(addr, "HEAD", "/live").unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(tcp_listen_ports(sidecar.pid()), vec![addr.port()]);
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let sidecar = Sidecar::start(&[]);
    let addr = sidecar.admin_addr();
    let before = scrape(addr);
    // Every family the issue asks for, with HELP and TYPE (the reader checked syntax).
    for (family, kind) in [
        ("shmpipe_requests", "counter"),
        ("shmpipe_request_duration_seconds", "histogram"),
        ("shmpipe_bytes_in", "counter"),
        ("shmpipe_bytes_out", "counter"),
        ("shmpipe_slots", "gauge"),
        ("shmpipe_clients", "gauge"),
        ("shmpipe_sessions", "counter"),
        ("shmpipe_ring_full_waits", "counter"),
        ("shmpipe_protocol_violations", "counter"),
        ("shmpipe_store_errors", "counter"),
        ("shmpipe_store_retries", "counter"),
        ("shmpipe_build_info", "gauge"),
    ] {
        let f = before.families.get(family).unwrap_or_else(|| panic!("no family {family}"));
        assert_eq!(f.kind, kind, "{family}");
        assert!(f.help.as_deref().is_some_and(|h| !h.is_empty()), "{family} has no HELP");
    }
    assert_eq!(before.get("shmpipe_clients", &[]), 0.0);
    assert_eq!(before.get("shmpipe_store_errors_total", &[("kind", "unavailable")]), 0.0);
    assert_eq!(before.get("shmpipe_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);

    let mut a = sidecar.connect();
    let slot_count = f64::from(a.layout.params.slot_count);
    // Counters are folded at the end of the dispatcher turn that published the completions,
    // so a scrape right after a completion may still miss it: wait for the values to arrive.
    let wait_for = |what: &str, f: &dyn Fn(&Exposition) -> bool| {
        let mut last = None;
        wait_until(what, || {
            let m = scrape(addr);
            let ok = f(&m);
            last = Some(m);
            ok
        });
        last.unwrap()
    };
    wait_for("clients = 1", &|m| m.get("shmpipe_clients", &[]) == 1.0);

    const N: u64 = 37;
    for _ in 0..N {
        assert_eq!(a.nop().status, 0);
    }
    let lengths = [1u32, 100, 4096, 65_536, 300_000]; // the last one runs on the runtime
    let echoed: u64 = lengths.iter().map(|l| u64::from(*l)).sum();
    let g = a.alloc();
    for len in lengths {
        let c = a.slot_op(ECHO, g, 0, len, 0);
        assert_eq!((c.status, c.result), (0, u64::from(len)));
    }
    // An error completion: a slot id past slot_count.
    let id = a.next_id();
    let c = a.request(RawSubmission { request_id: id, opcode: ECHO, slot_id: 1000, slot_gen: 1, length: 1, ..Default::default() });
    assert_eq!(ErrorCode::from_status(c.status), Some(ErrorCode::InvalidSlot));
    // An entry refused before its opcode is known.
    let id = a.next_id();
    let c = a.request(RawSubmission { request_id: id, opcode: 200, slot_id: NO_SLOT, ..Default::default() });
    assert_eq!(ErrorCode::from_status(c.status), Some(ErrorCode::UnknownOpcode));

    let m = wait_for("counters to reach the traffic", &|m| {
        requests(m, "nop", "ok") == requests(&before, "nop", "ok") + N as f64
            && requests(m, "echo", "ok") == requests(&before, "echo", "ok") + lengths.len() as f64
            && requests(m, "echo", "SHMPIPE_E_INVALID_SLOT") == 1.0
            && requests(m, "unknown", "SHMPIPE_E_UNKNOWN_OPCODE") == 1.0
            && m.get("shmpipe_bytes_in_total", &[]) == echoed as f64
    });
    // Exactly the traffic, nothing else.
    let total: f64 = m.families["shmpipe_requests"].samples.iter().map(|s| s.value).sum();
    assert_eq!(total, (N + lengths.len() as u64 + 2) as f64);
    assert_eq!(m.get("shmpipe_bytes_out_total", &[]), 0.0);
    // Every completion was timed once: histogram counts match the request counts.
    let count = |op: &str| m.get("shmpipe_request_duration_seconds_count", &[("op", op)]);
    assert_eq!(count("nop"), N as f64);
    assert_eq!(count("echo"), (lengths.len() + 1) as f64);
    assert_eq!(count("unknown"), 1.0);
    assert!(m.get("shmpipe_request_duration_seconds_sum", &[("op", "nop")]) > 0.0);
    assert_eq!(m.get("shmpipe_sessions_total", &[]), 1.0);
    assert_eq!(m.get("shmpipe_clients", &[]), 1.0);
    // The agent holds every slot (granted); none in flight between requests.
    let slots = |m: &Exposition, state: &str| m.get("shmpipe_slots", &[("state", state)]);
    assert_eq!(slots(&m, "free") + slots(&m, "granted") + slots(&m, "in_flight"), slot_count);
    assert_eq!(slots(&m, "in_flight"), 0.0);

    // STATS writes its document into the slot: bytes_out moves by exactly its length.
    let g = a.alloc();
    let c = a.slot_op(STATS, g, 0, a.layout.params.slot_size, 0);
    assert_eq!(c.status, 0);
    let doc: serde_json::Value = serde_json::from_slice(&a.slot_read(g.slot_id, 0, c.result as usize)).unwrap();
    assert_eq!(doc["global"]["errors_by_code"]["SHMPIPE_E_INVALID_SLOT"], 1, "STATS reads the same counters");
    let m = wait_for("bytes_out", &|m| m.get("shmpipe_bytes_out_total", &[]) > 0.0);
    assert_eq!(m.get("shmpipe_bytes_out_total", &[]), c.result as f64);
    assert_eq!(requests(&m, "stats", "ok"), 1.0);

    drop(a);
    let m = wait_for("clients = 0 after disconnect", &|m| m.get("shmpipe_clients", &[]) == 0.0);
    wait_for("slot gauges empty", &|m| ["free", "granted", "in_flight"].iter().all(|s| slots(m, s) == 0.0));
    assert_eq!(m.get("shmpipe_sessions_total", &[]), 1.0);
}

#[test]
fn full_cq_counts_ring_full_waits() {
    let sidecar = Sidecar::start(&[]);
    let addr = sidecar.admin_addr();
    let mut a = Agent::connect(&sidecar.socket, &hello(&[("cq_capacity", json!(2)), ("sq_capacity", json!(64))])).unwrap();
    for id in 1..=20u64 {
        a.push_bytes(&RawSubmission { request_id: id, slot_id: NO_SLOT, ..Default::default() }.encode());
    }
    a.publish();
    for id in 1..=20u64 {
        assert_eq!(a.wait_completion().request_id, id);
    }
    // The first two fit into the CQ; at least the third had to wait.
    let mut waits = 0.0;
    wait_until("cq waits counted", || {
        waits = scrape(addr).get("shmpipe_ring_full_waits_total", &[("ring", "cq")]);
        waits >= 1.0
    });
    assert!(waits <= 18.0, "{waits}");
}

#[test]
fn sigterm_turns_ready_off_while_live_stays_on_then_exits_zero() {
    let mut sidecar = Sidecar::start(&[("SHMPIPE_SHUTDOWN_GRACE", "60")]);
    let addr = sidecar.admin_addr();
    let mut a = sidecar.connect();
    assert_eq!(http::get(addr, "/ready").status, 200);
    // A DELAY that outlasts the test: the drain ends on a second signal, not on time.
    a.submit(RawSubmission { request_id: 9, opcode: DELAY, slot_id: NO_SLOT, args: [60_000_000, 0, 0, 0], ..Default::default() });
    wait_until("delay taken", || a.segment.sq().head().load(std::sync::atomic::Ordering::SeqCst) == 1);
    sidecar.signal(Signal::SIGTERM);
    assert_eq!(read_frame(&mut a.stream).unwrap(), json!({"type": "draining"}));
    // Draining: not ready, still live, still scraped.
    let ready = http::get(addr, "/ready");
    assert_eq!((ready.status, ready.body.as_str()), (503, "not ready: draining\n"));
    assert_eq!(http::get(addr, "/live").status, 200);
    assert_eq!(scrape(addr).get("shmpipe_async_in_flight", &[]), 1.0);
    // New sessions are refused while draining (the listener is closed: ECONNREFUSED; a
    // connection accepted just before the drain would get SHMPIPE_E_BUSY).
    assert!(Agent::connect(&sidecar.socket, &hello(&[])).is_err());
    sidecar.signal(Signal::SIGTERM);
    let c = a.wait_completion();
    assert_eq!((c.request_id, ErrorCode::from_status(c.status)), (9, Some(ErrorCode::ShuttingDown)));
    a.wait_closed();
    assert!(sidecar.wait_exit().success());
    assert!(http::request(addr, "GET", "/live").is_err(), "the admin listener is gone after exit");
}

#[test]
fn admin_off_opens_no_listener() {
    let sidecar = Sidecar::start(&[("SHMPIPE_ADMIN_ADDR", "off")]);
    let mut a = sidecar.connect();
    assert_eq!(a.nop().status, 0);
    assert!(!sidecar.log_text().contains("admin listening"));
    assert_eq!(tcp_listen_ports(sidecar.pid()), Vec::<u16>::new());
}

fn run_bin(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("SHMPIPE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn bad_admin_addr_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    for bad in ["localhost:9464", "9464", "1.2.3.4:70000", "", "on"] {
        let out = run_bin(&[("SHMPIPE_SOCKET", socket.to_str().unwrap()), ("SHMPIPE_ADMIN_ADDR", bad)]);
        assert_eq!(out.status.code(), Some(64), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{bad:?}: {err}");
        assert!(err.contains("admin-addr") && err.contains("SHMPIPE_"), "{bad:?}: {err}");
    }
    assert!(!socket.exists());
}

#[test]
fn taken_admin_port_is_a_startup_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let out = run_bin(&[("SHMPIPE_SOCKET", socket.to_str().unwrap()), ("SHMPIPE_ADMIN_ADDR", &addr)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on SHMPIPE_ADMIN_ADDR {addr}")), "{err}");
    assert!(!socket.exists(), "the control socket file is removed again");
}

#[test]
fn taken_default_port_only_costs_the_admin_endpoint() {
    // Hold the default port (if another process already does, it is taken all the same).
    let _held = std::net::TcpListener::bind("127.0.0.1:9464");
    let sidecar = Sidecar::start_with_default_admin(&[]);
    let mut a = sidecar.connect();
    assert_eq!(a.nop().status, 0);
    assert!(sidecar.log_text().contains("running without the admin endpoint"), "{}", sidecar.log_text());
    assert_eq!(tcp_listen_ports(sidecar.pid()), Vec::<u16>::new());
}

#[test]
fn exposition_reader_rejects_malformed_text() {
    // The reader must be able to fail: each of these breaks one rule.
    let good = "# HELP a_x x\n# TYPE a_x counter\na_x_total{k=\"v\\\"\"} 1\n# EOF\n";
    assert_eq!(exposition::parse(good).unwrap().get("a_x_total", &[("k", "v\"")]), 1.0);
    for bad in [
        "# TYPE a counter\na_total 1\n",
        "# TYPE a counter\na_total 1# EOF\n",
        "# TYPE a counter\na 1\n# EOF\n",
        "# TYPE a counter\na_total -1\n# EOF\n",
        "# TYPE a gauge\na{k=v} 1\n# EOF\n",
        "# TYPE a gauge\na{k=\"v\",k=\"w\"} 1\n# EOF\n",
        "# TYPE a gauge\na{1k=\"v\"} 1\n# EOF\n",
        "# TYPE a gauge\na 1x\n# EOF\n",
        "a 1\n# EOF\n",
        "# TYPE a gauge\nb 1\n# EOF\n",
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# HELP a late\n# EOF\n",
        "# TYPE a histogram\na_bucket{le=\"1\"} 2\na_bucket{le=\"+Inf\"} 1\na_count 1\na_sum 0\n# EOF\n",
        "# TYPE a histogram\na_bucket{le=\"+Inf\"} 2\na_count 1\na_sum 0\n# EOF\n",
        "# TYPE a histogram\na_bucket{le=\"1\"} 1\na_count 1\na_sum 0\n# EOF\n",
        "# TYPE a_s histogram\n# UNIT a_s bytes\na_s_count 0\n# EOF\n",
        "# TYPE a gauge\na 1\n\n# EOF\n",
    ] {
        assert!(exposition::parse(bad).is_err(), "accepted: {bad:?}");
    }
}
