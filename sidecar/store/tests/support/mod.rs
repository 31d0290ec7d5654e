//! Shared test support: deterministic data, counting slot-lease stand-ins, an object_store
//! wrapper that records the buffers it receives, and the moto S3 server.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use futures::StreamExt;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use shmpipe_store::{RetryOptions, StoreOptions};

// ---------- deterministic data ----------

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the bytes at `offset..` of the stream named `seed` (any offset can be
/// regenerated independently, so huge objects are compared without keeping them).
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = splitmix64(seed ^ (pos / 8).wrapping_mul(0x2545_f491_4f6c_dd1d)).to_le_bytes();
        let in_word = (pos % 8) as usize;
        let n = (8 - in_word).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[in_word..in_word + n]);
        i += n;
        pos += n as u64;
    }
}

pub fn pattern(seed: u64, range: Range<u64>) -> Vec<u8> {
    let mut v = vec![0u8; (range.end - range.start) as usize];
    fill_pattern(seed, range.start, &mut v);
    v
}

// ---------- slot-lease stand-ins ----------

/// Stands in for the sidecar's slot lease: owns a buffer, counts its drops (a drop is a slot
/// going back to the free list).
pub struct Lease {
    data: Arc<[u8]>,
    drops: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Makes leases and remembers where their buffers are.
#[derive(Default)]
pub struct Leases {
    drops: Arc<AtomicUsize>,
    made: AtomicUsize,
    ranges: Mutex<Vec<Range<usize>>>,
    /// `Some`: every buffer stays allocated until the test ends, so an address seen later
    /// cannot belong to a new allocation that reused a returned lease's memory.
    keep: Option<Mutex<Vec<Arc<[u8]>>>>,
}

impl Leases {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leases whose memory is never reused during the test (for address comparisons).
    pub fn keeping() -> Self {
        Self { keep: Some(Mutex::new(Vec::new())), ..Self::default() }
    }

    /// `Bytes::from_owner(lease)` over `data`, as the sidecar will build it.
    pub fn lease(&self, data: Vec<u8>) -> Bytes {
        let data: Arc<[u8]> = data.into();
        let start = data.as_ptr() as usize;
        self.ranges.lock().unwrap().push(start..start + data.len());
        if let Some(keep) = &self.keep {
            keep.lock().unwrap().push(data.clone());
        }
        self.made.fetch_add(1, Ordering::SeqCst);
        Bytes::from_owner(Lease { data, drops: self.drops.clone() })
    }

    pub fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }

    pub fn outstanding(&self) -> usize {
        self.made() - self.dropped()
    }

    /// True if `ptr..ptr+len` lies inside one lease's buffer (the bytes were not copied).
    /// Only meaningful for [`Leases::keeping`].
    pub fn contains(&self, span: &Range<usize>) -> bool {
        assert!(self.keep.is_some(), "use Leases::keeping() for address checks");
        self.ranges.lock().unwrap().iter().any(|r| r.start <= span.start && span.end <= r.end)
    }
}

// ---------- an object_store that records what it receives ----------

/// Wraps a backend and records the address range of every payload chunk handed to
/// `put_opts` and `put_part`: if they lie inside the caller's leases, the store layer passed
/// the caller's memory through without copying it. Optionally holds part uploads at a gate
/// (to observe backpressure deterministically) or fails parts from some index on.
#[derive(Debug, Default)]
pub struct SpyState {
    pub seen: Mutex<Vec<Range<usize>>>,
    /// Part uploads wait for a permit here (if set).
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Parts with index >= this fail (if set).
    pub fail_from_part: Option<usize>,
    pub parts_started: AtomicUsize,
    pub parts_running: AtomicUsize,
    pub max_parts_running: AtomicUsize,
    pub aborts: AtomicUsize,
    pub completes: AtomicUsize,
    /// GET bodies are re-cut into pieces of this many bytes (if set), so trailers and data
    /// ends fall across chunk boundaries.
    pub rechunk_get: Option<usize>,
}

#[derive(Debug)]
pub struct SpyStore {
    inner: Arc<dyn ObjectStore>,
    pub state: Arc<SpyState>,
}

impl SpyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, state: SpyState) -> Self {
        Self { inner, state: Arc::new(state) }
    }

    pub fn seen(&self) -> Vec<Range<usize>> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn record(seen: &Mutex<Vec<Range<usize>>>, payload: &PutPayload) {
    let mut s = seen.lock().unwrap();
    for b in payload {
        let p = b.as_ptr() as usize;
        s.push(p..p + b.len());
    }
}

impl std::fmt::Display for SpyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spy({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for SpyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        record(&self.state.seen, &payload);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SpyUpload { inner, state: self.state.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let mut res = self.inner.get_opts(location, options).await?;
        if let Some(n) = self.state.rechunk_get {
            let payload = std::mem::replace(&mut res.payload, GetResultPayload::Stream(futures::stream::empty().boxed()));
            let body = GetResult { payload, ..res_shell(&res) }.into_stream();
            let pieces = body
                .map(move |r| {
                    let v: Vec<object_store::Result<Bytes>> = match r {
                        Ok(b) => (0..b.len()).step_by(n).map(|i| Ok(b.slice(i..(i + n).min(b.len())))).collect(),
                        Err(e) => vec![Err(e)],
                    };
                    futures::stream::iter(v)
                })
                .flatten()
                .boxed();
            res.payload = GetResultPayload::Stream(pieces);
        }
        Ok(res)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A GetResult carrying `res`'s metadata (to turn a payload into a stream).
fn res_shell(res: &GetResult) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
        meta: res.meta.clone(),
        range: res.range.clone(),
        attributes: res.attributes.clone(),
        extensions: res.extensions.clone(),
    }
}

#[derive(Debug)]
struct SpyUpload {
    inner: Box<dyn MultipartUpload>,
    state: Arc<SpyState>,
}

struct Running(Arc<SpyState>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.parts_running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl MultipartUpload for SpyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        record(&self.state.seen, &data);
        let index = self.state.parts_started.fetch_add(1, Ordering::SeqCst);
        let fail = self.state.fail_from_part.is_some_and(|n| index >= n);
        let upload = self.inner.put_part(data);
        let state = self.state.clone();
        Box::pin(async move {
            let now = state.parts_running.fetch_add(1, Ordering::SeqCst) + 1;
            state.max_parts_running.fetch_max(now, Ordering::SeqCst);
            let _running = Running(state.clone());
            if let Some(gate) = &state.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            if fail {
                return Err(object_store::Error::Generic { store: "Spy", source: "injected part failure".into() });
            }
            upload.await
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.state.completes.fetch_add(1, Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.state.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}

// ---------- the S3 test server (moto) ----------

/// This crate's directory: cargo sets CARGO_MANIFEST_DIR when it runs the test (preferred:
/// a binary reused from another checkout would otherwise point there), else compile time.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn repo_root() -> PathBuf {
    crate_dir().join("../..")
}

/// moto's S3 server, started by `tests/support/s3_server.py` from the venv that
/// `scripts/install-s3-server.sh` installs. Killed on drop.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
}

pub const BUCKET: &str = "shmpipe-test";

impl S3Server {
    /// Starts a server on `port` (None: a free port) and waits until it answers.
    pub fn start(port: Option<u16>) -> Result<Self, String> {
        let venv = std::env::var_os("SHMPIPE_S3_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv-s3"));
        let python = venv.join("bin/python");
        if !python.exists() {
            return Err(format!("moto is not installed ({} missing)", python.display()));
        }
        let script = crate_dir().join("tests/support/s3_server.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--port")
            .arg(port.unwrap_or(0).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("moto did not report READY within 60 s".into());
            }
        };
        match line.trim().strip_prefix("READY ").and_then(|p| p.parse().ok()) {
            Some(port) => Ok(Self { child: Some(child), port }),
            None => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(format!("moto launcher failed (said {line:?}, exit {status:?})"))
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A started server, or `None` (after printing why) when moto is unavailable — unless
/// SHMPIPE_REQUIRE_S3=1 (CI), which makes an unavailable server a test failure.
pub fn s3_server_or_skip(test: &str) -> Option<S3Server> {
    match S3Server::start(None) {
        Ok(s) => Some(s),
        Err(why) if std::env::var("SHMPIPE_REQUIRE_S3").as_deref() == Ok("1") => {
            panic!("{test}: SHMPIPE_REQUIRE_S3=1 but the S3 test server could not start: {why}")
        }
        Err(why) => {
            // Straight to the process's stderr: libtest captures eprintln! of passing tests,
            // and a skip must be visible.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {why}. Run scripts/install-s3-server.sh; set SHMPIPE_REQUIRE_S3=1 to fail instead."
            );
            None
        }
    }
}

/// Options for the moto server: static test credentials, path style, plain HTTP, and short
/// retries so failure tests finish quickly.
pub fn s3_options(endpoint: &str) -> StoreOptions {
    StoreOptions {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        path_style: Some(true),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
        retry: RetryOptions {
            max_retries: 2,
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            backoff_base: 2.0,
            retry_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(2),
        },
        ..StoreOptions::default()
    }
}

/// Raw S3 access for setup, inspection and tampering, bypassing the store layer: bucket
/// creation and multipart listing as plain HTTP (moto allows them unsigned), object bytes
/// through a plain object_store client (signed; moto refuses anonymous object reads).
pub struct RawS3 {
    http: reqwest::Client,
    endpoint: String,
    s3: object_store::aws::AmazonS3,
}

impl RawS3 {
    pub fn new(endpoint: &str) -> Self {
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("raw S3 client");
        Self { http: reqwest::Client::new(), endpoint: endpoint.to_owned(), s3 }
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let r = self.http.put(format!("{}/{bucket}", self.endpoint)).send().await.expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// Number of multipart uploads in progress in `bucket` (ListMultipartUploads).
    pub async fn multipart_uploads(&self, bucket: &str) -> usize {
        let r = self.http.get(format!("{}/{bucket}?uploads", self.endpoint)).send().await.expect("list uploads");
        assert!(r.status().is_success(), "list uploads: {}", r.status());
        let body = r.text().await.unwrap();
        body.matches("<Upload>").count()
    }

    /// The stored bytes of `key` in [`BUCKET`] (data ‖ trailer), or None.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        match self.s3.get(&Path::parse(key).unwrap()).await {
            Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("raw get {key}: {e}"),
        }
    }

    /// Replaces the stored bytes of `key` in [`BUCKET`].
    pub async fn put(&self, key: &str, body: Vec<u8>) {
        use object_store::ObjectStoreExt;
        self.s3.put(&Path::parse(key).unwrap(), body.into()).await.expect("raw put");
    }
}

/// Waits (bounded, 20 s) until `cond` holds; for effects that finish on another thread after
/// the call that caused them returned (e.g. a file:// part write on tokio's blocking pool,
/// which cannot be cancelled, releasing its payload after the abort). Not a timing assertion:
/// the bound only keeps a broken test from hanging.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still not true after 20 s: {what}");
}
