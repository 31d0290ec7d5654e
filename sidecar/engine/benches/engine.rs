//! Engine throughput: chunk + hash + compress + encrypt, on generated mixed and incompressible
//! data, single-threaded and with 2 workers; then whole backup sessions and restores through
//! the engine into memory://. `cargo bench -p shmpipe-engine --bench engine` (release
//! profile). Prints MB/s (10^6 bytes per second); asserts nothing.
//!
//! SHMPIPE_BENCH_MB sets the data size per run (default 256).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shmpipe_engine::blob::{self, BlobKind, Compression};
use shmpipe_engine::chunker::{Cdc, ChunkerParams};
use shmpipe_engine::crypto::{keyed_id, AeadKey};
use shmpipe_engine::*;
use shmpipe_store::{Store, StoreConfig, StoreOptions};

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn logs(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 200);
    let mut i = seed;
    let words = ["GET", "POST", "PUT", "DELETE"];
    while v.len() < len {
        let r = i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 20;
        v.extend_from_slice(
            format!(
                "2026-11-22T03:{:02}:{:02}.{:03}Z host-{} {} /api/v1/items/{}?q={} {} {}ms ua=\"client/{}.{}\"\n",
                r % 60, (r >> 6) % 60, (r >> 12) % 1000, r % 7, words[(r % 4) as usize], r % 100_003,
                (r >> 8) % 9973, [200, 200, 200, 404, 500][(r % 5) as usize], r % 250, r % 3, r % 17
            )
            .as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
}

/// Mixed: 1 MiB-ish stretches alternating incompressible and log text (≈ 50/50).
fn mixed(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0;
    while v.len() < len {
        let n = (3 << 20).min(len - v.len());
        // Distinct seeds far apart: no stretch repeats another (dedup would flatter the numbers).
        v.extend_from_slice(&if i % 2 == 0 { noise(i, n) } else { logs(i * 1_000_000_007, n) });
        i += 1;
    }
    v
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// CPU seconds (user + system, all threads) this process has used: throughput per CPU-second
/// does not depend on what else the machine is running, wall-clock MB/s does.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// Minor page faults so far (field 10): fresh pages cost ~8 µs each here.
fn minflt() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().nth(7).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The per-chunk CPU work of a backup, without the store: CDC, keyed BLAKE3, compress-or-not,
/// AES-256-GCM. `threads` workers take chunks round-robin.
fn cpu_path(data: &Arc<Vec<u8>>, threads: usize) -> (f64, f64, usize) {
    let cdc = Cdc::keyed(ChunkerParams::recommended(0), &[3; 32]).unwrap();
    let key = Arc::new(AeadKey::new(&[1; 32]));
    let c0 = cpu_secs();
    let t0 = Instant::now();
    let chunks = cdc.chunk_all(data);
    let ranges = Arc::new(chunks);
    let out: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let ranges = ranges.clone();
                let key = key.clone();
                let data = data.clone();
                s.spawn(move || {
                    let mut stored = 0usize;
                    for r in ranges.iter().skip(t).step_by(threads) {
                        let c = &data[r.clone()];
                        let id = Id(keyed_id(&[2; 32], c));
                        let b = blob::seal(&key, BlobKind::Data, id, c, Compression::Zstd(1)).unwrap();
                        stored += b.data.len();
                    }
                    stored
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    (mbps(data.len(), t0.elapsed().as_secs_f64()), mbps(data.len(), cpu_secs() - c0), out)
}

fn stage_costs(data: &[u8]) {
    // Format 2's keyed table (what backups use), and format 1's seeded one for comparison:
    // the same loop over another table, so the two should match within noise.
    let cdc = Cdc::keyed(ChunkerParams::recommended(0), &[3; 32]).unwrap();
    let seeded = Cdc::new(ChunkerParams::recommended(12345)).unwrap();
    let key = AeadKey::new(&[1; 32]);
    let t = Instant::now();
    std::hint::black_box(seeded.chunk_all(data));
    let seeded_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let chunks = cdc.chunk_all(data);
    let cdc_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &chunks {
        std::hint::black_box(keyed_id(&[2; 32], &data[r.clone()]));
    }
    let hash_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &chunks {
        std::hint::black_box(blob::seal(&key, BlobKind::Data, Id::default(), &data[r.clone()], Compression::Off).unwrap());
    }
    let enc_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &chunks {
        std::hint::black_box(blob::seal(&key, BlobKind::Data, Id::default(), &data[r.clone()], Compression::Zstd(1)).unwrap());
    }
    let all_s = t.elapsed().as_secs_f64();
    println!(
        "    stages, 1 thread: fastcdc keyed table {:.0} MB/s (format 1 seeded table {:.0}) | keyed BLAKE3 {:.0} MB/s | copy+AES-256-GCM {:.0} MB/s | zstd-1-or-not+AES-GCM {:.0} MB/s",
        mbps(data.len(), cdc_s),
        mbps(data.len(), seeded_s),
        mbps(data.len(), hash_s),
        mbps(data.len(), enc_s),
        mbps(data.len(), all_s)
    );
}

async fn session_run(data: &Arc<Vec<u8>>, workers: usize, files: usize, url: &str) -> (f64, f64, f64, f64, u64) {
    let store = Store::open(&StoreConfig::new(url, StoreOptions::default()).unwrap()).unwrap();
    let params = RepoParams { chunker: Some(ChunkerParams::recommended(12345)), ..RepoParams::insecure_for_tests() };
    let repo = Repository::init_with(store, b"pw", params, OpenOptions { workers, ..OpenOptions::default() }).await.unwrap();
    let session = Arc::new(repo.begin_backup(BackupOptions::default()).await.unwrap());
    let per = data.len() / files;
    let inputs: Vec<Bytes> = (0..files).map(|f| Bytes::from(data[f * per..(f + 1) * per].to_vec())).collect();
    let c0 = cpu_secs();
    let f0 = minflt();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    // Files streamed concurrently in 1 MiB writes (slot-sized), like the sidecar would.
    for (f, d) in inputs.into_iter().enumerate() {
        let s = session.clone();
        set.spawn(async move {
            let mut w = s.file_writer().unwrap();
            let mut pos = 0;
            while pos < d.len() {
                let end = (pos + (1 << 20)).min(d.len());
                w.write(d.slice(pos..end)).await.unwrap();
                pos = end;
            }
            (f, w.finish().await.unwrap())
        });
    }
    let mut contents = Vec::new();
    while let Some(r) = set.join_next().await {
        contents.push(r.unwrap());
    }
    contents.sort_by_key(|c| c.0);
    for (f, c) in &contents {
        let e = TreeEntry {
            path: format!("f{f}"),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: c.size(),
            inode: *f as u64,
            dev: 0,
            target: None,
            content: Some(c.clone()),
            ..TreeEntry::default()
        };
        session.add_entry(e, Change::New).await.unwrap();
    }
    let summary = Arc::into_inner(session).unwrap().commit().await.unwrap();
    let backup = mbps(per * files, t0.elapsed().as_secs_f64());
    let backup_cpu = mbps(per * files, cpu_secs() - c0);
    if std::env::var_os("SHMPIPE_BENCH_VERBOSE").is_some() {
        eprintln!("      backup: {:.0} minor faults per MiB", (minflt() - f0) as f64 / (data.len() >> 20) as f64);
    }
    let c1 = cpu_secs();
    let t1 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (_, c) in contents {
        let repo = repo.clone();
        set.spawn(async move {
            let mut r = repo.open_content(&c);
            let mut n = 0;
            while let Some(b) = r.next_chunk().await.unwrap() {
                n += b.len();
            }
            n
        });
    }
    let mut restored = 0;
    while let Some(r) = set.join_next().await {
        restored += r.unwrap();
    }
    let restore = mbps(restored, t1.elapsed().as_secs_f64());
    let restore_cpu = mbps(restored, cpu_secs() - c1);
    (backup, backup_cpu, restore, restore_cpu, summary.counts.bytes_added_packed)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Peak RSS of a streamed backup + restore (data generated per write, never held whole): what
/// the engine itself costs in memory. Runs first, before the bench's big buffers exist.
async fn rss_run(mb: usize) -> (u64, u64, f64, f64, f64) {
    let before = vm_hwm_kib();
    let dir = tempfile::tempdir_in(std::env::var("SHMPIPE_BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let store = Store::open(&StoreConfig::new(&format!("file://{}", dir.path().display()), StoreOptions::default()).unwrap()).unwrap();
    let params = RepoParams { chunker: Some(ChunkerParams::recommended(12345)), ..RepoParams::insecure_for_tests() };
    let repo = Repository::init(store, b"pw", params).await.unwrap();
    let mut opts = BackupOptions::default();
    if let Some(n) = std::env::var("SHMPIPE_BENCH_UPLOADS").ok().and_then(|v| v.parse().ok()) {
        opts.max_uploads = n;
    }
    if let Some(n) = std::env::var("SHMPIPE_BENCH_PACK_MB").ok().and_then(|v| v.parse::<u32>().ok()) {
        opts.pack_size = Some(n << 20);
    }
    let session = Arc::new(repo.begin_backup(opts).await.unwrap());
    let files = 4;
    let per_mib = mb / files;
    let text_block: Vec<u8> = logs(1, 1 << 20);
    let c0 = cpu_secs();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for f in 0..files {
        let s = session.clone();
        let text_block = text_block.clone();
        set.spawn(async move {
            let mut w = s.file_writer().unwrap();
            for i in 0..per_mib {
                // Alternate 1 MiB of noise and 1 MiB of (distinct) log text, like slots would arrive.
                let mut buf = if i % 2 == 0 { noise((f * 100_000 + i) as u64, 1 << 20) } else { text_block.clone() };
                if i % 2 == 1 {
                    buf[..16].copy_from_slice(&((f * 100_000 + i) as u128).to_le_bytes());
                }
                w.write(Bytes::from(buf)).await.unwrap();
            }
            w.finish().await.unwrap()
        });
    }
    let mut contents = Vec::new();
    while let Some(r) = set.join_next().await {
        contents.push(r.unwrap());
    }
    for (i, c) in contents.iter().enumerate() {
        let e = TreeEntry {
            path: format!("f{i}"),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: c.size(),
            inode: i as u64,
            dev: 0,
            target: None,
            content: Some(c.clone()),
            ..TreeEntry::default()
        };
        session.add_entry(e, Change::New).await.unwrap();
    }
    Arc::into_inner(session).unwrap().commit().await.unwrap();
    let backup = mbps(mb << 20, t0.elapsed().as_secs_f64());
    // Includes generating the data (noise ~3 GB/s, a 1 MiB clone per text write).
    let backup_cpu = mbps(mb << 20, cpu_secs() - c0);
    let after_backup = vm_hwm_kib();
    if std::env::var_os("SHMPIPE_BENCH_VERBOSE").is_some() {
        let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
        eprintln!("  after backup: VmHWM {} MB, threads {threads}", after_backup / 1024);
    }
    let t1 = Instant::now();
    for c in &contents {
        let mut r = repo.open_content(c);
        while let Some(b) = r.next_chunk().await.unwrap() {
            std::hint::black_box(b);
        }
    }
    let restore = mbps(mb << 20, t1.elapsed().as_secs_f64());
    (before, after_backup.max(vm_hwm_kib()), backup, backup_cpu, restore)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches with --list
    }
    let rss_mb: usize = std::env::var("SHMPIPE_BENCH_RSS_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (before, peak, b, bc, r) = rt.block_on(rss_run(rss_mb));
    drop(rt);
    println!(
        "streamed {rss_mb} MiB backup + restore, file://, 4 files at once, defaults: peak RSS {} MB (process before: {} MB); backup {b:.0} MB/s wall, {bc:.0} MB/CPU-s incl. data generation; restore {r:.0} MB/s",
        peak / 1024,
        before / 1024
    );
    let mb: usize = std::env::var("SHMPIPE_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    if mb == 0 {
        return;
    }
    let len = mb << 20;
    let sets = [("mixed (50% logs, 50% random)", Arc::new(mixed(len))), ("incompressible", Arc::new(noise(7, len)))];
    println!("engine bench: {mb} MiB per run, ~1 MiB chunks, zstd level 1, AES-256-GCM (ring), {} CPUs", std::thread::available_parallelism().map_or(0, |n| n.get()));
    for (name, data) in &sets {
        println!("{name}:");
        stage_costs(&data[..(64 << 20).min(data.len())]);
        for threads in [1, 2] {
            let (r, per_cpu, stored) = cpu_path(data, threads);
            println!(
                "    chunk+hash+compress+encrypt, {threads} thread(s): {r:.0} MB/s wall, {per_cpu:.0} MB per CPU-second (stored {:.1}% of input)",
                stored as f64 * 100.0 / data.len() as f64
            );
        }
        for (workers, file) in [(1, false), (2, false), (2, true)] {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let dir = tempfile::tempdir_in(std::env::var("SHMPIPE_BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
            let url = if file { format!("file://{}", dir.path().display()) } else { "memory://".into() };
            let (b, bc, r, rc, packed) = rt.block_on(session_run(data, workers, 8, &url));
            println!(
                "    BackupSession → {}, workers={workers}: backup {b:.0} MB/s wall, {bc:.0} MB/CPU-s; restore {r:.0} MB/s wall, {rc:.0} MB/CPU-s (repository {:.1}% of input)",
                if file { "file:// (fsync, page-cache reads)" } else { "memory://" },
                packed as f64 * 100.0 / data.len() as f64
            );
        }
    }
}
