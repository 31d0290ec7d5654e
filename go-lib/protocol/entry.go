package protocol

import (
	"encoding/binary"
	"fmt"
)

var le = binary.LittleEndian

// EncodeHeader writes the static header fields of SPEC §3 into out (at least 96 bytes).
func EncodeHeader(l Layout, generation uint64, out []byte) {
	le.PutUint64(out[HdrMagic:], Magic)
	le.PutUint32(out[HdrVersion:], Version)
	le.PutUint32(out[HdrHeaderSize:], HeaderSize)
	le.PutUint64(out[HdrSegmentSize:], l.SegmentSize)
	le.PutUint64(out[HdrGeneration:], generation)
	le.PutUint32(out[HdrEntrySize:], EntrySize)
	le.PutUint32(out[HdrGrantEntrySize:], GrantEntrySize)
	le.PutUint64(out[HdrSQOffset:], l.SQOffset)
	le.PutUint32(out[HdrSQCapacity:], l.SQCapacity)
	le.PutUint32(out[HdrCQCapacity:], l.CQCapacity)
	le.PutUint64(out[HdrCQOffset:], l.CQOffset)
	le.PutUint64(out[HdrGQOffset:], l.GQOffset)
	le.PutUint32(out[HdrGQCapacity:], l.GQCapacity)
	le.PutUint32(out[HdrSlotCount:], l.SlotCount)
	le.PutUint64(out[HdrSlotOffset:], l.SlotOffset)
	le.PutUint32(out[HdrSlotSize:], l.SlotSize)
	le.PutUint32(out[HdrFlags:], 0)
}

// HeaderMismatch names the first header field that is not what this side computes.
type HeaderMismatch struct {
	Field  string
	Detail string
}

func (e *HeaderMismatch) Error() string {
	return fmt.Sprintf("segment header field `%s` %s", e.Field, e.Detail)
}

// DecodeHeader parses the static header and cross-checks every offset against the layout
// computed from the header's own parameters.
func DecodeHeader(h []byte) (Layout, uint64, error) {
	bad := func(field, detail string) (Layout, uint64, error) {
		return Layout{}, 0, &HeaderMismatch{field, detail}
	}
	if len(h) < HeaderSize {
		return bad("header_size", "is cut short")
	}
	u32 := func(at int) uint32 { return le.Uint32(h[at:]) }
	u64 := func(at int) uint64 { return le.Uint64(h[at:]) }
	const mismatch = "does not match the layout"
	switch {
	case u64(HdrMagic) != Magic:
		return bad("magic", `is not "SHMPIPE\0"`)
	case u32(HdrVersion) != Version:
		return bad("version", fmt.Sprintf("is %d, this client speaks %d", u32(HdrVersion), Version))
	case u32(HdrHeaderSize) != HeaderSize:
		return bad("header_size", mismatch)
	case u32(HdrEntrySize) != EntrySize:
		return bad("entry_size", mismatch)
	case u32(HdrGrantEntrySize) != GrantEntrySize:
		return bad("grant_entry_size", mismatch)
	case u32(HdrFlags) != 0:
		return bad("flags", mismatch)
	}
	p := Params{SQCapacity: u32(HdrSQCapacity), CQCapacity: u32(HdrCQCapacity), SlotCount: u32(HdrSlotCount), SlotSize: u32(HdrSlotSize)}
	l, err := ComputeLayout(p)
	if err != nil {
		return bad("params", err.Error())
	}
	switch {
	case u64(HdrSegmentSize) != l.SegmentSize:
		return bad("segment_size", mismatch)
	case u64(HdrSQOffset) != l.SQOffset:
		return bad("sq_offset", mismatch)
	case u64(HdrCQOffset) != l.CQOffset:
		return bad("cq_offset", mismatch)
	case u64(HdrGQOffset) != l.GQOffset:
		return bad("gq_offset", mismatch)
	case u32(HdrGQCapacity) != l.GQCapacity:
		return bad("gq_capacity", mismatch)
	case u64(HdrSlotOffset) != l.SlotOffset:
		return bad("slot_offset", mismatch)
	}
	g := u64(HdrGeneration)
	if g == 0 {
		return bad("generation", "is zero")
	}
	return l, g, nil
}

// Submission is an SQ entry exactly as on the wire (SPEC §5.1); nothing validated.
type Submission struct {
	RequestID uint64
	Opcode    Opcode
	Flags     uint8
	Reserved0 uint16
	SlotID    uint32
	SlotGen   uint32
	Offset    uint32
	Length    uint32
	Reserved1 uint32
	Args      [4]uint64
}

// Encode writes the 64-byte entry into out.
func (s *Submission) Encode(out []byte) {
	_ = out[EntrySize-1]
	le.PutUint64(out[0:], s.RequestID)
	out[8] = s.Opcode
	out[9] = s.Flags
	le.PutUint16(out[10:], s.Reserved0)
	le.PutUint32(out[12:], s.SlotID)
	le.PutUint32(out[16:], s.SlotGen)
	le.PutUint32(out[20:], s.Offset)
	le.PutUint32(out[24:], s.Length)
	le.PutUint32(out[28:], s.Reserved1)
	for i, a := range s.Args {
		le.PutUint64(out[32+8*i:], a)
	}
}

// DecodeSubmission reads a 64-byte SQ entry.
func DecodeSubmission(b []byte) Submission {
	_ = b[EntrySize-1]
	s := Submission{
		RequestID: le.Uint64(b[0:]), Opcode: b[8], Flags: b[9], Reserved0: le.Uint16(b[10:]),
		SlotID: le.Uint32(b[12:]), SlotGen: le.Uint32(b[16:]), Offset: le.Uint32(b[20:]),
		Length: le.Uint32(b[24:]), Reserved1: le.Uint32(b[28:]),
	}
	for i := range s.Args {
		s.Args[i] = le.Uint64(b[32+8*i:])
	}
	return s
}

var needsSlot = map[Opcode]bool{
	OpEcho: true, OpSlotRelease: true, OpStats: true, OpPut: true, OpOpenWrite: true,
	OpWrite: true, OpOpenRead: true, OpStat: true, OpList: true, OpDelete: true,
	OpRepoInit: true, OpRepoOpen: true, OpBackupBegin: true, OpFileWrite: true,
	OpFileFinish: true, OpFilePut: true, OpAddEntries: true, OpBackupCommit: true,
	OpSnapshots: true, OpEntriesOpen: true, OpEntriesNext: true, OpContentRead: true,
	OpCheck: true, OpJobStart: true, OpJobNext: true,
}

// NeedsSlot reports whether op requires a slot (SPEC §7).
func NeedsSlot(op Opcode) bool { return needsSlot[op] }

func knownOp(op Opcode) bool {
	for _, v := range Opcodes {
		if v == op {
			return true
		}
	}
	return false
}

// ValidateSubmission runs the slot-independent checks of SPEC §9 in the sidecar's order and
// returns the wire code name, or "" when the entry is acceptable.
func ValidateSubmission(s Submission) string {
	if !knownOp(s.Opcode) {
		return "SHMPIPE_E_UNKNOWN_OPCODE"
	}
	if s.Reserved0 != 0 || s.Reserved1 != 0 || s.Flags&^SQReleaseSlot != 0 {
		return "SHMPIPE_E_MALFORMED"
	}
	if NeedsSlot(s.Opcode) {
		if s.SlotID == NoSlot {
			return "SHMPIPE_E_INVALID_SLOT"
		}
	} else if s.SlotID != NoSlot || s.SlotGen != 0 || s.Offset != 0 || s.Length != 0 || s.Flags != 0 {
		return "SHMPIPE_E_MALFORMED"
	}
	if s.Opcode == OpDelay && s.Args[0] > MaxDelayUS {
		return "SHMPIPE_E_MALFORMED"
	}
	return ""
}

// Completion is a CQ entry (SPEC §5.2).
type Completion struct {
	RequestID uint64
	Status    int32
	Flags     uint32
	SlotID    uint32
	SlotGen   uint32
	Result    uint64
	Aux       [3]uint64
	Reserved  uint64
}

// Encode writes the 64-byte entry into out.
func (c *Completion) Encode(out []byte) {
	_ = out[EntrySize-1]
	le.PutUint64(out[0:], c.RequestID)
	le.PutUint32(out[8:], uint32(c.Status))
	le.PutUint32(out[12:], c.Flags)
	le.PutUint32(out[16:], c.SlotID)
	le.PutUint32(out[20:], c.SlotGen)
	le.PutUint64(out[24:], c.Result)
	for i, a := range c.Aux {
		le.PutUint64(out[32+8*i:], a)
	}
	le.PutUint64(out[56:], c.Reserved)
}

// DecodeCompletion reads a 64-byte CQ entry.
func DecodeCompletion(b []byte) Completion {
	_ = b[EntrySize-1]
	return Completion{
		RequestID: le.Uint64(b[0:]), Status: int32(le.Uint32(b[8:])), Flags: le.Uint32(b[12:]),
		SlotID: le.Uint32(b[16:]), SlotGen: le.Uint32(b[20:]), Result: le.Uint64(b[24:]),
		Aux: [3]uint64{le.Uint64(b[32:]), le.Uint64(b[40:]), le.Uint64(b[48:])}, Reserved: le.Uint64(b[56:]),
	}
}

// Problem is the agent's check of a completion (SPEC §5.2, §9), or "" when it is well formed.
func (c *Completion) Problem() string {
	switch {
	case c.Reserved != 0:
		return "reserved word is not zero"
	case c.Flags&^(CQMore|CQSlot) != 0:
		return fmt.Sprintf("unknown flag bits %#x", c.Flags)
	case c.Status > 0:
		return fmt.Sprintf("positive status %d", c.Status)
	}
	return ""
}

// Grant is a GQ entry (SPEC §5.3).
type Grant struct {
	SlotID  uint32 `json:"slot_id"`
	SlotGen uint32 `json:"slot_gen"`
}

// Encode writes the 8-byte entry into out.
func (g Grant) Encode(out []byte) {
	le.PutUint32(out[0:], g.SlotID)
	le.PutUint32(out[4:], g.SlotGen)
}

// DecodeGrant reads an 8-byte GQ entry.
func DecodeGrant(b []byte) Grant { return Grant{le.Uint32(b[0:]), le.Uint32(b[4:])} }
