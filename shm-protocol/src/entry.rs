//! Ring entries (SPEC.md §5): the 64-byte submission and completion, the 8-byte grant, and
//! opcodes (§7). Decoding works on a private copy of the bytes and validates every field, so
//! arbitrary bytes give an error, never a panic.

use crate::error::ErrorCode;
use crate::layout::{get_u32, get_u64, put_u32, put_u64, ENTRY_SIZE, GRANT_ENTRY_SIZE, NO_SLOT};

pub type EntryBytes = [u8; ENTRY_SIZE];
pub type GrantBytes = [u8; GRANT_ENTRY_SIZE];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Nop = 0,
    Echo = 1,
    SlotRelease = 2,
    Stats = 3,
    Delay = 4,
}

impl Opcode {
    pub const ALL: [Opcode; 5] = [Self::Nop, Self::Echo, Self::SlotRelease, Self::Stats, Self::Delay];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| *o as u8 == v)
    }

    /// Whether the op requires a slot (SPEC §7).
    pub fn needs_slot(self) -> bool {
        matches!(self, Self::Echo | Self::SlotRelease | Self::Stats)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Nop => "nop",
            Self::Echo => "echo",
            Self::SlotRelease => "slot_release",
            Self::Stats => "stats",
            Self::Delay => "delay",
        }
    }
}

/// Submission flag bits (SPEC §5.1).
pub mod sq_flags {
    pub const RELEASE_SLOT: u8 = 1 << 0;
    pub const KNOWN: u8 = RELEASE_SLOT;
}

/// Completion flag bits (SPEC §5.2).
pub mod cq_flags {
    pub const MORE: u32 = 1 << 0;
    pub const SLOT: u32 = 1 << 1;
    pub const KNOWN: u32 = MORE | SLOT;
}

/// Maximum `DELAY` argument (SPEC §7): 60 s in microseconds.
pub const MAX_DELAY_US: u64 = 60_000_000;

/// A submission exactly as it sits on the wire; no field has been validated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawSubmission {
    pub request_id: u64,
    pub opcode: u8,
    pub flags: u8,
    pub reserved0: u16,
    pub slot_id: u32,
    pub slot_gen: u32,
    pub offset: u32,
    pub length: u32,
    pub reserved1: u32,
    pub args: [u64; 4],
}

/// A submission whose fields passed the slot-independent checks. Slot ownership and range
/// against `slot_size` are checked by the sidecar, which alone knows the slot states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    pub request_id: u64,
    pub opcode: Opcode,
    pub flags: u8,
    /// `None` when the op takes no slot.
    pub slot: Option<SlotRef>,
    pub args: [u64; 4],
}

/// A slot named by a submission, with the data range inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRef {
    pub id: u32,
    pub generation: u32,
    pub offset: u32,
    pub length: u32,
}

impl SlotRef {
    /// End of the range in u64, so `offset + length` cannot overflow.
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.length)
    }
}

/// Why a submission was refused; `code` goes into the error completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub request_id: u64,
    pub code: ErrorCode,
}

impl RawSubmission {
    pub fn decode(b: &EntryBytes) -> Self {
        Self {
            request_id: get_u64(b, 0),
            opcode: b[8],
            flags: b[9],
            reserved0: u16::from_le_bytes([b[10], b[11]]),
            slot_id: get_u32(b, 12),
            slot_gen: get_u32(b, 16),
            offset: get_u32(b, 20),
            length: get_u32(b, 24),
            reserved1: get_u32(b, 28),
            args: [get_u64(b, 32), get_u64(b, 40), get_u64(b, 48), get_u64(b, 56)],
        }
    }

    pub fn encode(&self) -> EntryBytes {
        let mut b = [0u8; ENTRY_SIZE];
        put_u64(&mut b, 0, self.request_id);
        b[8] = self.opcode;
        b[9] = self.flags;
        b[10..12].copy_from_slice(&self.reserved0.to_le_bytes());
        put_u32(&mut b, 12, self.slot_id);
        put_u32(&mut b, 16, self.slot_gen);
        put_u32(&mut b, 20, self.offset);
        put_u32(&mut b, 24, self.length);
        put_u32(&mut b, 28, self.reserved1);
        for (i, a) in self.args.iter().enumerate() {
            put_u64(&mut b, 32 + 8 * i, *a);
        }
        b
    }

    /// Slot-independent validation (SPEC §9). Checks, in order: opcode, reserved fields and
    /// flags, slot presence, op-specific arguments.
    pub fn validate(&self) -> Result<Submission, DecodeError> {
        let err = |code| DecodeError { request_id: self.request_id, code };
        let opcode = Opcode::from_u8(self.opcode).ok_or(err(ErrorCode::UnknownOpcode))?;
        if self.reserved0 != 0 || self.reserved1 != 0 || self.flags & !sq_flags::KNOWN != 0 {
            return Err(err(ErrorCode::Malformed));
        }
        let slot = if opcode.needs_slot() {
            if self.slot_id == NO_SLOT {
                return Err(err(ErrorCode::InvalidSlot));
            }
            Some(SlotRef { id: self.slot_id, generation: self.slot_gen, offset: self.offset, length: self.length })
        } else {
            // An op without a slot must not name one, nor claim to release one.
            if self.slot_id != NO_SLOT || self.slot_gen != 0 || self.offset != 0 || self.length != 0 || self.flags != 0 {
                return Err(err(ErrorCode::Malformed));
            }
            None
        };
        if opcode == Opcode::Delay && self.args[0] > MAX_DELAY_US {
            return Err(err(ErrorCode::Malformed));
        }
        Ok(Submission { request_id: self.request_id, opcode, flags: self.flags, slot, args: self.args })
    }
}

impl Submission {
    pub fn releases_slot(&self) -> bool {
        self.flags & sq_flags::RELEASE_SLOT != 0
    }
}

/// A completion (SPEC §5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    pub request_id: u64,
    pub status: i32,
    pub flags: u32,
    pub slot_id: u32,
    pub slot_gen: u32,
    pub result: u64,
    pub aux: [u64; 3],
}

impl Completion {
    pub fn ok(request_id: u64, result: u64) -> Self {
        Self { request_id, slot_id: NO_SLOT, result, ..Self::default() }
    }

    pub fn error(request_id: u64, code: ErrorCode) -> Self {
        Self { request_id, status: code.status(), slot_id: NO_SLOT, ..Self::default() }
    }

    /// Hands slot `(id, generation)` back to the agent with this completion.
    pub fn with_slot(mut self, id: u32, generation: u32) -> Self {
        self.flags |= cq_flags::SLOT;
        self.slot_id = id;
        self.slot_gen = generation;
        self
    }

    pub fn encode(&self) -> EntryBytes {
        let mut b = [0u8; ENTRY_SIZE];
        put_u64(&mut b, 0, self.request_id);
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        put_u32(&mut b, 12, self.flags);
        put_u32(&mut b, 16, self.slot_id);
        put_u32(&mut b, 20, self.slot_gen);
        put_u64(&mut b, 24, self.result);
        for (i, a) in self.aux.iter().enumerate() {
            put_u64(&mut b, 32 + 8 * i, *a);
        }
        b
    }

    /// Decodes and checks the reserved word and flag bits (the agent side's check).
    pub fn decode(b: &EntryBytes) -> Result<Self, ErrorCode> {
        let c = Self {
            request_id: get_u64(b, 0),
            status: i32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: get_u32(b, 12),
            slot_id: get_u32(b, 16),
            slot_gen: get_u32(b, 20),
            result: get_u64(b, 24),
            aux: [get_u64(b, 32), get_u64(b, 40), get_u64(b, 48)],
        };
        if get_u64(b, 56) != 0 || c.flags & !cq_flags::KNOWN != 0 || c.status > 0 {
            return Err(ErrorCode::Malformed);
        }
        Ok(c)
    }
}

/// A slot grant (SPEC §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub slot_id: u32,
    pub slot_gen: u32,
}

impl Grant {
    pub fn encode(&self) -> GrantBytes {
        let mut b = [0u8; GRANT_ENTRY_SIZE];
        put_u32(&mut b, 0, self.slot_id);
        put_u32(&mut b, 4, self.slot_gen);
        b
    }

    pub fn decode(b: &GrantBytes) -> Self {
        Self { slot_id: get_u32(b, 0), slot_gen: get_u32(b, 4) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(slot: u32) -> RawSubmission {
        RawSubmission { request_id: 9, opcode: Opcode::Echo as u8, slot_id: slot, slot_gen: 1, length: 10, ..Default::default() }
    }

    #[test]
    fn submission_round_trips() {
        let s = RawSubmission { args: [1, 2, 3, u64::MAX], reserved1: 5, ..echo(3) };
        assert_eq!(RawSubmission::decode(&s.encode()), s);
    }

    #[test]
    fn validation_gives_the_specific_code() {
        let code = |s: RawSubmission| s.validate().unwrap_err().code;
        assert_eq!(code(RawSubmission { opcode: 200, ..echo(1) }), ErrorCode::UnknownOpcode);
        assert_eq!(code(RawSubmission { reserved0: 1, ..echo(1) }), ErrorCode::Malformed);
        assert_eq!(code(RawSubmission { flags: 0x80, ..echo(1) }), ErrorCode::Malformed);
        assert_eq!(code(echo(NO_SLOT)), ErrorCode::InvalidSlot);
        let nop = RawSubmission { request_id: 1, slot_id: NO_SLOT, ..Default::default() };
        assert!(nop.validate().is_ok());
        assert_eq!(code(RawSubmission { slot_id: 0, ..nop }), ErrorCode::Malformed);
        let delay = RawSubmission { opcode: Opcode::Delay as u8, args: [MAX_DELAY_US + 1, 0, 0, 0], ..nop };
        assert_eq!(code(delay), ErrorCode::Malformed);
        let ok = echo(4).validate().unwrap();
        assert_eq!(ok.slot, Some(SlotRef { id: 4, generation: 1, offset: 0, length: 10 }));
    }

    #[test]
    fn completion_round_trips_and_checks_reserved() {
        let c = Completion { aux: [7, 8, 9], ..Completion::error(5, ErrorCode::StaleSlot).with_slot(2, 3) };
        assert_eq!(Completion::decode(&c.encode()), Ok(c));
        let mut b = c.encode();
        b[63] = 1;
        assert_eq!(Completion::decode(&b), Err(ErrorCode::Malformed));
        let g = Grant { slot_id: 1, slot_gen: u32::MAX };
        assert_eq!(Grant::decode(&g.encode()), g);
    }
}
