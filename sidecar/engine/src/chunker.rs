//! Streaming content-defined chunking: FastCDC (the `fastcdc` crate's v2020 algorithm, pinned
//! to an exact version because boundaries must never move) over data that arrives as a
//! sequence of `Bytes` (slot leases) of any size.
//!
//! Zero copy where it can be: the incoming `Bytes` are kept as they are, and a chunk that lies
//! inside one of them is a slice of it ([`ChunkBytes::Shared`]): it is hashed, compressed and
//! encrypted straight from the agent's slot, which goes back when the sealed chunk is in a
//! pack. Only a chunk that spans two writes is assembled into a pooled buffer
//! ([`ChunkBytes::Owned`], from a [`BufSource`]). A whole small file (one FILE_PUT) is
//! therefore never copied, and a file streamed in slot-sized writes copies at most one
//! chunk's window per write. (An earlier version copied every byte into the chunk buffer:
//! measured, that pooled buffer per open file and per small file in flight was most of the
//! sidecar's resident memory.) The cost: a slot stays in flight until every chunk that
//! touches it is sealed — at most `max_size` plus one write per stream, besides the chunks
//! being sealed.
//!
//! Keyed (format 2): the gear table is 256 words of BLAKE3 output derived from the repository's
//! secret `chunker_key` ([`Cdc::keyed`]), and tree blobs are cut on a keyed hash of entry paths
//! ([`Cdc::tree_key`]), so without the key nobody can compute where a known file's chunks end.
//! Format 1 repositories keep fastcdc's public table XORed with a 64-bit `gear_seed`
//! ([`Cdc::new`]): one constant word, recoverable from a few known boundaries. The cut loop is
//! fastcdc's either way — only the table differs, so keyed chunking costs nothing per byte.
//!
//! Boundaries: `fastcdc::v2020::cut_gear` finds the first cut in a slice. A cut it reports
//! strictly inside the slice is final (the gear hash at a position depends only on the bytes
//! before it), so it matches the one-shot chunking of the whole stream. A result equal to the
//! slice's end is not (more data might cut later), unless the slice already holds `max_size`
//! bytes or the stream has ended. So a cut is attempted only once `max_size` bytes are
//! buffered, or at the end: every attempt is then decisive and nothing is scanned twice.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use fastcdc::v2020;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Chunker parameters; fixed per repository (stored, encrypted, in the config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk (except a stream's last).
    pub min_size: u32,
    /// Target average.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
    /// FastCDC normalization level (0..=3).
    pub normalization: u8,
    /// Format 1 only: XORed into fastcdc's public gear table (per repository, random). Format 2
    /// derives the whole table from the secret `chunker_key` instead and writes 0 here.
    pub gear_seed: u64,
}

impl ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB, normalization 1: restic's average (so a 2 GiB set makes
    /// ~2,000 chunks: ~100 KB of index), few enough chunks that the index stays small (50 B
    /// each, REPOSITORY.md §Memory), small enough that dedup still finds shared regions of
    /// large files and per-chunk parallelism has work for 2 cores.
    pub fn recommended(gear_seed: u64) -> Self {
        Self { min_size: 256 * 1024, avg_size: 1024 * 1024, max_size: 4 * 1024 * 1024, normalization: 1, gear_seed }
    }

    /// Checks the parameters against fastcdc's limits.
    pub fn validate(&self) -> Result<()> {
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&self.min_size)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&self.avg_size)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.normalization <= 3
            && v2020::logarithm2(self.avg_size) > u32::from(self.normalization);
        if ok {
            Ok(())
        } else {
            Err(EngineError::InvalidArgument { message: format!("chunker parameters out of range: {self:?}") })
        }
    }
}

/// BLAKE3 `derive_key` context of the format-2 gear table (REPOSITORY.md, Blobs).
pub const GEAR_CONTEXT: &str = "shmpipe 2026-12-02 chunker gear table v2";
/// BLAKE3 `derive_key` context of the format-2 tree-cut key (REPOSITORY.md, Snapshots).
pub const TREE_CUT_CONTEXT: &str = "shmpipe 2026-12-02 tree cut key v2";

/// Precomputed masks and gear tables for one parameter set (shared by every stream).
#[derive(Clone)]
pub struct Cdc {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Arc<[u64; 256]>,
    gear_ls: Arc<[u64; 256]>,
    /// Format 2: the key tree blobs are cut with (`None`: format 1's unkeyed path hash).
    tree_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Cdc {
    /// The tables and the tree key are secret in format 2: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdc").field("params", &self.params).field("keyed", &self.tree_key.is_some()).finish_non_exhaustive()
    }
}

impl Cdc {
    /// Format 1: fastcdc's public gear table XORed with `params.gear_seed` (validated).
    pub fn new(params: ChunkerParams) -> Result<Self> {
        let (gear, gear_ls) = v2020::get_gear_with_seed(params.gear_seed);
        Self::with_tables(params, gear, gear_ls, None)
    }

    /// Format 2: the gear table is derived from the repository's secret `chunker_key` — 256
    /// little-endian u64 words of BLAKE3 in `derive_key` mode (context [`GEAR_CONTEXT`]) read
    /// as an extendable output; `gear_ls[i] = gear[i] << 1` as fastcdc's two-bytes-a-step loop
    /// expects. The tree-cut key is `derive_key(TREE_CUT_CONTEXT, chunker_key)`.
    /// `params.gear_seed` is ignored.
    pub fn keyed(params: ChunkerParams, chunker_key: &[u8; 32]) -> Result<Self> {
        let mut words = [0u8; 256 * 8];
        blake3::Hasher::new_derive_key(GEAR_CONTEXT).update(chunker_key).finalize_xof().fill(&mut words);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for (i, w) in words.chunks_exact(8).enumerate() {
            gear[i] = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            gear_ls[i] = gear[i] << 1;
        }
        let tree_key = blake3::derive_key(TREE_CUT_CONTEXT, chunker_key);
        Self::with_tables(params, gear, gear_ls, Some(tree_key))
    }

    fn with_tables(params: ChunkerParams, gear: Box<[u64; 256]>, gear_ls: Box<[u64; 256]>, tree_key: Option<[u8; 32]>) -> Result<Self> {
        params.validate()?;
        let bits = v2020::logarithm2(params.avg_size);
        let n = u32::from(params.normalization);
        let mask_s = v2020::MASKS[(bits + n) as usize];
        let mask_l = v2020::MASKS[(bits - n) as usize];
        Ok(Self { params, mask_s, mask_l, gear: Arc::from(gear), gear_ls: Arc::from(gear_ls), tree_key })
    }

    /// The parameters.
    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// The key tree blobs are cut with ([`crate::snapshot::tree_cut_after`]); `None` in format 1.
    pub fn tree_key(&self) -> Option<&[u8; 32]> {
        self.tree_key.as_ref()
    }

    /// Length of the first chunk of `data` as fastcdc cuts it.
    fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (_, len) = v2020::cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        len
    }

    /// A streaming chunker for one file (shares the tables: cheap).
    pub fn stream(&self) -> StreamChunker {
        StreamChunker { cdc: self.clone(), pieces: VecDeque::new(), buffered: 0 }
    }

    /// Every chunk of an in-memory buffer (one-shot; tests and the bench compare against it).
    pub fn chunk_all(&self, data: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = self.cut(&data[pos..]);
            out.push(pos..pos + n);
            pos += n;
        }
        out
    }
}

/// Where a stream chunker gets the buffer for its next chunk (a pool, in the engine).
pub trait BufSource {
    /// An empty buffer.
    fn take_buf(&self) -> Vec<u8>;
}

/// Fresh allocations (tests, one-off use).
#[derive(Debug, Default, Clone, Copy)]
pub struct Alloc;

impl BufSource for Alloc {
    fn take_buf(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl BufSource for crate::bufpool::BufPool {
    fn take_buf(&self) -> Vec<u8> {
        self.take()
    }
}

/// A chunk's bytes: a slice of the data that was pushed (no copy), or a pooled buffer for a
/// chunk that spans two pushes.
#[derive(Debug)]
pub enum ChunkBytes {
    Shared(Bytes),
    Owned(Vec<u8>),
}

impl std::ops::Deref for ChunkBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Shared(b) => b,
            Self::Owned(v) => v,
        }
    }
}

/// The chunker state of one stream: the pushed bytes not yet cut into chunks, as they came.
#[derive(Debug)]
pub struct StreamChunker {
    cdc: Cdc,
    pieces: VecDeque<Bytes>,
    /// Total length of `pieces`.
    buffered: usize,
}

impl StreamChunker {
    /// Bytes held back, waiting for a boundary.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Appends `data` (kept, not copied) and pushes every chunk whose boundary is now final
    /// onto `out`. Afterwards fewer than `max_size` bytes are held.
    pub fn push(&mut self, data: Bytes, src: &impl BufSource, out: &mut Vec<ChunkBytes>) {
        if !data.is_empty() {
            self.buffered += data.len();
            self.pieces.push_back(data);
        }
        while self.buffered >= self.cdc.params.max_size as usize {
            out.push(self.cut_one(src));
        }
    }

    /// The stream ended: cuts what is left (the last chunk may be short).
    pub fn finish(mut self, src: &impl BufSource, out: &mut Vec<ChunkBytes>) {
        while self.buffered > 0 {
            out.push(self.cut_one(src));
        }
    }

    /// The next chunk. Only called with `max_size` bytes buffered or at the end, so the cut is
    /// final whatever it returns.
    fn cut_one(&mut self, src: &impl BufSource) -> ChunkBytes {
        let max = self.cdc.params.max_size as usize;
        let front = self.pieces.front().expect("called with bytes buffered");
        let window = front.len().min(max);
        let n = self.cdc.cut(&front[..window]);
        if n < window || n == max || self.pieces.len() == 1 {
            // Decided inside the first piece: a slice of it.
            let front = self.pieces.front_mut().expect("checked");
            let chunk = front.split_to(n);
            if front.is_empty() {
                self.pieces.pop_front();
            }
            self.buffered -= n;
            return ChunkBytes::Shared(chunk);
        }
        // The first piece ends before any boundary: the chunk spans pieces. Cut on a window
        // assembled from them, then drop the chunk's bytes from the pieces.
        let mut buf = src.take_buf();
        let want = self.buffered.min(max);
        for p in &self.pieces {
            let k = p.len().min(want - buf.len());
            buf.extend_from_slice(&p[..k]);
            if buf.len() == want {
                break;
            }
        }
        let n = self.cdc.cut(&buf);
        buf.truncate(n);
        let mut left = n;
        while left > 0 {
            let front = self.pieces.front_mut().expect("n <= buffered");
            let k = front.len().min(left);
            front.advance(k);
            left -= k;
            if front.is_empty() {
                self.pieces.pop_front();
            }
        }
        self.buffered -= n;
        ChunkBytes::Owned(buf)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), incompressible and reproducible.
    pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
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

    fn small() -> Cdc {
        Cdc::new(ChunkerParams { min_size: 2048, avg_size: 8192, max_size: 32768, normalization: 1, gear_seed: 42 })
            .unwrap()
    }

    fn stream_chunks(cdc: &Cdc, data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut s = cdc.stream();
        let mut out = Vec::new();
        for p in data.chunks(piece.max(1)) {
            s.push(Bytes::copy_from_slice(p), &Alloc, &mut out);
            assert!(s.buffered() < 32768, "less than max_size stays behind");
        }
        s.finish(&Alloc, &mut out);
        out.iter().map(|c| c.to_vec()).collect()
    }

    #[test]
    fn chunks_inside_one_write_are_slices_of_it() {
        let cdc = small();
        let data = Bytes::from(noise(6, 200_000));
        let mut s = cdc.stream();
        let mut out = Vec::new();
        s.push(data.clone(), &Alloc, &mut out);
        s.finish(&Alloc, &mut out);
        assert!(out.len() > 5);
        let mut at = 0;
        for c in &out {
            let ChunkBytes::Shared(b) = c else { panic!("a chunk of one write was copied") };
            assert_eq!(b.as_ptr(), data[at..].as_ptr(), "a slice of the pushed bytes, in place");
            at += b.len();
        }
        assert_eq!(at, data.len());
        // Two writes: only a chunk across the seam is assembled.
        let mut s = cdc.stream();
        let mut out = Vec::new();
        s.push(data.slice(..100_000), &Alloc, &mut out);
        s.push(data.slice(100_000..), &Alloc, &mut out);
        s.finish(&Alloc, &mut out);
        let owned = out.iter().filter(|c| matches!(c, ChunkBytes::Owned(_))).count();
        assert_eq!(owned, 1, "exactly the chunk across the seam");
    }

    #[test]
    fn streaming_equals_one_shot_for_any_write_size() {
        let cdc = small();
        let data = noise(1, 500_000);
        let want: Vec<&[u8]> = cdc.chunk_all(&data).into_iter().map(|r| &data[r]).collect();
        assert!(want.len() > 30, "enough chunks to mean something: {}", want.len());
        for piece in [1, 7, 100, 4096, 8192, 65_536, 500_000] {
            let got = stream_chunks(&cdc, &data, piece);
            assert_eq!(got.len(), want.len(), "piece {piece}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(&g[..], *w, "piece {piece}");
            }
        }
    }

    #[test]
    fn deterministic_and_bounded() {
        let cdc = small();
        let data = noise(2, 300_000);
        assert_eq!(cdc.chunk_all(&data), cdc.chunk_all(&data));
        for r in cdc.chunk_all(&data) {
            assert!(r.len() <= 32768);
        }
        // Zeros never match the mask: every chunk is max_size.
        let zeros = vec![0u8; 100_000];
        let sizes: Vec<usize> = cdc.chunk_all(&zeros).into_iter().map(|r| r.len()).collect();
        assert_eq!(sizes, vec![32768, 32768, 32768, 100_000 - 3 * 32768]);
        // Empty stream: no chunk; short stream: one chunk.
        assert!(stream_chunks(&cdc, &[], 10).is_empty());
        assert_eq!(stream_chunks(&cdc, b"abc", 10).len(), 1);
    }

    #[test]
    fn inserting_a_byte_at_the_front_keeps_most_chunks() {
        let cdc = small();
        let data = noise(3, 1_000_000);
        let mut shifted = vec![0xAB];
        shifted.extend_from_slice(&data);
        let a: std::collections::HashSet<Vec<u8>> =
            cdc.chunk_all(&data).into_iter().map(|r| data[r].to_vec()).collect();
        let b: Vec<Vec<u8>> = cdc.chunk_all(&shifted).into_iter().map(|r| shifted[r].to_vec()).collect();
        let same = b.iter().filter(|c| a.contains(*c)).count();
        assert!(same + 2 >= b.len(), "only the first chunk(s) may change: {same} of {} kept", b.len());
        assert!(b.len() > 50);
    }

    #[test]
    fn seed_moves_boundaries() {
        let data = noise(4, 400_000);
        let p = ChunkerParams { min_size: 2048, avg_size: 8192, max_size: 32768, normalization: 1, gear_seed: 0 };
        let a = Cdc::new(p.clone()).unwrap().chunk_all(&data);
        let b = Cdc::new(ChunkerParams { gear_seed: 0x1234_5678_9abc_def0, ..p }).unwrap().chunk_all(&data);
        assert_ne!(a, b);
    }

    fn small_params() -> ChunkerParams {
        ChunkerParams { min_size: 2048, avg_size: 8192, max_size: 32768, normalization: 1, gear_seed: 0 }
    }

    #[test]
    fn keyed_boundaries_are_deterministic_given_the_key_and_differ_without_it() {
        let data = noise(4, 400_000);
        let k1 = Cdc::keyed(small_params(), &[1; 32]).unwrap();
        let again = Cdc::keyed(small_params(), &[1; 32]).unwrap();
        let k2 = Cdc::keyed(small_params(), &[2; 32]).unwrap();
        let a = k1.chunk_all(&data);
        assert!(a.len() > 20, "{} chunks", a.len());
        assert_eq!(a, again.chunk_all(&data), "same key, same boundaries");
        let b = k2.chunk_all(&data);
        let cuts = |v: &[std::ops::Range<usize>]| v.iter().map(|r| r.end).collect::<std::collections::HashSet<_>>();
        let shared = cuts(&a).intersection(&cuts(&b)).count();
        assert!(shared * 10 < a.len(), "another key shares {shared} of {} boundaries", a.len());
        // Nor is any seeded (format 1) table the keyed one.
        for seed in [0, 1, 0x5eed] {
            assert_ne!(Cdc::new(ChunkerParams { gear_seed: seed, ..small_params() }).unwrap().chunk_all(&data), a);
        }
        // The seed field plays no part in format 2.
        assert_eq!(Cdc::keyed(ChunkerParams { gear_seed: 99, ..small_params() }, &[1; 32]).unwrap().chunk_all(&data), a);
        assert_ne!(k1.tree_key(), k2.tree_key());
        assert!(Cdc::new(small_params()).unwrap().tree_key().is_none());
        let shown = format!("{k1:?}");
        assert!(shown.contains("keyed: true") && shown.len() < 200, "tables and keys are not printed: {shown}");
    }

    #[test]
    fn keyed_streaming_equals_one_shot() {
        let cdc = Cdc::keyed(small_params(), &[3; 32]).unwrap();
        let data = noise(1, 300_000);
        let want: Vec<&[u8]> = cdc.chunk_all(&data).into_iter().map(|r| &data[r]).collect();
        for piece in [7, 4096, 65_536] {
            let got = stream_chunks(&cdc, &data, piece);
            assert_eq!(got.iter().map(Vec::as_slice).collect::<Vec<_>>(), want, "piece {piece}");
        }
    }

    /// Format stability: these boundaries are what every format-2 repository with this key
    /// has; a change of derivation, context string or fastcdc's loop would move them and stop
    /// dedup against existing data.
    #[test]
    fn keyed_boundaries_known_answer() {
        let cdc = Cdc::keyed(small_params(), &[0x42; 32]).unwrap();
        let ends: Vec<usize> = cdc.chunk_all(&noise(7, 100_000)).into_iter().map(|r| r.end).collect();
        assert_eq!(ends, KEYED_ENDS, "{ends:?}");
        let tk = hex::encode(cdc.tree_key().unwrap());
        assert_eq!(tk, TREE_KEY, "{tk}");
    }
    const KEYED_ENDS: &[usize] = &[13258, 33248, 46369, 53570, 61084, 70450, 82844, 92931, 100000];
    const TREE_KEY: &str = "330d74bd11ad42f89f4e39af83b4c338ebb39970e8a17b0576e0d8726dc41798";

    #[test]
    fn keyed_sizes_average_about_one_mib() {
        let cdc = Cdc::keyed(ChunkerParams::recommended(0), &[9; 32]).unwrap();
        let data = noise(5, 48 << 20);
        let n = cdc.chunk_all(&data).len();
        let avg = data.len() / n;
        assert!((700 << 10..1500 << 10).contains(&avg), "average chunk {avg} bytes over {n} chunks");
    }

    #[test]
    fn recommended_sizes_average_about_one_mib() {
        let cdc = Cdc::new(ChunkerParams::recommended(7)).unwrap();
        let data = noise(5, 48 << 20);
        let n = cdc.chunk_all(&data).len();
        let avg = data.len() / n;
        assert!((700 << 10..1500 << 10).contains(&avg), "average chunk {avg} bytes over {n} chunks");
    }

    #[test]
    fn rejects_bad_params() {
        let p = ChunkerParams { min_size: 10, avg_size: 8192, max_size: 32768, normalization: 1, gear_seed: 0 };
        assert!(Cdc::new(p).is_err());
        let p = ChunkerParams { min_size: 9000, avg_size: 8192, max_size: 32768, normalization: 1, gear_seed: 0 };
        assert!(Cdc::new(p).is_err());
    }
}
