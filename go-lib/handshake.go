package shmpipe

// The control-socket handshake (SPEC §10): hello → welcome with [segment_fd, sq_doorbell,
// cq_doorbell] by SCM_RIGHTS → map the segment fd (never a name) and check it → mapped.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

type welcome struct {
	Type        string `json:"type"`
	Version     int    `json:"version"`
	Session     uint64 `json:"session"`
	Segment     string `json:"segment"`
	SegmentSize uint64 `json:"segment_size"`
	Generation  string `json:"generation"`
	Code        string `json:"code"`
	Message     string `json:"message"`
	Layout      struct {
		protocol.Layout
	} `json:"layout"`
	Limits struct {
		MaxInFlight uint32  `json:"max_in_flight"`
		ReadReserve *uint32 `json:"read_reserve"`
		PartSize    *uint64 `json:"part_size"`
	} `json:"limits"`
}

// established is what a successful handshake hands the client.
type established struct {
	conn        *net.UnixConn
	mem         []byte
	layout      protocol.Layout
	generation  uint64
	session     uint64
	segment     string
	maxInFlight uint32
	readReserve uint32
	partSize    uint64
	sqFd, cqFd  int
	sq          *producer
	cq, gq      *consumer
}

func handshakeErr(code Code, format string, a ...any) *Error {
	return &Error{Code: code, Op: "connect", Msg: "handshake: " + fmt.Sprintf(format, a...)}
}

func frame(msg any) ([]byte, error) {
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if len(body) > protocol.MaxFrame {
		return nil, invalidArg("connect", "control frame too large")
	}
	out := make([]byte, 4+len(body))
	binary.LittleEndian.PutUint32(out, uint32(len(body)))
	copy(out[4:], body)
	return out, nil
}

// readExact reads exactly len(p) bytes, collecting any file descriptors that ride along.
func readExact(conn *net.UnixConn, p []byte, fds *[]int) error {
	oob := make([]byte, unix.CmsgSpace(3*4))
	for len(p) > 0 {
		n, oobn, flags, _, err := conn.ReadMsgUnix(p, oob)
		if oobn > 0 {
			msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr == nil {
				for _, m := range msgs {
					if got, err := unix.ParseUnixRights(&m); err == nil {
						*fds = append(*fds, got...)
					}
				}
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return handshakeErr(CodeHandshake, "more file descriptors than expected")
		}
		if err != nil {
			return &Error{Code: CodeDisconnected, Op: "connect", Msg: "handshake: reading the reply", Err: err}
		}
		if n == 0 {
			return handshakeErr(CodeDisconnected, "the sidecar closed the connection")
		}
		p = p[n:]
	}
	return nil
}

func handshake(ctx context.Context, o *Options) (est *established, err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", o.SocketPath)
	if err != nil {
		code := CodeDisconnected
		if os.IsPermission(err) {
			code = CodePermission
		}
		return nil, &Error{Code: code, Op: "connect", Msg: o.SocketPath, Err: err}
	}
	conn := c.(*net.UnixConn)
	var fds []int
	var mem []byte
	defer func() {
		if err == nil {
			return
		}
		conn.Close()
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		if mem != nil {
			unix.Munmap(mem)
		}
	}()
	deadline := time.Now().Add(o.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	hello := map[string]any{"type": "hello", "version": protocol.Version, "client": o.ClientName}
	for k, v := range map[string]uint32{"slot_count": o.SlotCount, "slot_size": o.SlotSize, "sq_capacity": o.SQCapacity, "cq_capacity": o.CQCapacity} {
		if v != 0 {
			hello[k] = v
		}
	}
	f, err := frame(hello)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(f); err != nil {
		return nil, &Error{Code: CodeDisconnected, Op: "connect", Msg: "handshake: sending hello", Err: err}
	}
	// Exactly the reply frame: whatever follows (a `draining` notice) is the control loop's.
	var lenBuf [4]byte
	if err := readExact(conn, lenBuf[:], &fds); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(lenBuf[:])
	if n == 0 || n > protocol.MaxFrame {
		return nil, handshakeErr(CodeHandshake, "reply frame length %d out of range", n)
	}
	body := make([]byte, n)
	if err := readExact(conn, body, &fds); err != nil {
		return nil, err
	}
	var w welcome
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, handshakeErr(CodeHandshake, "the reply is not a JSON object: %v", err)
	}
	if w.Type == "error" {
		code := Code(w.Code)
		switch code {
		case CodePermission, CodeVersion, CodeBusy, CodeHandshake:
		default:
			code = CodeHandshake
		}
		return nil, &Error{Code: code, Op: "connect", Msg: "the sidecar refused the connection: " + w.Message}
	}
	if w.Type != "welcome" {
		return nil, handshakeErr(CodeHandshake, "unexpected reply type %q", w.Type)
	}
	if w.Version != protocol.Version {
		return nil, handshakeErr(CodeVersion, "the sidecar speaks version %d, this client %d", w.Version, protocol.Version)
	}
	if len(fds) != 3 {
		return nil, handshakeErr(CodeHandshake, "expected 3 file descriptors, got %d", len(fds))
	}
	if w.Limits.MaxInFlight == 0 {
		return nil, handshakeErr(CodeHandshake, "welcome without limits.max_in_flight")
	}
	gen, err := strconv.ParseUint(w.Generation, 10, 64)
	if err != nil {
		return nil, handshakeErr(CodeHandshake, "generation %q is not a u64", w.Generation)
	}
	// The layout this side computes from the negotiated parameters must equal the welcome's …
	want, err := protocol.ComputeLayout(w.Layout.Params)
	if err != nil {
		return nil, handshakeErr(CodeHandshake, "bad layout parameters: %v", err)
	}
	got := w.Layout.Layout
	got.SegmentSize = w.SegmentSize
	if got != want {
		return nil, handshakeErr(CodeHandshake, "welcome layout %+v disagrees with SPEC §4 (%+v)", got, want)
	}
	// … and the header the sidecar wrote into the segment (SPEC §10 step 3). A mapping longer
	// than the file would fault past its end: refuse it.
	var st unix.Stat_t
	if err := unix.Fstat(fds[0], &st); err != nil {
		return nil, handshakeErr(CodeHandshake, "fstat of the segment: %v", err)
	}
	if st.Size < 0 || uint64(st.Size) < want.SegmentSize {
		return nil, handshakeErr(CodeHandshake, "the segment file (%d bytes) is smaller than segment_size %d", st.Size, want.SegmentSize)
	}
	// The header and rings are faulted in once here, not on the hot path (LIMITS.md); the slots
	// are not: a slot's pages are mapped when first used, so memory follows the slots actually
	// cycled through (the sidecar gives idle ones back) rather than the whole pool (issue #15).
	mem, err = unix.Mmap(fds[0], 0, int(want.SegmentSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		mem = nil
		return nil, handshakeErr(CodeHandshake, "mmap: %v", err)
	}
	populateRead(mem[:want.SlotOffset])
	unix.Close(fds[0]) // the mapping keeps the memory
	fds[0] = -1
	// READY is stored last with Release; this SeqCst load acquires the whole layout (SPEC §3).
	if s := word32(mem, protocol.HdrState).Load(); s != protocol.StateReady {
		return nil, handshakeErr(CodeHandshake, "segment state is %d, not READY", s)
	}
	hl, hgen, err := protocol.DecodeHeader(mem[:protocol.HeaderSize])
	if err != nil {
		code := CodeHandshake
		if hm, ok := err.(*protocol.HeaderMismatch); ok && hm.Field == "version" {
			code = CodeVersion
		}
		return nil, handshakeErr(code, "%v", err)
	}
	if hl != want {
		return nil, handshakeErr(CodeHandshake, "segment header layout disagrees with the welcome")
	}
	if hgen != gen {
		return nil, handshakeErr(CodeHandshake, "segment generation disagrees with the welcome")
	}
	est = &established{conn: conn, mem: mem, layout: want, generation: gen, session: w.Session, segment: w.Segment,
		maxInFlight: min(w.Limits.MaxInFlight, want.CQCapacity), partSize: 8 << 20, sqFd: fds[1], cqFd: fds[2]}
	if w.Limits.ReadReserve != nil {
		est.readReserve = min(*w.Limits.ReadReserve, want.SlotCount)
	}
	if w.Limits.PartSize != nil && *w.Limits.PartSize > 0 {
		est.partSize = *w.Limits.PartSize
	}
	if est.sq, err = newProducer(mem, "SQ", want.SQOffset, want.SQCapacity, protocol.EntrySize); err == nil {
		if est.cq, err = newConsumer(mem, "CQ", want.CQOffset, want.CQCapacity, protocol.EntrySize); err == nil {
			est.gq, err = newConsumer(mem, "GQ", want.GQOffset, want.GQCapacity, protocol.GrantEntrySize)
		}
	}
	if err != nil {
		return nil, &Error{Code: CodeProtocol, Op: "connect", Msg: err.Error()}
	}
	mapped, _ := frame(map[string]string{"type": "mapped"})
	if _, err := conn.Write(mapped); err != nil {
		return nil, &Error{Code: CodeDisconnected, Op: "connect", Msg: "handshake: sending mapped", Err: err}
	}
	conn.SetDeadline(time.Time{})
	return est, nil
}

// populateRead maps the pages of b into this process (MADV_POPULATE_READ, Linux 5.14; on older
// kernels a read of each page does the same).
func populateRead(b []byte) {
	if len(b) == 0 || unix.Madvise(b, unix.MADV_POPULATE_READ) == nil {
		return
	}
	var sink byte
	for i := 0; i < len(b); i += protocol.PageSize {
		sink ^= b[i]
	}
	_ = sink
}
