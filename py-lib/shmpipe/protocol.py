"""The shmpipe shared-memory protocol as shm-protocol/SPEC.md defines it: constants, header and
ring offsets, layout arithmetic, and reference encoders/decoders for the header and the entries.

No I/O here. The client (``_core.py``) writes the same offsets straight into the mapped segment;
``tests/test_vectors.py`` checks everything here against shm-protocol/vectors/vectors.json.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0x0045_5049_504D_4853  # "SHMPIPE\0" as a little-endian u64
VERSION = 1
HEADER_SIZE = 4096
PAGE_SIZE = 4096
CACHE_LINE = 128
ENTRY_SIZE = 64
GRANT_ENTRY_SIZE = 8
RING_HEADER_SIZE = 256
NO_SLOT = 0xFFFF_FFFF
MIN_RING_CAPACITY = 2
MAX_RING_CAPACITY = 65536
MAX_SLOT_COUNT = 65535
MAX_SLOT_SIZE = 1 << 30
MAX_DELAY_US = 60_000_000
MAX_FRAME = 64 * 1024
MAX_KEY_LEN = 1024
RANGE_TO_END = 0xFFFF_FFFF_FFFF_FFFF

HEADER = {
    "magic": 0, "version": 8, "header_size": 12, "segment_size": 16, "generation": 24,
    "entry_size": 32, "grant_entry_size": 36, "sq_offset": 40, "sq_capacity": 48,
    "cq_capacity": 52, "cq_offset": 56, "gq_offset": 64, "gq_capacity": 72, "slot_count": 76,
    "slot_offset": 80, "slot_size": 88, "flags": 92, "static_end": 96, "state": 128,
    "sidecar_heartbeat": 256, "sidecar_need_wakeup": 384, "agent_need_wakeup": 512,
}
RING = {"tail": 0, "head": 128, "entries": RING_HEADER_SIZE}

STATE_INIT, STATE_READY, STATE_DRAINING, STATE_CLOSED = 0, 1, 2, 3
SQ_RELEASE_SLOT = 1
CQ_MORE = 1
CQ_SLOT = 2

OPCODES = {
    "NOP": 0, "ECHO": 1, "SLOT_RELEASE": 2, "STATS": 3, "DELAY": 4,
    "PUT": 16, "OPEN_WRITE": 17, "WRITE": 18, "COMMIT": 19, "ABORT": 20, "OPEN_READ": 21,
    "STAT": 22, "LIST": 23, "DELETE": 24,
    "REPO_INIT": 64, "REPO_OPEN": 65, "BACKUP_BEGIN": 66, "FILE_OPEN": 67, "FILE_WRITE": 68,
    "FILE_FINISH": 69, "FILE_PUT": 70, "ADD_ENTRIES": 71, "BACKUP_COMMIT": 72,
    "BACKUP_ABORT": 73, "CLOSE": 74, "SNAPSHOTS": 75, "ENTRIES_OPEN": 76, "ENTRIES_NEXT": 77,
    "CONTENT_READ": 78, "CHECK": 79, "JOB_START": 80, "JOB_NEXT": 81,
}
OP_NOP, OP_ECHO, OP_SLOT_RELEASE, OP_STATS, OP_DELAY = 0, 1, 2, 3, 4
OP_PUT, OP_OPEN_WRITE, OP_WRITE, OP_COMMIT, OP_ABORT, OP_OPEN_READ = 16, 17, 18, 19, 20, 21
OP_STAT, OP_LIST, OP_DELETE = 22, 23, 24

WIRE_ERROR_CODES = {
    "SHMPIPE_E_UNKNOWN_OPCODE": -1, "SHMPIPE_E_MALFORMED": -2, "SHMPIPE_E_INVALID_SLOT": -3,
    "SHMPIPE_E_STALE_SLOT": -4, "SHMPIPE_E_OUT_OF_RANGE": -5, "SHMPIPE_E_SHUTTING_DOWN": -6,
    "SHMPIPE_E_CANCELLED": -7, "SHMPIPE_E_BUSY": -8, "SHMPIPE_E_NOT_FOUND": -9,
    "SHMPIPE_E_STORE": -10, "SHMPIPE_E_INTEGRITY": -11, "SHMPIPE_E_INTERNAL": -12,
    "SHMPIPE_E_INVALID_HANDLE": -13, "SHMPIPE_E_WRONG_PASSWORD": -14,
    "SHMPIPE_E_NOT_A_REPOSITORY": -15, "SHMPIPE_E_REPO_EXISTS": -16, "SHMPIPE_E_LOCKED": -17,
    "SHMPIPE_E_REPO_VERSION": -18,
    "SHMPIPE_E_REPO_LIMIT": -25, "SHMPIPE_E_LOCK_LOST": -26, "SHMPIPE_E_REFUSED": -27,
}
CODE_BY_STATUS = {v: k for k, v in WIRE_ERROR_CODES.items()}

_NEEDS_SLOT = frozenset(OPCODES[n] for n in (
    "ECHO", "SLOT_RELEASE", "STATS", "PUT", "OPEN_WRITE", "WRITE", "OPEN_READ", "STAT", "LIST",
    "DELETE", "REPO_INIT", "REPO_OPEN", "BACKUP_BEGIN", "FILE_WRITE", "FILE_FINISH", "FILE_PUT",
    "ADD_ENTRIES", "BACKUP_COMMIT", "SNAPSHOTS", "ENTRIES_OPEN", "ENTRIES_NEXT", "CONTENT_READ",
    "CHECK", "JOB_START", "JOB_NEXT"))
_KNOWN_OPS = frozenset(OPCODES.values())


@dataclass(frozen=True)
class Layout:
    """Region offsets derived from the parameters; identical on both sides (SPEC §1, §4)."""

    sq_capacity: int
    cq_capacity: int
    slot_count: int
    slot_size: int
    sq_offset: int
    cq_offset: int
    gq_offset: int
    gq_capacity: int
    slot_offset: int
    segment_size: int


def _pow2(n: int) -> bool:
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


def ring_region_size(capacity: int, entry_size: int) -> int:
    return -(-(RING_HEADER_SIZE + capacity * entry_size) // PAGE_SIZE) * PAGE_SIZE


def check_params(sq_capacity: int, cq_capacity: int, slot_count: int, slot_size: int) -> str | None:
    """Why the parameters are unacceptable, or None."""
    for name, c in (("sq_capacity", sq_capacity), ("cq_capacity", cq_capacity)):
        if not _pow2(c) or not MIN_RING_CAPACITY <= c <= MAX_RING_CAPACITY:
            return f"{name} {c} is not a power of two in 2..=65536"
    if not isinstance(slot_count, int) or not 1 <= slot_count <= MAX_SLOT_COUNT:
        return f"slot_count {slot_count} is not in 1..=65535"
    if not isinstance(slot_size, int) or not PAGE_SIZE <= slot_size <= MAX_SLOT_SIZE or slot_size % PAGE_SIZE:
        return f"slot_size {slot_size} is not a multiple of 4096 in 4096..=1GiB"
    return None


def compute_layout(sq_capacity: int, cq_capacity: int, slot_count: int, slot_size: int) -> Layout:
    bad = check_params(sq_capacity, cq_capacity, slot_count, slot_size)
    if bad is not None:
        raise ValueError(bad)
    gq_capacity = max(MIN_RING_CAPACITY, 1 << (slot_count - 1).bit_length())
    sq_offset = HEADER_SIZE
    cq_offset = sq_offset + ring_region_size(sq_capacity, ENTRY_SIZE)
    gq_offset = cq_offset + ring_region_size(cq_capacity, ENTRY_SIZE)
    slot_offset = gq_offset + ring_region_size(gq_capacity, GRANT_ENTRY_SIZE)
    return Layout(sq_capacity, cq_capacity, slot_count, slot_size, sq_offset, cq_offset, gq_offset,
                  gq_capacity, slot_offset, slot_offset + slot_count * slot_size)


_HDR = struct.Struct("<QIIQQIIQIIQQIIQII")  # the static fields, offsets 0..96


def encode_header(layout: Layout, generation: int, out: bytearray | memoryview) -> None:
    """Writes the static header fields (SPEC §3) into out."""
    _HDR.pack_into(out, 0, MAGIC, VERSION, HEADER_SIZE, layout.segment_size, generation, ENTRY_SIZE,
                   GRANT_ENTRY_SIZE, layout.sq_offset, layout.sq_capacity, layout.cq_capacity,
                   layout.cq_offset, layout.gq_offset, layout.gq_capacity, layout.slot_count,
                   layout.slot_offset, layout.slot_size, 0)


class HeaderMismatch(Exception):
    """The first header field that is not what this side computes."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"segment header field `{field}` {detail}")
        self.field = field


def decode_header(hdr: bytes | memoryview) -> tuple[Layout, int]:
    """Parses the static header and cross-checks every offset against the computed layout."""
    if len(hdr) < HEADER_SIZE:
        raise HeaderMismatch("header_size", "is cut short")
    (magic, version, header_size, segment_size, generation, entry_size, grant_entry_size, sq_offset,
     sq_capacity, cq_capacity, cq_offset, gq_offset, gq_capacity, slot_count, slot_offset, slot_size,
     flags) = _HDR.unpack_from(hdr, 0)
    mismatch = "does not match the layout"

    def expect(ok: bool, field: str, detail: str = mismatch) -> None:
        if not ok:
            raise HeaderMismatch(field, detail)

    expect(magic == MAGIC, "magic", 'is not "SHMPIPE\\0"')
    expect(version == VERSION, "version", f"is {version}, this client speaks {VERSION}")
    expect(header_size == HEADER_SIZE, "header_size")
    expect(entry_size == ENTRY_SIZE, "entry_size")
    expect(grant_entry_size == GRANT_ENTRY_SIZE, "grant_entry_size")
    expect(flags == 0, "flags")
    bad = check_params(sq_capacity, cq_capacity, slot_count, slot_size)
    if bad is not None:
        raise HeaderMismatch("params", bad)
    lay = compute_layout(sq_capacity, cq_capacity, slot_count, slot_size)
    expect(segment_size == lay.segment_size, "segment_size")
    expect(sq_offset == lay.sq_offset, "sq_offset")
    expect(cq_offset == lay.cq_offset, "cq_offset")
    expect(gq_offset == lay.gq_offset, "gq_offset")
    expect(gq_capacity == lay.gq_capacity, "gq_capacity")
    expect(slot_offset == lay.slot_offset, "slot_offset")
    expect(generation != 0, "generation", "is zero")
    return lay, generation


SUBMISSION = struct.Struct("<QBBHIIIII4Q")
COMPLETION = struct.Struct("<QiIIIQ3QQ")
GRANT = struct.Struct("<II")


@dataclass
class Submission:
    """An SQ entry exactly as on the wire (SPEC §5.1); nothing validated."""

    request_id: int
    opcode: int
    flags: int = 0
    reserved0: int = 0
    slot_id: int = NO_SLOT
    slot_gen: int = 0
    offset: int = 0
    length: int = 0
    reserved1: int = 0
    args: tuple = (0, 0, 0, 0)

    def encode(self) -> bytes:
        return SUBMISSION.pack(self.request_id, self.opcode, self.flags, self.reserved0, self.slot_id,
                               self.slot_gen, self.offset, self.length, self.reserved1, *self.args)

    @classmethod
    def decode(cls, b: bytes | memoryview, at: int = 0) -> "Submission":
        f = SUBMISSION.unpack_from(b, at)
        return cls(*f[:9], args=tuple(f[9:]))


def validate_submission(s: Submission) -> str | None:
    """The slot-independent checks of SPEC §9 in the sidecar's order: the wire code, or None."""
    if s.opcode not in _KNOWN_OPS:
        return "SHMPIPE_E_UNKNOWN_OPCODE"
    if s.reserved0 or s.reserved1 or s.flags & ~SQ_RELEASE_SLOT:
        return "SHMPIPE_E_MALFORMED"
    if s.opcode in _NEEDS_SLOT:
        if s.slot_id == NO_SLOT:
            return "SHMPIPE_E_INVALID_SLOT"
    elif s.slot_id != NO_SLOT or s.slot_gen or s.offset or s.length or s.flags:
        return "SHMPIPE_E_MALFORMED"
    if s.opcode == OP_DELAY and s.args[0] > MAX_DELAY_US:
        return "SHMPIPE_E_MALFORMED"
    return None


@dataclass
class Completion:
    """A CQ entry (SPEC §5.2)."""

    request_id: int
    status: int
    flags: int
    slot_id: int
    slot_gen: int
    result: int
    aux: tuple
    reserved: int = 0

    def encode(self) -> bytes:
        return COMPLETION.pack(self.request_id, self.status, self.flags, self.slot_id, self.slot_gen,
                               self.result, *self.aux, self.reserved)

    @classmethod
    def decode(cls, b: bytes | memoryview, at: int = 0) -> "Completion":
        f = COMPLETION.unpack_from(b, at)
        return cls(*f[:6], aux=tuple(f[6:9]), reserved=f[9])

    def problem(self) -> str | None:
        """The agent's check (SPEC §5.2, §9): reserved zero, known flags, status ≤ 0."""
        if self.reserved:
            return "reserved word is not zero"
        if self.flags & ~(CQ_MORE | CQ_SLOT):
            return f"unknown flag bits {self.flags:#x}"
        if self.status > 0:
            return f"positive status {self.status}"
        return None


def encode_grant(slot_id: int, slot_gen: int) -> bytes:
    return GRANT.pack(slot_id, slot_gen)


def decode_grant(b: bytes | memoryview, at: int = 0) -> tuple[int, int]:
    return GRANT.unpack_from(b, at)


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as the sidecar computes it. Pure Python: for checks, not bulk data."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC_TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
