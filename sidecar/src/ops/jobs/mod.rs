//! Jobs: the repository verbs that are neither on the backup nor the restore path (maintenance,
//! browsing, keys, …), run by the sidecar on behalf of an agent through two ops (SPEC §7.3):
//! JOB_START names a job and its arguments in JSON and gets a handle, JOB_NEXT reads the job's
//! output as JSON lines. So a new verb needs a job here and an engine function, not an opcode.
//!
//! A job is a function from a [`JobContext`] to a future; it reports by emitting lines
//! ([`JobOutput::emit`]), which wait while the agent is not reading (the channel is bounded), and
//! ends with `Ok` or an [`OpError`] whose code and message reach the agent after the lines before
//! it. Jobs run as tokio tasks; closing the handle (CLOSE) or ending the session aborts the task
//! at its next await point, exactly as a crash would stop it there — so every job must leave the
//! repository consistent at every await (REPOSITORY.md, crash consistency).
//!
//! To add a job: write `pub fn run(ctx: JobContext) -> JobFuture` in a module of its own next
//! to this one, and add one line to [`JOBS`].

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use shmpipe_engine::Repository;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ops::error::{OpError, OpResult, CODE_MALFORMED, CODE_OUT_OF_RANGE};

mod browse_json;
mod cat;
mod diff;
mod key;
mod repair;
pub mod snapshots;
mod stats;
mod tag;
#[cfg(test)]
mod tests;
mod unlock;

/// What a job returns: a boxed future, so that [`JOBS`] can hold plain function pointers.
pub type JobFuture = Pin<Box<dyn Future<Output = OpResult<()>> + Send + 'static>>;

/// A job's entry point.
pub type JobFn = fn(JobContext) -> JobFuture;

/// Every job the sidecar runs, by the name an agent gives in `{"job": NAME}`.
pub const JOBS: &[(&str, JobFn)] = &[
    ("snapshots", snapshots::run),
    ("cat", cat::run),
    ("diff", diff::run),
    ("stats", stats::run),
    ("tag", tag::run),
    ("unlock", unlock::run),
    ("key", key::run),
    ("repair", repair::run),
];

/// Lines a job may have emitted and the agent not yet read. Small: a job that outruns its
/// reader waits (backpressure), and a line is at most a slot's worth.
const OUTPUT_LINES: usize = 64;

/// What a job gets: the open repository its JOB_START named, its arguments (the request object
/// without `"job"`), and where its output goes.
pub struct JobContext {
    pub repo: Repository,
    pub args: serde_json::Value,
    pub out: JobOutput,
}

impl JobContext {
    /// The arguments as a typed struct (declare it `#[serde(deny_unknown_fields)]`): a field
    /// that is missing, unknown or of the wrong type is `MALFORMED`, with serde's message.
    pub fn args<T: serde::de::DeserializeOwned>(&self) -> OpResult<T> {
        serde_json::from_value(self.args.clone()).map_err(|e| OpError { code: CODE_MALFORMED, message: format!("job arguments: {e}") })
    }
}

/// The sending side of a job's output. Cloneable, so a job can hand it to helpers.
#[derive(Clone)]
pub struct JobOutput {
    tx: mpsc::Sender<Vec<u8>>,
}

impl JobOutput {
    /// Sends one line (`value` as compact JSON). Waits while the reader is `OUTPUT_LINES` behind;
    /// fails with CANCELLED when nobody will read it any more (the handle was closed).
    pub async fn emit<T: Serialize + ?Sized>(&self, value: &T) -> OpResult<()> {
        let mut line = serde_json::to_vec(value).map_err(|e| OpError { code: "SHMPIPE_E_INTERNAL", message: e.to_string() })?;
        line.push(b'\n');
        self.tx
            .send(line)
            .await
            .map_err(|_| OpError { code: "SHMPIPE_E_CANCELLED", message: "the job's reader is gone".into() })
    }
}

/// A running job as its handle holds it: the receiving end of its output, the outcome once it
/// ended, and its task (aborted when this is dropped).
pub struct RunningJob {
    lines: mpsc::Receiver<Vec<u8>>,
    /// A line read but not delivered because it did not fit the last page.
    pending: Option<Vec<u8>>,
    outcome: Option<oneshot::Receiver<OpResult<()>>>,
    task: JoinHandle<()>,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        // CLOSE, or the session ended: stop the job at its next await point.
        self.task.abort();
    }
}

/// Starts the job a JOB_START request names (`{"job": NAME, ...args}`) on the current runtime.
/// The name is checked here; the arguments by the job, so a bad argument is the job's failure
/// (`MALFORMED` from the first JOB_NEXT).
pub fn start(repo: Repository, request: &[u8]) -> OpResult<RunningJob> {
    let malformed = |message: String| OpError { code: CODE_MALFORMED, message };
    let mut value: serde_json::Value = serde_json::from_slice(request).map_err(|e| malformed(format!("job request: {e}")))?;
    let object = value.as_object_mut().ok_or_else(|| malformed("job request: not a JSON object".into()))?;
    let name = match object.remove("job") {
        Some(serde_json::Value::String(s)) => s,
        _ => return Err(malformed("job request: `job` must be a job name".into())),
    };
    let run = lookup(&name).ok_or_else(|| malformed(format!("no job named {name:?} (this sidecar runs: {})", job_names())))?;
    let (tx, lines) = mpsc::channel(OUTPUT_LINES);
    let (done, outcome) = oneshot::channel();
    let future = run(JobContext { repo, args: value, out: JobOutput { tx } });
    let task = tokio::spawn(async move {
        let _ = done.send(future.await);
    });
    Ok(RunningJob { lines, pending: None, outcome: Some(outcome), task })
}

fn lookup(name: &str) -> Option<JobFn> {
    let found = JOBS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
    #[cfg(test)]
    let found = found.or_else(|| tests::JOBS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f));
    found
}

fn job_names() -> String {
    JOBS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl RunningJob {
    /// JOB_NEXT: waits until the job has output or has ended, then returns as many whole lines
    /// as fit `max_bytes` and whether the job finished successfully with nothing left to read.
    /// A failed job returns its error once the lines before it were read. `OUT_OF_RANGE` when
    /// one line alone is larger than `max_bytes`.
    pub async fn next_page(&mut self, max_bytes: usize) -> OpResult<(Vec<u8>, bool)> {
        let mut page = Vec::new();
        let first = match self.pending.take() {
            Some(line) => Some(line),
            None => self.lines.recv().await,
        };
        let Some(first) = first else {
            return self.finish().await.map(|()| (page, true));
        };
        if first.len() > max_bytes {
            let message = format!("a job output line of {} bytes does not fit the slot", first.len());
            // Kept: a reader with a larger slot can still have it.
            self.pending = Some(first);
            return Err(OpError { code: CODE_OUT_OF_RANGE, message });
        }
        page.extend_from_slice(&first);
        // Everything already waiting, as long as it fits.
        while let Ok(line) = self.lines.try_recv() {
            if page.len() + line.len() > max_bytes {
                self.pending = Some(line);
                break;
            }
            page.extend_from_slice(&line);
        }
        Ok((page, false))
    }

    /// The job's outcome, once its output channel closed (it returned, or it panicked).
    async fn finish(&mut self) -> OpResult<()> {
        let Some(outcome) = self.outcome.take() else {
            return Ok(());
        };
        match outcome.await {
            Ok(r) => r,
            Err(_) => Err(OpError { code: "SHMPIPE_E_INTERNAL", message: "the job stopped without an outcome (a sidecar bug; see its log)".into() }),
        }
    }
}
