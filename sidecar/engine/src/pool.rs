//! The engine's CPU pool: exactly `workers` threads (the sidecar's worker count) that run all
//! CPU-bound work — FastCDC scans, keyed BLAKE3, zstd, AES-GCM, decryption and verification —
//! for every session and reader of a repository. Async callers `run` a closure and await its
//! result; the async threads never do the heavy lifting.
//!
//! Why a fixed pool rather than tokio's `spawn_blocking` behind a semaphore: the blocking pool
//! grows to many threads, and each thread that ever compressed keeps its own zstd context and
//! glibc arena — measured ~50 MB more peak RSS for the same work. With a fixed pool there are
//! `workers` contexts and the concurrency bound is the pool itself.
//!
//! Why plain threads on a channel rather than rayon-core (used first): an idle rayon worker
//! spins and calls `sched_yield` for a while before it sleeps, and on two cores shared with
//! the agent, the dispatcher and tokio that was ~7 % of the sidecar's CPU during a restore
//! (perf: `do_sched_yield`). Here an idle worker blocks in the kernel at once.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::{EngineError, Result};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of CPU worker threads, FIFO. Dropping it lets the workers finish the queued
/// jobs and exit.
pub struct CpuPool {
    jobs: mpsc::Sender<Job>,
    workers: usize,
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuPool").field("workers", &self.workers).finish()
    }
}

impl CpuPool {
    /// `workers` threads named `shmpipe-cpu-N`.
    pub fn new(workers: usize) -> Result<Self> {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("shmpipe-cpu-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job; a poisoned lock
                    // (cannot happen: nothing panics while holding it) still hands out jobs.
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        Ok(job) => job(),
                        Err(_) => return, // the pool was dropped
                    }
                })
                .map_err(|e| EngineError::internal(format!("cannot start the CPU pool: {e}")))?;
        }
        Ok(Self { jobs: tx, workers })
    }

    /// Threads in the pool.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on a pool thread (FIFO with other jobs) and returns its result. A panic in `f`
    /// becomes an `Internal` error. If this future is dropped, `f` still runs to the end.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        if self.jobs.send(job).is_err() {
            return Err(EngineError::internal("the CPU pool has no workers"));
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(EngineError::internal("a CPU worker job panicked")),
            Err(_) => Err(EngineError::internal("the CPU pool dropped a job")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_exactly_its_threads_and_reports_panics() {
        let pool = CpuPool::new(2).unwrap();
        let mut names = std::collections::HashSet::new();
        for _ in 0..50 {
            names.insert(pool.run(|| std::thread::current().name().unwrap_or("").to_owned()).await.unwrap());
        }
        assert!(names.iter().all(|n| n.starts_with("shmpipe-cpu-")), "{names:?}");
        assert!(names.len() <= 2);
        let err = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert_eq!(err.code(), "SHMPIPE_E_INTERNAL");
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
