//! Op bodies (SPEC §7): what NOP, ECHO, STATS and DELAY do once a request has been validated
//! and its slot leased. The dispatcher decides where each runs (inline or on the runtime) and
//! turns the result into a completion; nothing here touches the rings or the slot table, and
//! slot bytes only through `peer::memory`.

use std::time::Duration;

use shm_protocol::shm::Segment;
use shm_protocol::ErrorCode;

use crate::peer::memory;
use crate::peer::slots::SlotRange;

/// ECHO of at most this many bytes runs inline in the dispatcher (a few µs of CRC); larger
/// ones run on the runtime so one big request does not stall the session's small ones.
pub const INLINE_ECHO_MAX: u32 = 64 * 1024;

/// Bytes hashed between two yields of an async ECHO, so a 16 MiB CRC does not hold a runtime
/// worker for its whole duration.
const ECHO_CHUNK: usize = 1 << 20;

/// ECHO: CRC-32C (Castagnoli) of the slot bytes, as copied out of the slot
/// (`peer::memory::crc32c`).
pub fn echo(segment: &Segment, range: SlotRange) -> Result<(u64, u64), ErrorCode> {
    let crc = memory::crc32c(segment, range, 0)?;
    Ok((u64::from(range.length), u64::from(crc)))
}

/// ECHO for large ranges, on the runtime: the same CRC, one chunk at a time.
pub async fn echo_chunked(segment: Segment, range: SlotRange) -> Result<(u64, u64), ErrorCode> {
    let mut crc = 0u32;
    let mut done = 0u32;
    while done < range.length {
        let n = (range.length - done).min(ECHO_CHUNK as u32);
        let chunk = SlotRange { id: range.id, offset: range.offset + done, length: n };
        crc = memory::crc32c(&segment, chunk, crc)?;
        done += n;
        if done < range.length {
            tokio::task::yield_now().await;
        }
    }
    Ok((u64::from(range.length), u64::from(crc)))
}

/// STATS: writes `doc` at the start of the range; `OutOfRange` if it does not fit.
pub fn write_document(segment: &Segment, range: SlotRange, doc: &[u8]) -> Result<(u64, u64), ErrorCode> {
    if doc.len() > range.length as usize {
        return Err(ErrorCode::OutOfRange);
    }
    memory::write(segment, SlotRange { length: doc.len() as u32, ..range }, doc)?;
    Ok((doc.len() as u64, 0))
}

/// DELAY: completes `us` microseconds later with `result = us`.
pub async fn delay(us: u64) -> Result<(u64, u64), ErrorCode> {
    tokio::time::sleep(Duration::from_micros(us)).await;
    Ok((us, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_protocol::shm::{HeapRegion, Mapping};
    use shm_protocol::{Layout, Params};
    use std::sync::Arc;

    fn segment() -> Segment {
        let layout = Layout::new(Params::new(8, 8, 2, 3 << 20).unwrap()).unwrap();
        let map: Arc<dyn Mapping> = Arc::new(HeapRegion::new(layout.segment_size as usize));
        Segment::new(map, layout).unwrap()
    }

    fn fill(seg: &Segment, id: u32, bytes: &[u8]) {
        memory::write(seg, SlotRange { id, offset: 0, length: bytes.len() as u32 }, bytes).unwrap();
    }

    #[test]
    fn echo_is_crc32c_of_the_range() {
        let seg = segment();
        fill(&seg, 1, b"xx123456789");
        let (len, crc) = echo(&seg, SlotRange { id: 1, offset: 2, length: 9 }).unwrap();
        assert_eq!((len, crc), (9, 0xE306_9283)); // the CRC-32C check value
        assert_eq!(echo(&seg, SlotRange { id: 1, offset: 0, length: 0 }).unwrap(), (0, 0));
        assert_eq!(echo(&seg, SlotRange { id: 2, offset: 0, length: 1 }), Err(ErrorCode::Internal));
        assert_eq!(echo(&seg, SlotRange { id: 0, offset: 3 << 20, length: 1 }), Err(ErrorCode::Internal));
    }

    #[tokio::test]
    async fn chunked_echo_matches_inline() {
        let seg = segment();
        let data: Vec<u8> = (0..(3u32 << 20) - 5).map(|i| (i * 7 + i / 251) as u8).collect();
        fill(&seg, 0, &data);
        let range = SlotRange { id: 0, offset: 5, length: data.len() as u32 - 5 };
        assert_eq!(echo_chunked(seg.clone(), range).await, echo(&seg, range));
        assert_eq!(echo(&seg, range).unwrap().1, u64::from(crc32c::crc32c(&data[5..])));
    }

    #[test]
    fn document_must_fit() {
        let seg = segment();
        assert_eq!(write_document(&seg, SlotRange { id: 0, offset: 10, length: 3 }, b"abcd"), Err(ErrorCode::OutOfRange));
        assert_eq!(write_document(&seg, SlotRange { id: 0, offset: 10, length: 4 }, b"abcd"), Ok((4, 0)));
        assert_eq!(memory::read_vec(&seg, SlotRange { id: 0, offset: 10, length: 4 }).unwrap(), b"abcd");
    }
}
