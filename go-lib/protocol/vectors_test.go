package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// The shared vectors of SPEC §11, read from the repository (go-lib sits beside shm-protocol).
type vectorFile struct {
	Version       int               `json:"version"`
	MagicHex      string            `json:"magic_hex"`
	HeaderOffsets map[string]int    `json:"header_offsets"`
	RingOffsets   map[string]int    `json:"ring_offsets"`
	Opcodes       map[string]Opcode `json:"opcodes"`
	ErrorCodes    map[string]int32  `json:"error_codes"`
	Header        struct {
		Params     Params `json:"params"`
		Generation string `json:"generation"`
		Layout     Layout `json:"layout"`
		Hex        string `json:"hex"`
	} `json:"header"`
	Submissions []struct {
		Name   string `json:"name"`
		Fields struct {
			RequestID string    `json:"request_id"`
			Opcode    Opcode    `json:"opcode"`
			Flags     uint8     `json:"flags"`
			Reserved0 uint16    `json:"reserved0"`
			SlotID    uint32    `json:"slot_id"`
			SlotGen   uint32    `json:"slot_gen"`
			Offset    uint32    `json:"offset"`
			Length    uint32    `json:"length"`
			Reserved1 uint32    `json:"reserved1"`
			Args      [4]string `json:"args"`
		} `json:"fields"`
		Hex   string  `json:"hex"`
		Error *string `json:"error"`
	} `json:"submissions"`
	Completions []struct {
		Name   string `json:"name"`
		Fields struct {
			RequestID string    `json:"request_id"`
			Status    int32     `json:"status"`
			Flags     uint32    `json:"flags"`
			SlotID    uint32    `json:"slot_id"`
			SlotGen   uint32    `json:"slot_gen"`
			Result    string    `json:"result"`
			Aux       [3]string `json:"aux"`
		} `json:"fields"`
		Hex string `json:"hex"`
	} `json:"completions"`
	Grants []struct {
		Fields Grant  `json:"fields"`
		Hex    string `json:"hex"`
	} `json:"grants"`
	CRC32C []struct {
		ASCII *string `json:"ascii"`
		Hex   *string `json:"hex"`
		CRC   uint32  `json:"crc"`
	} `json:"crc32c"`
}

func loadVectors(t *testing.T) *vectorFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "shm-protocol", "vectors", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func u64(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConstantsMatchVectors(t *testing.T) {
	v := loadVectors(t)
	if v.Version != Version {
		t.Fatalf("version %d, client %d", v.Version, Version)
	}
	if m := unhex(t, v.MagicHex); string(m) != "SHMPIPE\x00" || le.Uint64(m) != Magic {
		t.Fatalf("magic %q", m)
	}
	if !reflect.DeepEqual(v.HeaderOffsets, HeaderOffsets) {
		t.Fatalf("header offsets:\nvectors %v\nclient  %v", v.HeaderOffsets, HeaderOffsets)
	}
	if !reflect.DeepEqual(v.RingOffsets, RingOffsets) {
		t.Fatalf("ring offsets: %v vs %v", v.RingOffsets, RingOffsets)
	}
	// Every opcode and wire code this client knows has the SPEC's number. The SPEC may define
	// more (ops this client does not offer, codes added in reserved ranges): those are listed.
	for name, op := range Opcodes {
		if got, ok := v.Opcodes[name]; !ok || got != op {
			t.Fatalf("opcode %s is %d here, %d (present: %v) in the vectors", name, op, got, ok)
		}
	}
	for name, code := range WireCodes {
		if got, ok := v.ErrorCodes[name]; !ok || got != code {
			t.Fatalf("error code %s is %d here, %d (present: %v) in the vectors", name, code, got, ok)
		}
	}
	for name := range v.Opcodes {
		if _, ok := Opcodes[name]; !ok {
			t.Logf("the SPEC defines opcode %s, which this client does not know", name)
		}
	}
	for name := range v.ErrorCodes {
		if _, ok := WireCodes[name]; !ok {
			t.Logf("the SPEC defines error code %s, which this client reports as SHMPIPE_E_PROTOCOL", name)
		}
	}
	for _, op := range Opcodes {
		if op >= 64 && op < 128 && !NeedsSlot(op) && op != OpFileOpen && op != OpBackupAbort && op != OpClose {
			t.Fatalf("opcode %d: slot rule unknown", op)
		}
	}
}

func TestReferenceHeader(t *testing.T) {
	v := loadVectors(t)
	raw := unhex(t, v.Header.Hex)
	page := make([]byte, HeaderSize)
	copy(page, raw)
	l, gen, err := DecodeHeader(page)
	if err != nil {
		t.Fatal(err)
	}
	want := v.Header.Layout
	want.Params = v.Header.Params
	if l != want {
		t.Fatalf("layout %+v, want %+v", l, want)
	}
	if gen != u64(t, v.Header.Generation) {
		t.Fatalf("generation %d", gen)
	}
	if c, _ := ComputeLayout(v.Header.Params); c != l {
		t.Fatalf("ComputeLayout %+v", c)
	}
	out := make([]byte, len(raw))
	EncodeHeader(l, gen, out)
	if !bytes.Equal(out, raw) {
		t.Fatalf("re-encoded header differs:\n%x\n%x", out, raw)
	}
	for _, field := range []string{"magic", "version", "sq_offset", "slot_offset", "segment_size"} {
		bad := append([]byte(nil), page...)
		bad[HeaderOffsets[field]] ^= 1
		_, _, err := DecodeHeader(bad)
		hm, ok := err.(*HeaderMismatch)
		if !ok || hm.Field != field {
			t.Fatalf("tampered %s: got %v", field, err)
		}
	}
}

func TestSubmissionVectors(t *testing.T) {
	for _, sv := range loadVectors(t).Submissions {
		t.Run(sv.Name, func(t *testing.T) {
			if sv.Error == nil && !knownOp(sv.Fields.Opcode) {
				t.Skipf("opcode %d is not one this client offers", sv.Fields.Opcode)
			}
			raw := unhex(t, sv.Hex)
			s := DecodeSubmission(raw)
			f := sv.Fields
			want := Submission{RequestID: u64(t, f.RequestID), Opcode: f.Opcode, Flags: f.Flags, Reserved0: f.Reserved0,
				SlotID: f.SlotID, SlotGen: f.SlotGen, Offset: f.Offset, Length: f.Length, Reserved1: f.Reserved1}
			for i, a := range f.Args {
				want.Args[i] = u64(t, a)
			}
			if s != want {
				t.Fatalf("decoded %+v, want %+v", s, want)
			}
			out := make([]byte, EntrySize)
			s.Encode(out)
			if !bytes.Equal(out, raw) {
				t.Fatalf("re-encoded %x", out)
			}
			wantErr := ""
			if sv.Error != nil {
				wantErr = *sv.Error
			}
			if got := ValidateSubmission(s); got != wantErr {
				t.Fatalf("validates to %q, want %q", got, wantErr)
			}
		})
	}
}

func TestCompletionAndGrantVectors(t *testing.T) {
	v := loadVectors(t)
	for _, cv := range v.Completions {
		raw := unhex(t, cv.Hex)
		c := DecodeCompletion(raw)
		f := cv.Fields
		want := Completion{RequestID: u64(t, f.RequestID), Status: f.Status, Flags: f.Flags, SlotID: f.SlotID,
			SlotGen: f.SlotGen, Result: u64(t, f.Result)}
		for i, a := range f.Aux {
			want.Aux[i] = u64(t, a)
		}
		if c != want {
			t.Fatalf("%s: decoded %+v, want %+v", cv.Name, c, want)
		}
		if p := c.Problem(); p != "" {
			t.Fatalf("%s: %s", cv.Name, p)
		}
		out := make([]byte, EntrySize)
		c.Encode(out)
		if !bytes.Equal(out, raw) {
			t.Fatalf("%s: re-encoded %x", cv.Name, out)
		}
	}
	for i, gv := range v.Grants {
		raw := unhex(t, gv.Hex)
		g := DecodeGrant(raw)
		if g != gv.Fields {
			t.Fatalf("grant %d: %+v", i, g)
		}
		out := make([]byte, GrantEntrySize)
		g.Encode(out)
		if !bytes.Equal(out, raw) {
			t.Fatalf("grant %d: re-encoded %x", i, out)
		}
	}
	if len(v.Completions) == 0 || len(v.Grants) == 0 || len(v.Submissions) == 0 {
		t.Fatal("the vectors file lists no entries")
	}
}

func TestCRC32CVectors(t *testing.T) {
	table := crc32.MakeTable(crc32.Castagnoli)
	v := loadVectors(t)
	if len(v.CRC32C) == 0 {
		t.Fatal("no CRC-32C vectors")
	}
	for _, c := range v.CRC32C {
		var data []byte
		if c.ASCII != nil {
			data = []byte(*c.ASCII)
		} else {
			data = unhex(t, *c.Hex)
		}
		if got := crc32.Checksum(data, table); got != c.CRC {
			t.Fatalf("crc32c(%x) = %d, want %d", data, got, c.CRC)
		}
	}
}

func TestLayoutArithmetic(t *testing.T) {
	l, err := ComputeLayout(Params{SQCapacity: 1024, CQCapacity: 2048, SlotCount: 100, SlotSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for name, off := range map[string]uint64{"sq": l.SQOffset, "cq": l.CQOffset, "gq": l.GQOffset, "slot": l.SlotOffset, "segment": l.SegmentSize} {
		if off%PageSize != 0 {
			t.Fatalf("%s offset %d is not page aligned", name, off)
		}
	}
	if l.GQCapacity != 128 || l.CQOffset-l.SQOffset != RingRegionSize(1024, EntrySize) {
		t.Fatalf("layout %+v", l)
	}
	if _, err := ComputeLayout(Params{SQCapacity: 3, CQCapacity: 2, SlotCount: 1, SlotSize: 4096}); err == nil {
		t.Fatal("capacity 3 accepted")
	}
	if l1, _ := ComputeLayout(Params{SQCapacity: 2, CQCapacity: 2, SlotCount: 1, SlotSize: 4096}); l1.GQCapacity != 2 {
		t.Fatalf("gq capacity for one slot: %d", l1.GQCapacity)
	}
}
