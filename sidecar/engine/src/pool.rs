//! The engine's CPU pool: exactly `workers` threads (the sidecar's worker count) that run all
//! CPU-bound work — FastCDC scans, keyed BLAKE3, zstd, AES-GCM, decryption and verification —
//! for every session and reader of a repository. Async callers `run` a closure and await its
//! result; the async threads never do the heavy lifting.
//!
//! Why a fixed pool (rayon-core) rather than tokio's `spawn_blocking` behind a semaphore: the
//! blocking pool grows to many threads, and each thread that ever compressed keeps its own zstd
//! context and glibc arena — measured ~50 MB more peak RSS for the same work. With a fixed
//! pool there are `workers` contexts and the concurrency bound is the pool itself.

use std::panic::AssertUnwindSafe;

use crate::error::{EngineError, Result};

/// A fixed pool of CPU worker threads.
pub struct CpuPool {
    pool: rayon_core::ThreadPool,
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
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("shmpipe-cpu-{i}"))
            .build()
            .map_err(|e| EngineError::internal(format!("cannot start the CPU pool: {e}")))?;
        Ok(Self { pool, workers })
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
        self.pool.spawn_fifo(move || {
            let r = std::panic::catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
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
