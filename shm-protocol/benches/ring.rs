//! Two-thread ring benchmark: round-trip latency (one request in flight, both sides
//! busy-polling, threads pinned to different cores) and batched request/response throughput.
//! The C reference with the same shape is `perf/baseline/ring_c.c`; `npm run perf:ring` runs
//! both in one go and prints ratios. Output: a table, then one JSON line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_protocol::shm::ShmRing;
use shm_protocol::{Consumer, Producer, RingError};

type P = Producer<ShmRing<64>, 64>;
type C = Consumer<ShmRing<64>, 64>;

/// The cores we may run on, read once before any pinning: `get_core_ids` reports only the
/// calling thread's current mask, so asking after pinning would put both threads on one core.
static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();

fn pin(core: usize) {
    let ids = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    if let Some(id) = ids.get(core % ids.len().max(1)) {
        core_affinity::set_for_current(*id);
    }
}

fn rings(cap: u32) -> ((P, C), (P, C)) {
    let a = ShmRing::<64>::on_heap(cap);
    let b = ShmRing::<64>::on_heap(cap);
    ((Producer::new(a.clone(), 0), Consumer::new(a, 0)), (Producer::new(b.clone(), 0), Consumer::new(b, 0)))
}

/// The echo side: returns every request as a response, batching both directions.
fn echo_server(mut requests: C, mut responses: P, stop: Arc<AtomicBool>) {
    pin(1);
    let mut pending: Option<[u8; 64]> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        loop {
            let entry = match pending.take() {
                Some(e) => e,
                None => match requests.try_pop().unwrap() {
                    Some(e) => e,
                    None => break,
                },
            };
            match responses.try_push(&entry) {
                Ok(()) => moved = true,
                Err(RingError::Full) => {
                    pending = Some(entry);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        if moved {
            requests.release();
            responses.publish();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn round_trips(samples: usize) -> (u64, u64) {
    let ((mut req_p, req_c), (resp_p, mut resp_c)) = rings(1024);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let server = std::thread::spawn(move || echo_server(req_c, resp_p, s2));
    pin(0);
    let mut lat = Vec::with_capacity(samples);
    let warmup = samples / 10;
    for i in 0..(samples + warmup) as u64 {
        let t0 = Instant::now();
        req_p.try_push(&[i as u8; 64]).unwrap();
        req_p.publish();
        loop {
            if let Some(e) = resp_c.try_pop().unwrap() {
                debug_assert_eq!(e[0], i as u8);
                break;
            }
            std::hint::spin_loop();
        }
        resp_c.release();
        if i as usize >= warmup {
            lat.push(t0.elapsed().as_nanos() as u64);
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    lat.sort_unstable();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

fn throughput(batch: u32, run: Duration) -> f64 {
    let ((mut req_p, req_c), (resp_p, mut resp_c)) = rings(1024);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let server = std::thread::spawn(move || echo_server(req_c, resp_p, s2));
    pin(0);
    let (mut sent, mut done) = (0u64, 0u64);
    let window = u64::from(batch) * 4;
    let start = Instant::now();
    let mut measured_from = None;
    loop {
        while sent - done + u64::from(batch) <= window.min(1024) {
            for _ in 0..batch {
                req_p.try_push(&[1; 64]).unwrap();
            }
            req_p.publish();
            sent += u64::from(batch);
        }
        while resp_c.try_pop().unwrap().is_some() {
            done += 1;
        }
        resp_c.release();
        let now = start.elapsed();
        if measured_from.is_none() && now > run / 5 {
            measured_from = Some((now, done));
        }
        if now > run {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let (t0, d0) = measured_from.unwrap();
    (done - d0) as f64 / (start.elapsed() - t0).as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore harness flags.
    pin(0);
    let samples: usize = std::env::var("RING_BENCH_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let (p50, p99) = round_trips(samples);
    let mut rows = vec![];
    for batch in [1u32, 16, 256] {
        rows.push((batch, throughput(batch, Duration::from_millis(1500))));
    }
    println!("rust ring (2 threads pinned to cores 0/1, busy-polling)");
    println!("  round trip p50 {p50} ns, p99 {p99} ns ({samples} samples)");
    for (b, r) in &rows {
        println!("  batch {b:>3}: {:>8.1} M req/s", r / 1e6);
    }
    println!(
        "{{\"rtt_p50_ns\":{p50},\"rtt_p99_ns\":{p99},\"mrps_batch1\":{:.2},\"mrps_batch16\":{:.2},\"mrps_batch256\":{:.2}}}",
        rows[0].1 / 1e6,
        rows[1].1 / 1e6,
        rows[2].1 / 1e6
    );
}
