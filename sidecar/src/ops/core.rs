//! Op bodies (SPEC §7): what NOP, ECHO, STATS and DELAY do once a request has been validated
//! and its slot leased. The dispatcher decides where each runs (inline or on the runtime) and
//! turns the result into a completion; nothing here touches the rings or the slot table.

use std::time::Duration;

use shm_protocol::shm::Segment;
use shm_protocol::ErrorCode;

use crate::peer::slots::SlotRange;

/// ECHO of at most this many bytes runs inline in the dispatcher (a few µs of CRC); larger
/// ones run on the runtime so one big request does not stall the session's small ones.
pub const INLINE_ECHO_MAX: u32 = 64 * 1024;

/// Bytes hashed between two yields of an async ECHO, so a 16 MiB CRC does not hold a runtime
/// worker for its whole duration.
const ECHO_CHUNK: usize = 1 << 20;

/// Address of `range` inside `segment`, re-checked against the segment's own private layout
/// (belt and braces: the lease was checked against the same numbers).
fn range_ptr(segment: &Segment, range: SlotRange) -> Result<*mut u8, ErrorCode> {
    let slot_size = u64::from(segment.layout().params.slot_size);
    if u64::from(range.offset) + u64::from(range.length) > slot_size {
        return Err(ErrorCode::Internal);
    }
    let base = segment.slot_ptr(range.id).ok_or(ErrorCode::Internal)?;
    // SAFETY: `offset + length <= slot_size`, and the slot's `slot_size` bytes lie inside the
    // mapping (`Segment::slot_ptr` checked `id < slot_count` against the mapped layout).
    Ok(unsafe { base.as_ptr().add(range.offset as usize) })
}

/// Runs `f` over the bytes of an IN_FLIGHT slot range.
///
/// The caller must hold the range's slot IN_FLIGHT for the whole call (a
/// [`Lease`](crate::peer::slots::Lease) from the slot table, not yet finished), and `segment`
/// must be that session's.
fn with_slot_bytes<R>(segment: &Segment, range: SlotRange, f: impl FnOnce(&[u8]) -> R) -> Result<R, ErrorCode> {
    let ptr = range_ptr(segment, range)?;
    // SAFETY: in bounds (see `range_ptr`) and kept mapped by `segment`. The slot is IN_FLIGHT:
    // by SPEC §9 the sidecar owns its bytes until the request's last completion, and nothing
    // in this process writes it meanwhile. A misbehaving agent that writes anyway races only
    // with these reads of plain bytes in memory shared with another process: it can change
    // which bytes we see (and so the checksum), nothing else — `u8` has no invalid values,
    // and nothing read here is used as a pointer, index or length.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast_const(), range.length as usize) };
    Ok(f(bytes))
}

/// ECHO: CRC-32C (Castagnoli) of the slot bytes, computed in place.
pub fn echo(segment: &Segment, range: SlotRange) -> Result<(u64, u64), ErrorCode> {
    let crc = with_slot_bytes(segment, range, crc32c::crc32c)?;
    Ok((u64::from(range.length), u64::from(crc)))
}

/// ECHO for large ranges, on the runtime: the same CRC, one chunk at a time.
pub async fn echo_chunked(segment: Segment, range: SlotRange) -> Result<(u64, u64), ErrorCode> {
    let mut crc = 0u32;
    let mut done = 0u32;
    while done < range.length {
        let n = (range.length - done).min(ECHO_CHUNK as u32);
        let chunk = SlotRange { id: range.id, offset: range.offset + done, length: n };
        crc = with_slot_bytes(&segment, chunk, |b| crc32c::crc32c_append(crc, b))?;
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
    let ptr = range_ptr(segment, range)?;
    // SAFETY: `doc.len() <= length`, so the write stays inside the checked range; the slot is
    // IN_FLIGHT (owned by the sidecar, SPEC §9), and `doc` is private memory, so the regions
    // do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(doc.as_ptr(), ptr, doc.len()) };
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
        // SAFETY: test-only, in bounds of slot `id`, single-threaded.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), seg.slot_ptr(id).unwrap().as_ptr(), bytes.len()) };
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
        // SAFETY: test-only read of bytes just written, in bounds.
        let got = unsafe { std::slice::from_raw_parts(seg.slot_ptr(0).unwrap().as_ptr().add(10), 4) };
        assert_eq!(got, b"abcd");
    }
}
