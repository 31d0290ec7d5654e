//! Slot bytes in and out: the only code in the sidecar that reads or writes a slot.
//!
//! The agent can write any byte of its segment at any time, whatever the slot states say
//! (SPEC §12). So nothing here hands out a Rust reference (`&[u8]`, `&mut [u8]`) into a
//! segment — a reference promises the compiler that no one else writes the bytes while it
//! lives, which the agent can break, and then the compiler's assumptions (reading a byte once
//! and using it twice, or reading it twice and expecting the same value) are undefined
//! behaviour. Slot bytes are only ever *copied*, whole ranges at a time, between the segment
//! and private memory, by a copy the compiler cannot look into: every source byte is read
//! exactly once, and what was copied is what the sidecar then checks, hashes and stores.
//!
//! Addresses come from the sidecar's private layout ([`Segment::slot_ptr`] checks the slot id)
//! and a range check against `slot_size` here; nothing read from shared memory is ever used as
//! an address or a length.

use std::ptr::NonNull;

use shm_protocol::shm::Segment;
use shm_protocol::ErrorCode;

use crate::peer::private::{PrivateBuf, PrivatePool};
use crate::peer::slots::SlotRange;

/// Bytes copied between two yields of [`copy_to_private`] (~0.1 ms), so a 16 MiB slot does
/// not hold a runtime worker for its whole copy.
const COPY_PIECE: u32 = 1 << 20;

/// Address of `range` inside `segment`, checked against the segment's private layout (the
/// slot id by `Segment::slot_ptr`, the byte range here, in u64 arithmetic).
fn range_ptr(segment: &Segment, range: SlotRange) -> Result<NonNull<u8>, ErrorCode> {
    let slot_size = u64::from(segment.layout().params.slot_size);
    if u64::from(range.offset) + u64::from(range.length) > slot_size {
        return Err(ErrorCode::Internal);
    }
    let base = segment.slot_ptr(range.id).ok_or(ErrorCode::Internal)?;
    // SAFETY: `offset + length <= slot_size` and slot `id` lies inside the mapping
    // (`Segment::slot_ptr` checked `id < slot_count` against the mapped layout).
    Ok(unsafe { base.add(range.offset as usize) })
}

/// Copies `range` of a slot into `dst` (`dst.len() == range.length`).
///
/// The caller holds the range's slot IN_FLIGHT (a [`Lease`](crate::peer::slots::Lease) from
/// the slot table), so the protocol says no one writes it; a hostile agent that writes anyway
/// changes which bytes are copied, nothing else.
pub fn read(segment: &Segment, range: SlotRange, dst: &mut [u8]) -> Result<(), ErrorCode> {
    if dst.len() != range.length as usize {
        return Err(ErrorCode::Internal);
    }
    let src = range_ptr(segment, range)?;
    // SAFETY: `src` is valid for `length` bytes inside the mapping `segment` keeps alive
    // (`range_ptr`); `dst` is private memory of exactly that length, so they do not overlap.
    unsafe { copy_opaque(src.as_ptr().cast_const(), dst.as_mut_ptr(), dst.len()) };
    Ok(())
}

/// Copies `range` of a slot out into a new private buffer.
pub fn read_vec(segment: &Segment, range: SlotRange) -> Result<Vec<u8>, ErrorCode> {
    let mut out = vec![0u8; range.length as usize];
    read(segment, range, &mut out)?;
    Ok(out)
}

/// Writes `src` into `range` of a slot (`src.len() == range.length`). The caller holds the
/// slot IN_FLIGHT: the sidecar owns its bytes until it hands the slot back (SPEC §9).
pub fn write(segment: &Segment, range: SlotRange, src: &[u8]) -> Result<(), ErrorCode> {
    if src.len() != range.length as usize {
        return Err(ErrorCode::Internal);
    }
    let dst = range_ptr(segment, range)?;
    // SAFETY: `dst` is valid for `length` bytes inside the mapping (`range_ptr`); `src` is
    // private memory of that length, so they do not overlap.
    unsafe { copy_opaque(src.as_ptr(), dst.as_ptr(), src.len()) };
    Ok(())
}

/// Copies `range` of a slot into a private pooled buffer, a piece at a time with a yield in
/// between. Every read of the slot happens inside a poll of this future: once it is dropped
/// (a cancelled op) or has returned, nothing reads the slot any more, so the caller may give
/// the slot back at once.
pub async fn copy_to_private(segment: &Segment, range: SlotRange, pool: &std::sync::Arc<PrivatePool>) -> Result<PrivateBuf, ErrorCode> {
    let mut buf = pool.take(range.length as usize);
    let mut done = 0u32;
    while done < range.length {
        let n = (range.length - done).min(COPY_PIECE);
        let piece = SlotRange { id: range.id, offset: range.offset + done, length: n };
        read(segment, piece, &mut buf.as_mut()[done as usize..(done + n) as usize])?;
        done += n;
        if done < range.length {
            tokio::task::yield_now().await;
        }
    }
    Ok(buf)
}

/// Gives the memory of FREE slot `id` back to the system (`madvise(MADV_REMOVE)`: the memfd's
/// pages are freed, and the slot reads as zeros and is allocated again when next touched).
/// The caller holds the slot FREE — neither side should touch it; an agent that writes it
/// anyway just allocates its pages again. A mapping that is not shared memory (the tests'
/// heap segments) refuses with `EINVAL`, which is reported and changes nothing.
pub fn release_slot(segment: &Segment, id: u32) -> Result<(), nix::errno::Errno> {
    let len = segment.layout().params.slot_size as usize;
    let base = segment.slot_ptr(id).ok_or(nix::errno::Errno::EINVAL)?;
    // SAFETY: `base..base + slot_size` is slot `id`, inside the mapping `segment` keeps alive
    // (checked by `slot_ptr`), page-aligned (slots are page multiples at a page-aligned
    // offset). No reference into it exists in this process (this module hands out none), and
    // the slot is FREE: dropping its contents loses nothing anyone owns.
    unsafe { nix::sys::mman::madvise(base.cast(), len, nix::sys::mman::MmapAdvise::MADV_REMOVE) }
}

/// Bytes copied at a time by [`crc32c`]: small enough for the stack and L1, large enough that
/// the copy's setup cost vanishes.
const CRC_PIECE: usize = 16 * 1024;

/// CRC-32C (Castagnoli) of `range`, appended to `crc`: the bytes are copied out a piece at a
/// time into private memory and checksummed there.
pub fn crc32c(segment: &Segment, range: SlotRange, mut crc: u32) -> Result<u32, ErrorCode> {
    let mut piece = [0u8; CRC_PIECE];
    let mut done = 0u32;
    while done < range.length {
        let n = (range.length - done).min(CRC_PIECE as u32);
        let part = SlotRange { id: range.id, offset: range.offset + done, length: n };
        let buf = &mut piece[..n as usize];
        read(segment, part, buf)?;
        crc = crc32c::crc32c_append(crc, buf);
        done += n;
    }
    Ok(crc)
}

/// Copies `len` bytes from `src` to `dst` with one copy the compiler treats as opaque: it
/// cannot assume the source holds still, fold later reads into it, or read a byte twice.
///
/// # Safety
/// `src` is valid for `len` bytes of reads and `dst` for `len` bytes of writes, and the two
/// regions do not overlap.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn copy_opaque(src: *const u8, dst: *mut u8, len: usize) {
    // `rep movsb`: with ERMS/FSRM (every x86_64 this runs on) as fast as the best memcpy
    // for large copies (`benches/copy_once.rs`: 9.5 GB/s cache-cold, memcpy 8.9), and an
    // `asm!` block the optimiser cannot see into.
    // SAFETY: the caller guarantees both ranges; the System V ABI keeps the direction flag
    // clear, so the copy runs forwards over exactly `len` bytes. No stack use, no flags
    // changed.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Portable fallback: one volatile load per byte (slow, but exactly once each).
///
/// # Safety
/// As for the x86_64 version.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
unsafe fn copy_opaque(src: *const u8, dst: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: `i < len`: inside both ranges, which do not overlap.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
    }
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

    #[test]
    fn copies_in_and_out_within_the_slot_only() {
        let seg = segment();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let range = SlotRange { id: 1, offset: 3, length: data.len() as u32 };
        write(&seg, range, &data).unwrap();
        assert_eq!(read_vec(&seg, range).unwrap(), data);
        // Every length and alignment the copy can meet, against plain slices.
        for (off, len) in [(0, 0), (0, 1), (1, 15), (7, 16), (5, 63), (64, 65), (4095, 4097)] {
            let got = read_vec(&seg, SlotRange { id: 1, offset: 3 + off, length: len }).unwrap();
            assert_eq!(got, data[off as usize..(off + len) as usize]);
        }
        // Slot 0 untouched before slot 1.
        assert!(read_vec(&seg, SlotRange { id: 0, offset: (3 << 20) - 16, length: 16 }).unwrap().iter().all(|&b| b == 0));
        // Out of the slot, or of the slot table (two slots): refused, nothing copied.
        assert_eq!(read_vec(&seg, SlotRange { id: 1, offset: (3 << 20) - 1, length: 2 }), Err(ErrorCode::Internal));
        assert_eq!(read_vec(&seg, SlotRange { id: 2, offset: 0, length: 1 }), Err(ErrorCode::Internal));
        assert_eq!(write(&seg, SlotRange { id: 0, offset: u32::MAX, length: 1 }, b"x"), Err(ErrorCode::Internal));
        assert_eq!(write(&seg, SlotRange { id: 0, offset: 0, length: 2 }, b"x"), Err(ErrorCode::Internal));
    }

    #[test]
    fn crc_matches_the_plain_one_across_pieces() {
        let seg = segment();
        let data: Vec<u8> = (0..(3u32 << 20) - 5).map(|i| (i * 7 + i / 251) as u8).collect();
        write(&seg, SlotRange { id: 0, offset: 5, length: data.len() as u32 }, &data).unwrap();
        let range = SlotRange { id: 0, offset: 5, length: data.len() as u32 };
        assert_eq!(crc32c(&seg, range, 0).unwrap(), crc32c::crc32c(&data));
        write(&seg, SlotRange { id: 1, offset: 2, length: 9 }, b"123456789").unwrap();
        assert_eq!(crc32c(&seg, SlotRange { id: 1, offset: 2, length: 9 }, 0).unwrap(), 0xE306_9283);
    }
}
