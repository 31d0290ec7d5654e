//! What "copy once, then trust" costs (SPEC §12): the sidecar copies every slot it works on
//! into private memory (`peer::memory`) before the backup pipeline hashes, compresses and
//! encrypts it. This measures, per 1 MiB (the chunker's average chunk), the opaque copy out of
//! a slot (cache-cold: the slots rotate through 256 MiB) against the pipeline's own work on the
//! same bytes (keyed BLAKE3 id + zstd level 3 + AES-256-GCM, `blob::seal_into`), on a data set
//! like perf/backup.js's (half incompressible, half text), and a plain memcpy for reference.
//!
//! `cargo bench -p shmpipe-sidecar --bench copy_once` (a short run: `-- --quick`). Output: a
//! table, then one JSON line.

use std::sync::Arc;
use std::time::Instant;

use shm_protocol::shm::{HeapRegion, Mapping, Segment};
use shm_protocol::{Layout, Params};
use shmpipe_engine::blob::{seal_into, BlobKind, Compression};
use shmpipe_engine::crypto::{keyed_id, AeadKey};
use shmpipe_engine::Id;
use shmpipe_sidecar::peer::memory;
use shmpipe_sidecar::peer::private::PrivatePool;
use shmpipe_sidecar::peer::slots::SlotRange;

const CHUNK: u32 = 1 << 20;
const SLOT: u32 = 4 << 20;
const SLOTS: u32 = 64; // 256 MiB: well past the L3, so every copy starts cache-cold

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let words = ["shmpipe ", "backup ", "restore ", "slot ", "ring ", "pack ", "index ", "\n"];
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / (64 << 10)) % 2 == 0 {
                x as u8
            } else {
                let w = words[(x % 8) as usize].as_bytes();
                w[i % w.len()]
            }
        })
        .collect()
}

/// Seconds per run of `f`, best of a few rounds of `rounds` runs.
fn time(rounds: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..rounds {
            f(i);
        }
        best = best.min(t.elapsed().as_secs_f64() / rounds as f64);
    }
    best
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 64 } else { 512 };
    let layout = Layout::new(Params::new(64, 64, SLOTS, SLOT).unwrap()).unwrap();
    let map: Arc<dyn Mapping> = Arc::new(HeapRegion::new(layout.segment_size as usize));
    let segment = Segment::new(map, layout).unwrap();
    let sample = data(SLOT as usize);
    for id in 0..SLOTS {
        memory::write(&segment, SlotRange { id, offset: 0, length: SLOT }, &sample).unwrap();
    }
    let pool = PrivatePool::new(64 << 20);
    let chunks_per_slot = SLOT / CHUNK;
    let range = |i: usize| {
        let i = i as u32;
        SlotRange { id: (i / chunks_per_slot) % SLOTS, offset: (i % chunks_per_slot) * CHUNK, length: CHUNK }
    };

    let mut buf = pool.take(CHUNK as usize);
    let copy = time(rounds, |i| memory::read(&segment, range(i), buf.as_mut()).unwrap());
    let sources: Vec<Vec<u8>> = (0..256).map(|_| sample[..CHUNK as usize].to_vec()).collect();
    let mut dst = vec![0u8; CHUNK as usize];
    let memcpy = time(rounds, |i| {
        dst.copy_from_slice(&sources[i % sources.len()]);
        std::hint::black_box(&dst);
    });

    let key = AeadKey::new(&[7; 32]);
    let id_key = [9u8; 32];
    let mut scratch = Vec::new();
    let chunks: Vec<&[u8]> = sample.chunks(CHUNK as usize).collect();
    let pipeline = time(rounds / 8 + 1, |i| {
        let plain = chunks[i % chunks.len()];
        let id = Id(keyed_id(&id_key, plain));
        seal_into(&key, BlobKind::Data, id, plain, Compression::Zstd(3), &mut scratch).unwrap();
    });

    let gbs = |s: f64| f64::from(CHUNK) / s / 1e9;
    let share = copy / (copy + pipeline);
    println!("per 1 MiB chunk (best of 3)      time        GB/s");
    println!("opaque copy out of a slot   {:>10.1} µs  {:>8.2}", copy * 1e6, gbs(copy));
    println!("memcpy (reference)          {:>10.1} µs  {:>8.2}", memcpy * 1e6, gbs(memcpy));
    println!("pipeline (id+zstd3+AES-GCM) {:>10.1} µs  {:>8.2}", pipeline * 1e6, gbs(pipeline));
    println!("copy / (copy + pipeline): {:.1} % of one core's backup work", share * 100.0);
    println!(
        "{{\"bench\":\"copy_once\",\"chunk_bytes\":{CHUNK},\"copy_us\":{:.2},\"memcpy_us\":{:.2},\"pipeline_us\":{:.2},\"copy_share\":{:.4}}}",
        copy * 1e6,
        memcpy * 1e6,
        pipeline * 1e6,
        share
    );
}
