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
    /// XORed into the gear table (per repository, random): chunk boundaries of known content
    /// differ between repositories, which makes fingerprinting by chunk sizes harder.
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

/// Precomputed masks and gear tables for one parameter set (shared by every stream).
#[derive(Clone, Debug)]
pub struct Cdc {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Arc<[u64; 256]>,
    gear_ls: Arc<[u64; 256]>,
}

impl Cdc {
    /// Tables for `params` (validated).
    pub fn new(params: ChunkerParams) -> Result<Self> {
        params.validate()?;
        let bits = v2020::logarithm2(params.avg_size);
        let n = u32::from(params.normalization);
        let mask_s = v2020::MASKS[(bits + n) as usize];
        let mask_l = v2020::MASKS[(bits - n) as usize];
        let (gear, gear_ls) = v2020::get_gear_with_seed(params.gear_seed);
        Ok(Self { params, mask_s, mask_l, gear: Arc::from(gear), gear_ls: Arc::from(gear_ls) })
    }

    /// The parameters.
    pub fn params(&self) -> &ChunkerParams {
        &self.params
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
