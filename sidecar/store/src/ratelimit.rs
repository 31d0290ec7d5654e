//! Bandwidth limits (`--limit-upload` / `--limit-download`, restic's flags): a pacer that lets
//! bytes through at a set rate. Each transfer reserves its time slot — it may start once the
//! transfers before it have been paid for — so the average rate is the limit, with up to one
//! second of unused allowance as burst. Waiting happens before the bytes move (uploads) or
//! before they are handed on (downloads), so the network sees the same average.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Unused allowance kept as burst.
const BURST: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct RateLimit {
    bytes_per_s: u64,
    /// When the bytes reserved so far will have been paid for.
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A pacer at `bytes_per_s` (> 0).
    pub fn new(bytes_per_s: u64) -> Self {
        Self { bytes_per_s: bytes_per_s.max(1), next: Mutex::new(None) }
    }

    /// Waits until `n` more bytes may move.
    pub async fn take(&self, n: usize) {
        let start = {
            let mut next = self.next.lock().expect("rate limit lock");
            let now = Instant::now();
            let floor = now.checked_sub(BURST).unwrap_or(now);
            let start = next.map_or(floor, |t| t.max(floor));
            *next = Some(start + Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64));
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn after_one_second_of_burst_bytes_pass_no_faster_than_the_limit() {
        let l = RateLimit::new(100_000);
        let t0 = Instant::now();
        l.take(100_000).await; // the burst: at once
        for _ in 0..3 {
            l.take(50_000).await;
        }
        // The last 50 kB may start once the 100 kB before it (beyond the burst) are paid for:
        // 1 s at 100 kB/s (a lower bound: a slow machine only makes it later).
        let took = Instant::now() - t0;
        assert!(took >= Duration::from_millis(990), "{took:?}");
    }
}
