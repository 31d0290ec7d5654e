//! The transient-error classifier (`src/transient.rs`) tested by faults, not by strings: the
//! S3 store is pointed at a scripted HTTP server on 127.0.0.1 that answers each request with
//! the next fault of its script (an HTTP status with an S3 error document, a connection reset,
//! a stall, a body cut short) and counts the requests. Each test asserts what a user of the
//! store sees — `is_transient()`, the wire code — and how many attempts object_store made.
//! Needs nothing but the loopback interface. (End to end through the sidecar, against moto and
//! a fault-injecting proxy: test/faults-s3.test.js.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shmpipe_store::{RetryOptions, Store, StoreConfig, StoreError, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted server does with one request.
#[derive(Debug, Clone)]
enum Fault {
    /// Answers with this status and an S3 error document with this `<Code>`.
    Status(u16, &'static str),
    /// Closes the connection with a TCP reset, no response.
    Reset,
    /// Never answers (holds the connection open).
    Stall,
    /// 200 with an ETag: a PUT that worked.
    Ok,
    /// Serves `len` bytes of an object (honouring `Range: bytes=a-`), cutting the body off
    /// after `cut` bytes.
    Truncated { len: usize, cut: usize },
}

/// A scripted HTTP server: request i gets `script[i]`, or the last entry once the script
/// is used up (a persistent fault).
struct FaultServer {
    endpoint: String,
    requests: Arc<AtomicUsize>,
    methods: Arc<Mutex<Vec<String>>>,
}

impl FaultServer {
    async fn start(script: Vec<Fault>) -> Self {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let methods = Arc::new(Mutex::new(Vec::new()));
        let (n, m) = (requests.clone(), methods.clone());
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let (n, m, script) = (n.clone(), m.clone(), script.clone());
                tokio::spawn(async move { serve(sock, &script, &n, &m).await });
            }
        });
        Self { endpoint, requests, methods }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn methods(&self) -> Vec<String> {
        self.methods.lock().unwrap().clone()
    }
}

/// Serves requests on one connection until the script closes it.
async fn serve(mut sock: TcpStream, script: &[Fault], n: &AtomicUsize, methods: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_request(&mut sock, &mut buf).await else { return };
        let i = n.fetch_add(1, Ordering::SeqCst);
        methods.lock().unwrap().push(head.method.clone());
        let fault = script[i.min(script.len() - 1)].clone();
        match fault {
            Fault::Status(status, code) => {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>scripted</Message><RequestId>1</RequestId></Error>"
                );
                let resp = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                return;
            }
            Fault::Reset => {
                // Linger 0 does not block on drop: it is what makes the close a reset.
                #[allow(deprecated)]
                let _ = sock.set_linger(Some(Duration::ZERO));
                return; // dropped with linger 0: RST
            }
            Fault::Stall => {
                // Until the client gives up (its request timeout) and closes.
                let mut sink = [0u8; 1024];
                while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Fault::Ok => {
                let resp = "HTTP/1.1 200 OK\r\nETag: \"scripted\"\r\nContent-Length: 0\r\n\r\n";
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Truncated { len, cut } => {
                let from = head.range_start.unwrap_or(0).min(len);
                let status = if head.range_start.is_some() { "206 Partial Content" } else { "200 OK" };
                let range = if head.range_start.is_some() {
                    format!("Content-Range: bytes {from}-{}/{len}\r\n", len - 1)
                } else {
                    String::new()
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{range}ETag: \"scripted\"\r\nLast-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\nAccept-Ranges: bytes\r\n\r\n",
                    len - from
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.write_all(&vec![0x5a; cut.min(len - from)]).await;
                return; // closed mid-body
            }
        }
    }
}

struct Head {
    method: String,
    range_start: Option<usize>,
}

/// Reads one request (head and body: Content-Length or chunked); `None` at EOF.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Head> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let method = head.split(' ').next().unwrap_or("").to_ascii_uppercase();
    let header = |name: &str| {
        head.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
    };
    let range_start = header("range").and_then(|r| r.strip_prefix("bytes=")?.split('-').next()?.parse().ok());
    buf.drain(..end);
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
            let mut chunk = [0u8; 65536];
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let at = buf.windows(5).position(|w| w == b"0\r\n\r\n").unwrap() + 5;
        buf.drain(..at);
    } else {
        let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 65536];
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..len);
    }
    Some(Head { method, range_start })
}

const MAX_RETRIES: usize = 2;

fn store(endpoint: &str) -> Store {
    let options = StoreOptions {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        path_style: Some(true),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        retry: RetryOptions {
            max_retries: MAX_RETRIES,
            init_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            backoff_base: 2.0,
            retry_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_millis(700),
            connect_timeout: Duration::from_secs(2),
        },
        ..StoreOptions::default()
    };
    Store::open_with_env(&StoreConfig::new("s3://faults/p", options).unwrap(), Vec::new()).unwrap()
}

async fn put(s: &Store) -> Result<(), StoreError> {
    s.put("obj", [Bytes::from_static(b"some object data")]).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_statuses_persisting_through_every_retry_are_transient() {
    for (status, code) in [(503, "SlowDown"), (500, "InternalError"), (502, "BadGateway"), (504, "GatewayTimeout"), (429, "SlowDown"), (408, "RequestTimeout")] {
        let server = FaultServer::start(vec![Fault::Status(status, code)]).await;
        let e = put(&store(&server.endpoint)).await.expect_err("a PUT answered {status} every time fails");
        assert!(e.is_transient(), "{status} {code}: {e}");
        assert_eq!(e.code(), "SHMPIPE_E_STORE");
        assert!(matches!(e, StoreError::Store { transient: true, .. }), "{e}");
        assert_eq!(server.requests(), MAX_RETRIES + 1, "{status}: the first attempt and every retry");
        assert!(e.to_string().contains(&status.to_string()), "the status is in the message: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_statuses_are_not_transient_and_not_retried() {
    for (status, code) in [(403, "AccessDenied"), (400, "InvalidRequest"), (401, "InvalidAccessKeyId"), (412, "PreconditionFailed")] {
        let server = FaultServer::start(vec![Fault::Status(status, code)]).await;
        let e = put(&store(&server.endpoint)).await.expect_err("refused");
        assert!(!e.is_transient(), "{status} {code}: {e}");
        assert_eq!(e.code(), "SHMPIPE_E_STORE");
        assert_eq!(server.requests(), 1, "{status} is not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_within_the_retry_budget_are_invisible() {
    let script = vec![Fault::Status(503, "SlowDown"), Fault::Reset, Fault::Ok];
    let server = FaultServer::start(script).await;
    put(&store(&server.endpoint)).await.expect("two faults, then success: within 2 retries");
    assert_eq!(server.requests(), 3);
    assert_eq!(server.methods(), ["PUT", "PUT", "PUT"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_stalls_are_transient() {
    for fault in [Fault::Reset, Fault::Stall] {
        let server = FaultServer::start(vec![fault.clone()]).await;
        let s = store(&server.endpoint);
        let e = put(&s).await.expect_err("no answer");
        assert!(e.is_transient(), "{fault:?} on PUT: {e}");
        // GET and the trailer GET of STAT are idempotent: retried on resets and timeouts alike.
        let before = server.requests();
        let e = s.stat("obj").await.expect_err("no answer");
        assert!(e.is_transient(), "{fault:?} on STAT: {e}");
        assert_eq!(server.requests() - before, MAX_RETRIES + 1, "{fault:?}: STAT retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_every_time_is_transient() {
    let server = FaultServer::start(vec![Fault::Truncated { len: 100_000, cut: 1000 }]).await;
    let s = store(&server.endpoint);
    let mut r = s.open_read("obj", None).await.expect("the headers arrive");
    let e = loop {
        match r.next_chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a truncated body read to its end"),
            Err(e) => break e,
        }
    };
    assert!(e.is_transient(), "{e}");
    assert_eq!(e.code(), "SHMPIPE_E_STORE");
    assert!(server.requests() >= 2, "object_store resumed the body at least once: {}", server.requests());
}
