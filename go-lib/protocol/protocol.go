// Package protocol is the shmpipe shared-memory protocol as shm-protocol/SPEC.md defines it:
// constants, header and ring offsets, the layout arithmetic, and reference encoders and decoders
// for the header and the 64-byte entries. It does no I/O and touches no shared memory; the
// client package (one directory up) writes the same offsets straight into the mapped segment.
//
// Everything here is checked byte for byte against shm-protocol/vectors/vectors.json by
// vectors_test.go, like the Rust crate and the TypeScript client.
package protocol

import (
	"fmt"
	"math/bits"
)

// Constants of SPEC §2.
const (
	// Magic is "SHMPIPE\0" read as a little-endian u64.
	Magic          uint64 = 0x0045_5049_504D_4853
	Version               = 1
	HeaderSize            = 4096
	PageSize              = 4096
	CacheLine             = 128
	EntrySize             = 64
	GrantEntrySize        = 8
	RingHeaderSize        = 256
	NoSlot         uint32 = 0xFFFF_FFFF
	MinRingCap            = 2
	MaxRingCap            = 65536
	MaxSlotCount          = 65535
	MaxSlotSize           = 1 << 30
	// MaxDelayUS bounds DELAY's arg0 (60 s).
	MaxDelayUS = 60_000_000
	// MaxFrame is the largest control-socket frame body (SPEC §10).
	MaxFrame = 64 * 1024
	// MaxKeyLen is the longest object key in UTF-8 bytes (SPEC §7.2).
	MaxKeyLen = 1024
	// RangeToEnd is OPEN_READ's arg1 for "to the end of the object".
	RangeToEnd uint64 = ^uint64(0)
)

// Header field offsets (SPEC §3).
const (
	HdrMagic             = 0
	HdrVersion           = 8
	HdrHeaderSize        = 12
	HdrSegmentSize       = 16
	HdrGeneration        = 24
	HdrEntrySize         = 32
	HdrGrantEntrySize    = 36
	HdrSQOffset          = 40
	HdrSQCapacity        = 48
	HdrCQCapacity        = 52
	HdrCQOffset          = 56
	HdrGQOffset          = 64
	HdrGQCapacity        = 72
	HdrSlotCount         = 76
	HdrSlotOffset        = 80
	HdrSlotSize          = 88
	HdrFlags             = 92
	HdrStaticEnd         = 96
	HdrState             = 128
	HdrSidecarHeartbeat  = 256
	HdrSidecarNeedWakeup = 384
	HdrAgentNeedWakeup   = 512
)

// HeaderOffsets names every header offset, as the vectors file does.
var HeaderOffsets = map[string]int{
	"magic": HdrMagic, "version": HdrVersion, "header_size": HdrHeaderSize,
	"segment_size": HdrSegmentSize, "generation": HdrGeneration, "entry_size": HdrEntrySize,
	"grant_entry_size": HdrGrantEntrySize, "sq_offset": HdrSQOffset, "sq_capacity": HdrSQCapacity,
	"cq_capacity": HdrCQCapacity, "cq_offset": HdrCQOffset, "gq_offset": HdrGQOffset,
	"gq_capacity": HdrGQCapacity, "slot_count": HdrSlotCount, "slot_offset": HdrSlotOffset,
	"slot_size": HdrSlotSize, "flags": HdrFlags, "static_end": HdrStaticEnd, "state": HdrState,
	"sidecar_heartbeat": HdrSidecarHeartbeat, "sidecar_need_wakeup": HdrSidecarNeedWakeup,
	"agent_need_wakeup": HdrAgentNeedWakeup,
}

// Offsets inside a ring region (SPEC §4).
const (
	RingTail    = 0
	RingHead    = 128
	RingEntries = RingHeaderSize
)

// RingOffsets names the ring offsets, as the vectors file does.
var RingOffsets = map[string]int{"tail": RingTail, "head": RingHead, "entries": RingEntries}

// Header state values (SPEC §3).
const (
	StateInit     = 0
	StateReady    = 1
	StateDraining = 2
	StateClosed   = 3
)

// Submission and completion flag bits (SPEC §5).
const (
	SQReleaseSlot = 1
	CQMore        = 1
	CQSlot        = 2
)

// Opcode is a submission opcode (SPEC §7).
type Opcode = uint8

// Opcodes of SPEC §7.1–§7.3.
const (
	OpNop          Opcode = 0
	OpEcho         Opcode = 1
	OpSlotRelease  Opcode = 2
	OpStats        Opcode = 3
	OpDelay        Opcode = 4
	OpPut          Opcode = 16
	OpOpenWrite    Opcode = 17
	OpWrite        Opcode = 18
	OpCommit       Opcode = 19
	OpAbort        Opcode = 20
	OpOpenRead     Opcode = 21
	OpStat         Opcode = 22
	OpList         Opcode = 23
	OpDelete       Opcode = 24
	OpRepoInit     Opcode = 64
	OpRepoOpen     Opcode = 65
	OpBackupBegin  Opcode = 66
	OpFileOpen     Opcode = 67
	OpFileWrite    Opcode = 68
	OpFileFinish   Opcode = 69
	OpFilePut      Opcode = 70
	OpAddEntries   Opcode = 71
	OpBackupCommit Opcode = 72
	OpBackupAbort  Opcode = 73
	OpClose        Opcode = 74
	OpSnapshots    Opcode = 75
	OpEntriesOpen  Opcode = 76
	OpEntriesNext  Opcode = 77
	OpContentRead  Opcode = 78
	OpCheck        Opcode = 79
	OpJobStart     Opcode = 80
	OpJobNext      Opcode = 81
)

// Opcodes names every opcode, as the vectors file does.
var Opcodes = map[string]Opcode{
	"NOP": OpNop, "ECHO": OpEcho, "SLOT_RELEASE": OpSlotRelease, "STATS": OpStats, "DELAY": OpDelay,
	"PUT": OpPut, "OPEN_WRITE": OpOpenWrite, "WRITE": OpWrite, "COMMIT": OpCommit, "ABORT": OpAbort,
	"OPEN_READ": OpOpenRead, "STAT": OpStat, "LIST": OpList, "DELETE": OpDelete,
	"REPO_INIT": OpRepoInit, "REPO_OPEN": OpRepoOpen, "BACKUP_BEGIN": OpBackupBegin,
	"FILE_OPEN": OpFileOpen, "FILE_WRITE": OpFileWrite, "FILE_FINISH": OpFileFinish,
	"FILE_PUT": OpFilePut, "ADD_ENTRIES": OpAddEntries, "BACKUP_COMMIT": OpBackupCommit,
	"BACKUP_ABORT": OpBackupAbort, "CLOSE": OpClose, "SNAPSHOTS": OpSnapshots,
	"ENTRIES_OPEN": OpEntriesOpen, "ENTRIES_NEXT": OpEntriesNext, "CONTENT_READ": OpContentRead,
	"CHECK": OpCheck, "JOB_START": OpJobStart, "JOB_NEXT": OpJobNext,
}

// WireCodes maps the SPEC §8 code names to their completion status.
var WireCodes = map[string]int32{
	"SHMPIPE_E_UNKNOWN_OPCODE":   -1,
	"SHMPIPE_E_MALFORMED":        -2,
	"SHMPIPE_E_INVALID_SLOT":     -3,
	"SHMPIPE_E_STALE_SLOT":       -4,
	"SHMPIPE_E_OUT_OF_RANGE":     -5,
	"SHMPIPE_E_SHUTTING_DOWN":    -6,
	"SHMPIPE_E_CANCELLED":        -7,
	"SHMPIPE_E_BUSY":             -8,
	"SHMPIPE_E_NOT_FOUND":        -9,
	"SHMPIPE_E_STORE":            -10,
	"SHMPIPE_E_INTEGRITY":        -11,
	"SHMPIPE_E_INTERNAL":         -12,
	"SHMPIPE_E_INVALID_HANDLE":   -13,
	"SHMPIPE_E_WRONG_PASSWORD":   -14,
	"SHMPIPE_E_NOT_A_REPOSITORY": -15,
	"SHMPIPE_E_REPO_EXISTS":      -16,
	"SHMPIPE_E_LOCKED":           -17,
	"SHMPIPE_E_REPO_VERSION":     -18,
	"SHMPIPE_E_REPO_LIMIT":       -25,
	"SHMPIPE_E_LOCK_LOST":        -26,
	"SHMPIPE_E_REFUSED":          -27,
}

var codeByStatus = func() map[int32]string {
	m := make(map[int32]string, len(WireCodes))
	for k, v := range WireCodes {
		m[v] = k
	}
	return m
}()

// CodeForStatus is the wire code name of a negative status, or "" when unknown.
func CodeForStatus(status int32) string { return codeByStatus[status] }

// Params are the negotiated session parameters.
type Params struct {
	SQCapacity uint32 `json:"sq_capacity"`
	CQCapacity uint32 `json:"cq_capacity"`
	SlotCount  uint32 `json:"slot_count"`
	SlotSize   uint32 `json:"slot_size"`
}

// Layout is the segment's region offsets derived from Params (SPEC §1, §4).
type Layout struct {
	Params
	SQOffset    uint64 `json:"sq_offset"`
	CQOffset    uint64 `json:"cq_offset"`
	GQOffset    uint64 `json:"gq_offset"`
	GQCapacity  uint32 `json:"gq_capacity"`
	SlotOffset  uint64 `json:"slot_offset"`
	SegmentSize uint64 `json:"segment_size"`
}

func isPow2(n uint32) bool { return n != 0 && n&(n-1) == 0 }

func roundUpPage(n uint64) uint64 { return (n + PageSize - 1) / PageSize * PageSize }

// RingRegionSize is the bytes a ring region occupies: header lines plus entries, page-rounded.
func RingRegionSize(capacity uint32, entrySize uint32) uint64 {
	return roundUpPage(RingHeaderSize + uint64(capacity)*uint64(entrySize))
}

// Check says why p is unacceptable, or returns nil.
func (p Params) Check() error {
	for _, c := range []struct {
		name string
		v    uint32
	}{{"sq_capacity", p.SQCapacity}, {"cq_capacity", p.CQCapacity}} {
		if !isPow2(c.v) || c.v < MinRingCap || c.v > MaxRingCap {
			return fmt.Errorf("%s %d is not a power of two in 2..=65536", c.name, c.v)
		}
	}
	if p.SlotCount < 1 || p.SlotCount > MaxSlotCount {
		return fmt.Errorf("slot_count %d is not in 1..=65535", p.SlotCount)
	}
	if p.SlotSize < PageSize || p.SlotSize > MaxSlotSize || p.SlotSize%PageSize != 0 {
		return fmt.Errorf("slot_size %d is not a multiple of 4096 in 4096..=1GiB", p.SlotSize)
	}
	return nil
}

// ComputeLayout derives the region offsets; both sides compute the same.
func ComputeLayout(p Params) (Layout, error) {
	if err := p.Check(); err != nil {
		return Layout{}, err
	}
	gq := uint32(MinRingCap)
	if p.SlotCount > MinRingCap {
		gq = 1 << bits.Len32(p.SlotCount-1)
	}
	l := Layout{Params: p, GQCapacity: gq}
	l.SQOffset = HeaderSize
	l.CQOffset = l.SQOffset + RingRegionSize(p.SQCapacity, EntrySize)
	l.GQOffset = l.CQOffset + RingRegionSize(p.CQCapacity, EntrySize)
	l.SlotOffset = l.GQOffset + RingRegionSize(gq, GrantEntrySize)
	l.SegmentSize = l.SlotOffset + uint64(p.SlotCount)*uint64(p.SlotSize)
	return l, nil
}
