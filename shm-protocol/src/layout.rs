//! Segment layout (SPEC.md §2–§4): constants, header field offsets, and the computation of
//! region offsets from negotiated parameters. Pure arithmetic: no memory is touched here.

/// `"SHMPIPE\0"` read as a little-endian u64 (SPEC §2).
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPIPE\0");
pub const VERSION: u32 = 1;
pub const HEADER_SIZE: usize = 4096;
pub const PAGE_SIZE: usize = 4096;
pub const CACHE_LINE: usize = 128;
pub const ENTRY_SIZE: usize = 64;
pub const GRANT_ENTRY_SIZE: usize = 8;
pub const RING_HEADER_SIZE: usize = 256;
pub const NO_SLOT: u32 = u32::MAX;
pub const MIN_RING_CAPACITY: u32 = 2;
pub const MAX_RING_CAPACITY: u32 = 65_536;
pub const MAX_SLOT_COUNT: u32 = 65_535;
pub const MAX_SLOT_SIZE: u32 = 1 << 30;

/// Byte offsets of the header fields (SPEC §3). Checked against the vectors and `repr(C)`
/// structs in tests; the TS side asserts the same numbers.
pub mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const SEGMENT_SIZE: usize = 16;
    pub const GENERATION: usize = 24;
    pub const ENTRY_SIZE: usize = 32;
    pub const GRANT_ENTRY_SIZE: usize = 36;
    pub const SQ_OFFSET: usize = 40;
    pub const SQ_CAPACITY: usize = 48;
    pub const CQ_CAPACITY: usize = 52;
    pub const CQ_OFFSET: usize = 56;
    pub const GQ_OFFSET: usize = 64;
    pub const GQ_CAPACITY: usize = 72;
    pub const SLOT_COUNT: usize = 76;
    pub const SLOT_OFFSET: usize = 80;
    pub const SLOT_SIZE: usize = 88;
    pub const FLAGS: usize = 92;
    /// End of the static fields; `[STATIC_END, STATE)` is reserved and zero.
    pub const STATIC_END: usize = 96;
    pub const STATE: usize = 128;
    pub const SIDECAR_HEARTBEAT: usize = 256;
    pub const SIDECAR_NEED_WAKEUP: usize = 384;
    pub const AGENT_NEED_WAKEUP: usize = 512;
}

/// Offsets inside a ring region (SPEC §4).
pub mod ring {
    pub const TAIL: usize = 0;
    pub const HEAD: usize = 128;
    pub const ENTRIES: usize = super::RING_HEADER_SIZE;
}

/// The header's static fields as a `repr(C)` struct: a second, compiler-checked statement of
/// the offsets above (the asserts below fail the build if the two ever disagree).
#[repr(C)]
pub struct HeaderStatic {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub segment_size: u64,
    pub generation: u64,
    pub entry_size: u32,
    pub grant_entry_size: u32,
    pub sq_offset: u64,
    pub sq_capacity: u32,
    pub cq_capacity: u32,
    pub cq_offset: u64,
    pub gq_offset: u64,
    pub gq_capacity: u32,
    pub slot_count: u32,
    pub slot_offset: u64,
    pub slot_size: u32,
    pub flags: u32,
}

/// A ring's control block: each position alone on its 128-byte line (SPEC §4).
#[repr(C, align(128))]
pub struct RingControl {
    pub tail: u64,
    _pad_tail: [u8; CACHE_LINE - 8],
    pub head: u64,
    _pad_head: [u8; CACHE_LINE - 8],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(HeaderStatic, magic) == header::MAGIC);
    assert!(offset_of!(HeaderStatic, version) == header::VERSION);
    assert!(offset_of!(HeaderStatic, header_size) == header::HEADER_SIZE);
    assert!(offset_of!(HeaderStatic, segment_size) == header::SEGMENT_SIZE);
    assert!(offset_of!(HeaderStatic, generation) == header::GENERATION);
    assert!(offset_of!(HeaderStatic, entry_size) == header::ENTRY_SIZE);
    assert!(offset_of!(HeaderStatic, grant_entry_size) == header::GRANT_ENTRY_SIZE);
    assert!(offset_of!(HeaderStatic, sq_offset) == header::SQ_OFFSET);
    assert!(offset_of!(HeaderStatic, sq_capacity) == header::SQ_CAPACITY);
    assert!(offset_of!(HeaderStatic, cq_capacity) == header::CQ_CAPACITY);
    assert!(offset_of!(HeaderStatic, cq_offset) == header::CQ_OFFSET);
    assert!(offset_of!(HeaderStatic, gq_offset) == header::GQ_OFFSET);
    assert!(offset_of!(HeaderStatic, gq_capacity) == header::GQ_CAPACITY);
    assert!(offset_of!(HeaderStatic, slot_count) == header::SLOT_COUNT);
    assert!(offset_of!(HeaderStatic, slot_offset) == header::SLOT_OFFSET);
    assert!(offset_of!(HeaderStatic, slot_size) == header::SLOT_SIZE);
    assert!(offset_of!(HeaderStatic, flags) == header::FLAGS);
    assert!(size_of::<HeaderStatic>() == header::STATIC_END);
    assert!(header::STATE >= header::STATIC_END && header::STATE % CACHE_LINE == 0);
    assert!(offset_of!(RingControl, tail) == ring::TAIL);
    assert!(offset_of!(RingControl, head) == ring::HEAD);
    assert!(size_of::<RingControl>() <= ring::ENTRIES);
    assert!(RING_HEADER_SIZE % 64 == 0 && HEADER_SIZE == PAGE_SIZE);
};

/// Values of the header `state` word (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SessionState {
    Init = 0,
    Ready = 1,
    Draining = 2,
    Closed = 3,
}

impl SessionState {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Init),
            1 => Some(Self::Ready),
            2 => Some(Self::Draining),
            3 => Some(Self::Closed),
            _ => None,
        }
    }
}

/// Parameters negotiated at connect. Construct with [`Params::new`], which validates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub sq_capacity: u32,
    pub cq_capacity: u32,
    pub slot_count: u32,
    pub slot_size: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// A ring capacity is not a power of two in `MIN_RING_CAPACITY..=MAX_RING_CAPACITY`.
    RingCapacity(u32),
    SlotCount(u32),
    /// Not a multiple of `PAGE_SIZE` in `PAGE_SIZE..=MAX_SLOT_SIZE`.
    SlotSize(u32),
    /// The whole segment would not fit in `usize` / u64.
    TooLarge,
    /// A header read from memory disagrees with the layout computed from its own parameters.
    HeaderMismatch(&'static str),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::RingCapacity(c) => write!(f, "ring capacity {c} is not a power of two in 2..=65536"),
            Self::SlotCount(n) => write!(f, "slot count {n} is not in 1..=65535"),
            Self::SlotSize(s) => write!(f, "slot size {s} is not a multiple of 4096 in 4096..=1GiB"),
            Self::TooLarge => write!(f, "segment size overflows"),
            Self::HeaderMismatch(field) => write!(f, "header field `{field}` does not match the layout"),
        }
    }
}

impl std::error::Error for LayoutError {}

fn check_ring(c: u32) -> Result<(), LayoutError> {
    if c.is_power_of_two() && (MIN_RING_CAPACITY..=MAX_RING_CAPACITY).contains(&c) {
        Ok(())
    } else {
        Err(LayoutError::RingCapacity(c))
    }
}

impl Params {
    pub fn new(sq_capacity: u32, cq_capacity: u32, slot_count: u32, slot_size: u32) -> Result<Self, LayoutError> {
        check_ring(sq_capacity)?;
        check_ring(cq_capacity)?;
        if slot_count == 0 || slot_count > MAX_SLOT_COUNT {
            return Err(LayoutError::SlotCount(slot_count));
        }
        if slot_size == 0 || slot_size % PAGE_SIZE as u32 != 0 || slot_size > MAX_SLOT_SIZE {
            return Err(LayoutError::SlotSize(slot_size));
        }
        Ok(Self { sq_capacity, cq_capacity, slot_count, slot_size })
    }

    /// The grant ring holds every slot at once, so it can never overflow (SPEC §3).
    pub fn gq_capacity(&self) -> u32 {
        self.slot_count.next_power_of_two().max(MIN_RING_CAPACITY)
    }
}

/// Region offsets and sizes, all derived from [`Params`]; identical on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub params: Params,
    pub sq_offset: u64,
    pub cq_offset: u64,
    pub gq_offset: u64,
    pub gq_capacity: u32,
    pub slot_offset: u64,
    pub segment_size: u64,
}

const fn round_up_page(n: u64) -> u64 {
    (n + PAGE_SIZE as u64 - 1) & !(PAGE_SIZE as u64 - 1)
}

/// Bytes a ring region occupies: header lines plus entries, rounded up to a page.
pub const fn ring_region_size(capacity: u32, entry_size: usize) -> u64 {
    round_up_page(RING_HEADER_SIZE as u64 + capacity as u64 * entry_size as u64)
}

impl Layout {
    pub fn new(params: Params) -> Result<Self, LayoutError> {
        let gq_capacity = params.gq_capacity();
        let sq_offset = HEADER_SIZE as u64;
        let cq_offset = sq_offset + ring_region_size(params.sq_capacity, ENTRY_SIZE);
        let gq_offset = cq_offset + ring_region_size(params.cq_capacity, ENTRY_SIZE);
        let slot_offset = gq_offset + ring_region_size(gq_capacity, GRANT_ENTRY_SIZE);
        let slots = u64::from(params.slot_count) * u64::from(params.slot_size);
        let segment_size = slot_offset.checked_add(slots).ok_or(LayoutError::TooLarge)?;
        usize::try_from(segment_size).map_err(|_| LayoutError::TooLarge)?;
        Ok(Self { params, sq_offset, cq_offset, gq_offset, gq_capacity, slot_offset, segment_size })
    }

    /// Byte offset of slot `id`'s first byte. `id` must be `< slot_count` (checked).
    pub fn slot_offset_of(&self, id: u32) -> Option<u64> {
        (id < self.params.slot_count).then(|| self.slot_offset + u64::from(id) * u64::from(self.params.slot_size))
    }

    /// Writes the static header fields (SPEC §3) into `hdr` (at least `header::STATIC_END` bytes,
    /// zeroed). Dynamic fields stay zero; `state` is published separately with Release.
    pub fn encode_header(&self, generation: u64, hdr: &mut [u8]) {
        use header as h;
        assert!(hdr.len() >= header::STATIC_END, "header buffer too small");
        let p = &self.params;
        put_u64(hdr, h::MAGIC, MAGIC);
        put_u32(hdr, h::VERSION, VERSION);
        put_u32(hdr, h::HEADER_SIZE, HEADER_SIZE as u32);
        put_u64(hdr, h::SEGMENT_SIZE, self.segment_size);
        put_u64(hdr, h::GENERATION, generation);
        put_u32(hdr, h::ENTRY_SIZE, ENTRY_SIZE as u32);
        put_u32(hdr, h::GRANT_ENTRY_SIZE, GRANT_ENTRY_SIZE as u32);
        put_u64(hdr, h::SQ_OFFSET, self.sq_offset);
        put_u32(hdr, h::SQ_CAPACITY, p.sq_capacity);
        put_u32(hdr, h::CQ_CAPACITY, p.cq_capacity);
        put_u64(hdr, h::CQ_OFFSET, self.cq_offset);
        put_u64(hdr, h::GQ_OFFSET, self.gq_offset);
        put_u32(hdr, h::GQ_CAPACITY, self.gq_capacity);
        put_u32(hdr, h::SLOT_COUNT, p.slot_count);
        put_u64(hdr, h::SLOT_OFFSET, self.slot_offset);
        put_u32(hdr, h::SLOT_SIZE, p.slot_size);
        put_u32(hdr, h::FLAGS, 0);
    }

    /// Parses and cross-checks the static header fields: every offset must equal what this
    /// side computes from the header's own parameters. Returns the layout and generation.
    pub fn decode_header(hdr: &[u8]) -> Result<(Self, u64), LayoutError> {
        use header as h;
        if hdr.len() < HEADER_SIZE {
            return Err(LayoutError::HeaderMismatch("header_size"));
        }
        let expect = |ok: bool, field| if ok { Ok(()) } else { Err(LayoutError::HeaderMismatch(field)) };
        expect(get_u64(hdr, h::MAGIC) == MAGIC, "magic")?;
        expect(get_u32(hdr, h::VERSION) == VERSION, "version")?;
        expect(get_u32(hdr, h::HEADER_SIZE) == HEADER_SIZE as u32, "header_size")?;
        expect(get_u32(hdr, h::ENTRY_SIZE) == ENTRY_SIZE as u32, "entry_size")?;
        expect(get_u32(hdr, h::GRANT_ENTRY_SIZE) == GRANT_ENTRY_SIZE as u32, "grant_entry_size")?;
        expect(get_u32(hdr, h::FLAGS) == 0, "flags")?;
        let params = Params::new(
            get_u32(hdr, h::SQ_CAPACITY),
            get_u32(hdr, h::CQ_CAPACITY),
            get_u32(hdr, h::SLOT_COUNT),
            get_u32(hdr, h::SLOT_SIZE),
        )?;
        let layout = Self::new(params)?;
        expect(get_u64(hdr, h::SEGMENT_SIZE) == layout.segment_size, "segment_size")?;
        expect(get_u64(hdr, h::SQ_OFFSET) == layout.sq_offset, "sq_offset")?;
        expect(get_u64(hdr, h::CQ_OFFSET) == layout.cq_offset, "cq_offset")?;
        expect(get_u64(hdr, h::GQ_OFFSET) == layout.gq_offset, "gq_offset")?;
        expect(get_u32(hdr, h::GQ_CAPACITY) == layout.gq_capacity, "gq_capacity")?;
        expect(get_u64(hdr, h::SLOT_OFFSET) == layout.slot_offset, "slot_offset")?;
        let generation = get_u64(hdr, h::GENERATION);
        expect(generation != 0, "generation")?;
        Ok((layout, generation))
    }
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dynamic_field_has_its_own_line() {
        let fields = [header::STATE, header::SIDECAR_HEARTBEAT, header::SIDECAR_NEED_WAKEUP, header::AGENT_NEED_WAKEUP];
        for w in fields.windows(2) {
            assert!(w[1] - w[0] >= CACHE_LINE);
        }
    }

    #[test]
    fn regions_are_page_aligned_and_disjoint() {
        let l = Layout::new(Params::new(256, 512, 33, 65536).unwrap()).unwrap();
        for off in [l.sq_offset, l.cq_offset, l.gq_offset, l.slot_offset] {
            assert_eq!(off % PAGE_SIZE as u64, 0);
        }
        assert_eq!(l.cq_offset - l.sq_offset, ring_region_size(256, 64));
        assert_eq!(l.gq_capacity, 64);
        assert_eq!(l.segment_size, l.slot_offset + 33 * 65536);
        assert_eq!(l.slot_offset_of(32), Some(l.slot_offset + 32 * 65536));
        assert_eq!(l.slot_offset_of(33), None);
    }

    #[test]
    fn header_round_trips_and_rejects_tampering() {
        let l = Layout::new(Params::new(64, 64, 8, 8192).unwrap()).unwrap();
        let mut h = vec![0u8; HEADER_SIZE];
        l.encode_header(7, &mut h);
        assert_eq!(Layout::decode_header(&h), Ok((l, 7)));
        for (at, field) in [(header::MAGIC, "magic"), (header::SLOT_OFFSET, "slot_offset"), (header::SQ_OFFSET, "sq_offset")] {
            let mut bad = h.clone();
            bad[at] ^= 1;
            assert_eq!(Layout::decode_header(&bad), Err(LayoutError::HeaderMismatch(field)));
        }
        let mut bad = h.clone();
        put_u32(&mut bad, header::SLOT_SIZE, 100);
        assert_eq!(Layout::decode_header(&bad), Err(LayoutError::SlotSize(100)));
    }

    #[test]
    fn params_are_validated() {
        assert_eq!(Params::new(3, 64, 1, 4096), Err(LayoutError::RingCapacity(3)));
        assert_eq!(Params::new(1 << 17, 64, 1, 4096), Err(LayoutError::RingCapacity(1 << 17)));
        assert_eq!(Params::new(64, 64, 0, 4096), Err(LayoutError::SlotCount(0)));
        assert_eq!(Params::new(64, 64, 1, 4097), Err(LayoutError::SlotSize(4097)));
        assert!(Params::new(2, 65536, 65535, 4096).is_ok());
    }
}
