//! The job machinery through `BackupOps` (what JOB_START / JOB_NEXT call): paging, the end of a
//! job, a failure after output, an oversized line, cancellation by CLOSE, and the `snapshots`
//! job on a real (in-memory) repository.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

use super::{JobContext, JobFn, JobFuture};
use crate::ops::backup::BackupOps;
use crate::ops::error::{OpError, CODE_INVALID_HANDLE, CODE_MALFORMED, CODE_OUT_OF_RANGE};

/// Jobs that exist only in tests (`lookup` consults them after the real table).
pub(super) const JOBS: &[(&str, JobFn)] = &[("test-count", count), ("test-fail", fail), ("test-wide", wide), ("test-hang", hang)];

/// Counts live `test-hang` jobs (only one test starts them): a job's future is dropped when it
/// is cancelled.
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct Live;
impl Live {
    fn new() -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Live
    }
}
impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Count {
    n: u64,
}

/// Emits `{"i": 0}` … `{"i": n-1}`.
fn count(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let Count { n } = ctx.args()?;
        for i in 0..n {
            ctx.out.emit(&serde_json::json!({ "i": i })).await?;
        }
        Ok(())
    })
}

/// Two lines, then a failure.
fn fail(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        ctx.out.emit(&1).await?;
        ctx.out.emit(&2).await?;
        Err(OpError { code: "SHMPIPE_E_NOT_FOUND", message: "no such thing".into() })
    })
}

/// One line, then waits forever (not on its output): only an abort stops it.
fn hang(ctx: JobContext) -> JobFuture {
    Box::pin(async move {
        let _live = Live::new();
        ctx.out.emit(&"started").await?;
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// One line of 1000 bytes.
fn wide(ctx: JobContext) -> JobFuture {
    Box::pin(async move { ctx.out.emit(&"x".repeat(998)).await })
}

const INIT: &[u8] = br#"{"password":"pw","params":{"kdf_m_kib":64,"kdf_t":1}}"#;

async fn repo() -> (BackupOps, u64) {
    let store = Store::open(&StoreConfig::new("memory://", StoreOptions::default()).unwrap()).unwrap();
    let o = BackupOps::new(store, 2, 1, 64);
    let r = o.repo_init(INIT).await.unwrap();
    (o, r)
}

/// Every line of a job, read in pages of at most `page` bytes.
async fn read_all(o: &BackupOps, job: u64, page: usize) -> Result<Vec<serde_json::Value>, (OpError, Vec<serde_json::Value>)> {
    let mut lines = Vec::new();
    loop {
        match o.job_next(job, page).await {
            Ok((bytes, done)) => {
                assert!(bytes.len() <= page);
                for l in std::str::from_utf8(&bytes).unwrap().lines() {
                    lines.push(serde_json::from_str(l).unwrap());
                }
                if done {
                    return Ok(lines);
                }
            }
            Err(e) => return Err((e, lines)),
        }
    }
}

#[tokio::test]
async fn pages_deliver_every_line_in_order_then_the_handle_is_finished() {
    let (o, r) = repo().await;
    for page in [12, 100, 1 << 20] {
        let job = o.job_start(r, br#"{"job":"test-count","n":300}"#).unwrap();
        let lines = read_all(&o, job, page).await.unwrap();
        assert_eq!(lines.len(), 300, "page {page}");
        assert!(lines.iter().enumerate().all(|(i, l)| l["i"] == i as u64));
        assert_eq!(o.job_next(job, page).await.unwrap_err().code, CODE_INVALID_HANDLE, "finished");
    }
}

#[tokio::test]
async fn a_failure_arrives_after_the_lines_before_it() {
    let (o, r) = repo().await;
    let job = o.job_start(r, br#"{"job":"test-fail"}"#).unwrap();
    let (e, lines) = read_all(&o, job, 1 << 20).await.unwrap_err();
    assert_eq!(lines, [serde_json::json!(1), serde_json::json!(2)]);
    assert_eq!((e.code, e.message.as_str()), ("SHMPIPE_E_NOT_FOUND", "no such thing"));
    assert_eq!(o.job_next(job, 100).await.unwrap_err().code, CODE_INVALID_HANDLE, "a failed job is finished");
}

#[tokio::test]
async fn bad_requests_are_malformed() {
    let (o, r) = repo().await;
    for req in [&br#"{"job":"no-such-job"}"#[..], b"[]", b"{}", br#"{"job":7}"#, b"not json"] {
        let e = o.job_start(r, req).unwrap_err();
        assert_eq!(e.code, CODE_MALFORMED, "{}", String::from_utf8_lossy(req));
    }
    assert!(o.job_start(r, br#"{"job":"nope"}"#).unwrap_err().message.contains("snapshots"), "names the jobs there are");
    // Arguments are the job's to check: the failure comes with its first page.
    let job = o.job_start(r, br#"{"job":"test-count","n":1,"extra":true}"#).unwrap();
    let (e, _) = read_all(&o, job, 100).await.unwrap_err();
    assert_eq!(e.code, CODE_MALFORMED);
    assert!(e.message.contains("extra"), "{}", e.message);
    // A job needs an open repository handle.
    assert_eq!(o.job_start(r + 100, br#"{"job":"snapshots"}"#).unwrap_err().code, CODE_INVALID_HANDLE);
}

#[tokio::test]
async fn a_line_wider_than_the_page_is_out_of_range_and_the_job_stays_readable() {
    let (o, r) = repo().await;
    let job = o.job_start(r, br#"{"job":"test-wide"}"#).unwrap();
    assert_eq!(o.job_next(job, 999).await.unwrap_err().code, CODE_OUT_OF_RANGE);
    let (bytes, done) = o.job_next(job, 1001).await.unwrap();
    assert_eq!((bytes.len(), done), (1001, false));
    assert_eq!(o.job_next(job, 1001).await.unwrap(), (Vec::new(), true));
}

#[tokio::test]
async fn close_cancels_a_running_job() {
    let (o, r) = repo().await;
    let job = o.job_start(r, br#"{"job":"test-hang"}"#).unwrap();
    // The job has started and waits on something other than its reader.
    let (first, done) = o.job_next(job, 100).await.unwrap();
    assert_eq!((first.as_slice(), done), (&b"\"started\"\n"[..], false));
    assert_eq!(LIVE.load(Ordering::SeqCst), 1);
    o.close(job).unwrap();
    // Aborting is asynchronous: poll for the future's drop with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while LIVE.load(Ordering::SeqCst) != 0 {
        assert!(std::time::Instant::now() < deadline, "the job was not cancelled");
        tokio::task::yield_now().await;
    }
    assert_eq!(o.job_next(job, 100).await.unwrap_err().code, CODE_INVALID_HANDLE);
}

#[tokio::test]
async fn the_snapshots_job_lists_every_snapshot_oldest_first() {
    let (o, r) = repo().await;
    let mut ids = Vec::new();
    for host in ["a", "b", "c"] {
        let b = o.backup_begin(r, format!(r#"{{"host":"{host}","paths":["/x"]}}"#).as_bytes()).await.unwrap();
        let summary: serde_json::Value = serde_json::from_slice(&o.backup_commit(b).await.unwrap()).unwrap();
        ids.push(summary["id"].as_str().unwrap().to_owned());
    }
    let job = o.job_start(r, br#"{"job":"snapshots"}"#).unwrap();
    let lines = read_all(&o, job, 1 << 20).await.unwrap();
    assert_eq!(lines.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>(), ids);
    assert_eq!(lines.iter().map(|l| l["host"].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b", "c"]);
    let job = o.job_start(r, br#"{"job":"snapshots","x":1}"#).unwrap();
    assert_eq!(read_all(&o, job, 100).await.unwrap_err().0.code, CODE_MALFORMED);
}
