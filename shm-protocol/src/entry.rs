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
    // Object-store ops (SPEC §7.2).
    Put = 16,
    OpenWrite = 17,
    Write = 18,
    Commit = 19,
    Abort = 20,
    OpenRead = 21,
    Stat = 22,
    List = 23,
    Delete = 24,
    // Backup-engine ops (SPEC §7.3).
    RepoInit = 64,
    RepoOpen = 65,
    BackupBegin = 66,
    FileOpen = 67,
    FileWrite = 68,
    FileFinish = 69,
    FilePut = 70,
    AddEntries = 71,
    BackupCommit = 72,
    BackupAbort = 73,
    Close = 74,
    Snapshots = 75,
    EntriesOpen = 76,
    EntriesNext = 77,
    ContentRead = 78,
    Check = 79,
    JobStart = 80,
    JobNext = 81,
}

impl Opcode {
    pub const ALL: [Opcode; 32] = [
        Self::Nop,
        Self::Echo,
        Self::SlotRelease,
        Self::Stats,
        Self::Delay,
        Self::Put,
        Self::OpenWrite,
        Self::Write,
        Self::Commit,
        Self::Abort,
        Self::OpenRead,
        Self::Stat,
        Self::List,
        Self::Delete,
        Self::RepoInit,
        Self::RepoOpen,
        Self::BackupBegin,
        Self::FileOpen,
        Self::FileWrite,
        Self::FileFinish,
        Self::FilePut,
        Self::AddEntries,
        Self::BackupCommit,
        Self::BackupAbort,
        Self::Close,
        Self::Snapshots,
        Self::EntriesOpen,
        Self::EntriesNext,
        Self::ContentRead,
        Self::Check,
        Self::JobStart,
        Self::JobNext,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Nop),
            1 => Some(Self::Echo),
            2 => Some(Self::SlotRelease),
            3 => Some(Self::Stats),
            4 => Some(Self::Delay),
            16 => Some(Self::Put),
            17 => Some(Self::OpenWrite),
            18 => Some(Self::Write),
            19 => Some(Self::Commit),
            20 => Some(Self::Abort),
            21 => Some(Self::OpenRead),
            22 => Some(Self::Stat),
            23 => Some(Self::List),
            24 => Some(Self::Delete),
            64 => Some(Self::RepoInit),
            65 => Some(Self::RepoOpen),
            66 => Some(Self::BackupBegin),
            67 => Some(Self::FileOpen),
            68 => Some(Self::FileWrite),
            69 => Some(Self::FileFinish),
            70 => Some(Self::FilePut),
            71 => Some(Self::AddEntries),
            72 => Some(Self::BackupCommit),
            73 => Some(Self::BackupAbort),
            74 => Some(Self::Close),
            75 => Some(Self::Snapshots),
            76 => Some(Self::EntriesOpen),
            77 => Some(Self::EntriesNext),
            78 => Some(Self::ContentRead),
            79 => Some(Self::Check),
            80 => Some(Self::JobStart),
            81 => Some(Self::JobNext),
            _ => None,
        }
    }

    /// Position in [`Opcode::ALL`] (a dense index for per-op counters; opcodes have gaps).
    pub const fn index(self) -> usize {
        match self {
            Self::Nop => 0,
            Self::Echo => 1,
            Self::SlotRelease => 2,
            Self::Stats => 3,
            Self::Delay => 4,
            Self::Put => 5,
            Self::OpenWrite => 6,
            Self::Write => 7,
            Self::Commit => 8,
            Self::Abort => 9,
            Self::OpenRead => 10,
            Self::Stat => 11,
            Self::List => 12,
            Self::Delete => 13,
            Self::RepoInit => 14,
            Self::RepoOpen => 15,
            Self::BackupBegin => 16,
            Self::FileOpen => 17,
            Self::FileWrite => 18,
            Self::FileFinish => 19,
            Self::FilePut => 20,
            Self::AddEntries => 21,
            Self::BackupCommit => 22,
            Self::BackupAbort => 23,
            Self::Close => 24,
            Self::Snapshots => 25,
            Self::EntriesOpen => 26,
            Self::EntriesNext => 27,
            Self::ContentRead => 28,
            Self::Check => 29,
            Self::JobStart => 30,
            Self::JobNext => 31,
        }
    }

    /// Whether the op requires a slot (SPEC §7).
    pub fn needs_slot(self) -> bool {
        !matches!(
            self,
            Self::Nop | Self::Delay | Self::Commit | Self::Abort | Self::FileOpen | Self::BackupAbort | Self::Close
        )
    }

    /// An object-store op (SPEC §7.2): runs against the sidecar's store.
    pub fn is_store(self) -> bool {
        (16..64).contains(&(self as u8))
    }

    /// A backup-engine op (SPEC §7.3): runs against the repository in the sidecar's store.
    pub fn is_backup(self) -> bool {
        (self as u8) >= 64
    }

    /// Ops that take ownership of their slot once accepted (SPEC §7.2, §7.3): the completion
    /// that ends them carries no `SLOT`, and the slot returns to the free pool later.
    pub fn consumes_slot(self) -> bool {
        matches!(self, Self::Put | Self::Write | Self::OpenRead | Self::FileWrite | Self::ContentRead)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Nop => "nop",
            Self::Echo => "echo",
            Self::SlotRelease => "slot_release",
            Self::Stats => "stats",
            Self::Delay => "delay",
            Self::Put => "put",
            Self::OpenWrite => "open_write",
            Self::Write => "write",
            Self::Commit => "commit",
            Self::Abort => "abort",
            Self::OpenRead => "open_read",
            Self::Stat => "stat",
            Self::List => "list",
            Self::Delete => "delete",
            Self::RepoInit => "repo_init",
            Self::RepoOpen => "repo_open",
            Self::BackupBegin => "backup_begin",
            Self::FileOpen => "file_open",
            Self::FileWrite => "file_write",
            Self::FileFinish => "file_finish",
            Self::FilePut => "file_put",
            Self::AddEntries => "add_entries",
            Self::BackupCommit => "backup_commit",
            Self::BackupAbort => "backup_abort",
            Self::Close => "close",
            Self::Snapshots => "snapshots",
            Self::EntriesOpen => "entries_open",
            Self::EntriesNext => "entries_next",
            Self::ContentRead => "content_read",
            Self::Check => "check",
            Self::JobStart => "job_start",
            Self::JobNext => "job_next",
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

/// Longest object key in bytes (SPEC §7.2; S3's limit).
pub const MAX_KEY_LEN: u32 = 1024;

/// OPEN_READ `arg1` meaning "to the end of the object" (SPEC §7.2).
pub const RANGE_TO_END: u64 = u64::MAX;

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
    fn opcodes_decode_index_and_classify() {
        for (i, op) in Opcode::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
            assert_eq!(Opcode::from_u8(*op as u8), Some(*op));
        }
        assert_eq!((5..16).filter_map(Opcode::from_u8).count(), 0);
        assert_eq!(Opcode::from_u8(25), None);
        assert!(Opcode::Put.needs_slot() && Opcode::Put.consumes_slot() && Opcode::Put.is_store());
        assert!(!Opcode::Commit.needs_slot() && !Opcode::Abort.needs_slot());
        assert!(Opcode::Stat.needs_slot() && !Opcode::Stat.consumes_slot());
        assert!(!Opcode::Echo.is_store());
        assert!(Opcode::FilePut.is_backup() && !Opcode::FilePut.is_store() && !Opcode::Delete.is_backup());
        assert!(Opcode::FileWrite.consumes_slot() && Opcode::ContentRead.consumes_slot() && !Opcode::FilePut.consumes_slot());
        assert!(!Opcode::FileOpen.needs_slot() && !Opcode::Close.needs_slot() && Opcode::Check.needs_slot());
        let commit = RawSubmission { request_id: 1, opcode: Opcode::Commit as u8, slot_id: NO_SLOT, args: [7, 0, 0, 0], ..Default::default() };
        assert!(commit.validate().is_ok());
        assert_eq!(RawSubmission { slot_id: 0, ..commit }.validate().unwrap_err().code, ErrorCode::Malformed);
        let put = RawSubmission { opcode: Opcode::Put as u8, ..commit };
        assert_eq!(put.validate().unwrap_err().code, ErrorCode::InvalidSlot);
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
