// Package shmpipe is a pure-Go agent for the shmpipe sidecar: it speaks the shared-memory
// protocol of shm-protocol/SPEC.md directly (no cgo, no native library), so buffers are slots of
// the sidecar's segment handed out as []byte views, and requests are RPC over lock-free rings.
//
// Threading: a Client runs two goroutines, whatever the number of calls in flight. The reactor
// drains the CQ and GQ and wakes the callers; when there is nothing to do it arms
// agent_need_wakeup (SPEC §6) and parks in Go's netpoller on the cq_doorbell eventfd, so it holds
// no OS thread while idle. The control loop parks on the control socket and turns its EOF into
// SHMPIPE_E_DISCONNECTED for every pending call. A call is written into the SQ by the calling
// goroutine itself; it then waits on a channel (or, with the *Async methods, not at all), so
// 10,000 calls in flight cost 10,000 small structs, not goroutines or threads.
package shmpipe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// Options of Connect. Zero values take the defaults shown.
type Options struct {
	// SocketPath is the sidecar's control socket (required).
	SocketPath string
	// SlotCount (64), SlotSize (1 MiB), SQCapacity and CQCapacity (1024) are asked for in the
	// hello; the sidecar clamps them to its limits.
	SlotCount  uint32
	SlotSize   uint32
	SQCapacity uint32
	CQCapacity uint32
	// ClientName is shown in the sidecar's logs (default "go-PID").
	ClientName string
	// MaxQueued bounds calls waiting for ring space or a slot (default 1,000,000); past it, calls
	// fail with SHMPIPE_E_QUEUE_FULL.
	MaxQueued int
	// ConnectTimeout bounds the handshake (default 5 s; the context may end it sooner).
	ConnectTimeout time.Duration
	// UnresponsiveAfter: while calls are pending and the sidecar's heartbeat (SPEC §3) does not
	// move for this long, the session ends with SHMPIPE_E_UNRESPONSIVE (default 10 s; < 0: never).
	UnresponsiveAfter time.Duration
}

func (o *Options) check() error {
	if o.SocketPath == "" {
		return invalidArg("connect", "SocketPath is required")
	}
	if len(o.SocketPath) > 107 {
		return invalidArg("connect", "SocketPath must be at most 107 bytes (a Unix socket path limit)")
	}
	if o.SlotCount == 0 {
		o.SlotCount = 64
	}
	if o.SlotSize == 0 {
		o.SlotSize = 1 << 20
	}
	if o.SQCapacity == 0 {
		o.SQCapacity = 1024
	}
	if o.CQCapacity == 0 {
		o.CQCapacity = 1024
	}
	if err := (protocol.Params{SQCapacity: o.SQCapacity, CQCapacity: o.CQCapacity, SlotCount: o.SlotCount, SlotSize: o.SlotSize}).Check(); err != nil {
		return invalidArg("connect", "%v", err)
	}
	if o.ClientName == "" {
		o.ClientName = fmt.Sprintf("go-%d", os.Getpid())
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 1_000_000
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.UnresponsiveAfter == 0 {
		o.UnresponsiveAfter = 10 * time.Second
	}
	return nil
}

// Layout is the negotiated session, as the welcome said and the segment header confirmed.
type Layout struct {
	protocol.Layout
	Session    uint64
	Generation uint64
	Segment    string
	// MaxInFlight is the request units this client keeps in flight at most:
	// min(the sidecar's limit, CQ capacity), so the CQ never overflows.
	MaxInFlight uint32
	// ReadReserve is the slots the sidecar keeps out of the GQ for read streams (SPEC §9).
	ReadReserve uint32
	// GrantWindow is the slots Alloc can get while no read stream runs.
	GrantWindow uint32
	// PartSize is the store's multipart part size in bytes.
	PartSize uint64
}

// request states
const (
	stQueued = iota
	stInFlight
	stDone
)

// request is one call: waiting in the FIFO, then in the SQ, then done.
type request struct {
	id       uint64
	op       protocol.Opcode
	name     string
	slot     *Slot
	offset   uint32
	length   uint32
	args     [4]uint64
	weight   uint32
	consumes bool // the op consumes its slot (SPEC §7.2)
	wantMsg  bool // a failure's slot carries the sidecar's message
	stream   *streamSink
	state    int
	// abandoned: the caller stopped waiting (context); the completion is handled unseen.
	abandoned bool
	done      chan struct{}
	comp      protocol.Completion
	err       error
}

// Client is one session with the sidecar. Its methods are safe for concurrent use.
type Client struct {
	layout Layout
	opts   Options
	mem    []byte
	conn   *net.UnixConn
	cqFile *os.File // the cq_doorbell, pollable: the reactor parks on it in the netpoller
	sqFd   int

	sidecarWake *atomicU32
	agentWake   *atomicU32
	heartbeat   *atomicU64

	mu          sync.Mutex
	sq          *producer
	cq, gq      *consumer
	pending     []*request
	pendingMask uint64
	nextID      uint64
	inFlight    uint32
	queue       fifo[*request]
	allocs      fifo[*allocWaiter]
	free        []*Slot
	failure     *Error
	draining    bool
	streams     map[*streamSink]struct{}

	reactorDone chan struct{}
	controlDone chan struct{}
	closeOnce   sync.Once
}

// Connect performs the handshake with the sidecar at o.SocketPath and starts the session.
func Connect(ctx context.Context, o Options) (*Client, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	est, err := handshake(ctx, &o)
	if err != nil {
		return nil, err
	}
	l := est.layout
	c := &Client{
		layout: Layout{Layout: l, Session: est.session, Generation: est.generation, Segment: est.segment,
			MaxInFlight: est.maxInFlight, ReadReserve: est.readReserve, GrantWindow: l.SlotCount - est.readReserve,
			PartSize: est.partSize},
		opts: o, mem: est.mem, conn: est.conn, sqFd: est.sqFd,
		sq: est.sq, cq: est.cq, gq: est.gq,
		sidecarWake: word32(est.mem, protocol.HdrSidecarNeedWakeup),
		agentWake:   word32(est.mem, protocol.HdrAgentNeedWakeup),
		heartbeat:   word64(est.mem, protocol.HdrSidecarHeartbeat),
		nextID:      1,
		streams:     map[*streamSink]struct{}{},
		reactorDone: make(chan struct{}),
		controlDone: make(chan struct{}),
	}
	size := uint64(2)
	for size < 2*uint64(c.layout.MaxInFlight) {
		size <<= 1
	}
	c.pending = make([]*request, size)
	c.pendingMask = size - 1
	// The eventfd is non-blocking (the sidecar made it so), so os.NewFile registers it with the
	// netpoller: a Read parks the goroutine, not an OS thread.
	c.cqFile = os.NewFile(uintptr(est.cqFd), "shmpipe-cq-doorbell")
	go c.reactor()
	go c.controlLoop()
	return c, nil
}

// Layout is the negotiated session layout.
func (c *Client) Layout() Layout { return c.layout }

// Draining reports whether the sidecar announced a graceful shutdown.
func (c *Client) Draining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// Err is the error that ended the session, or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failure == nil {
		return nil
	}
	return c.failure
}

// Close ends the session: pending and waiting calls fail with SHMPIPE_E_CLOSED, the sidecar
// reclaims the session's slots, and the segment is unmapped. Slot views must not be used after
// Close (they would fault). Close is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.fail(&Error{Code: CodeClosed, Msg: "the client was closed"})
		<-c.reactorDone
		<-c.controlDone
		unix.Munmap(c.mem)
	})
	return nil
}

// failedErr is a fresh copy of the error that ended the session (callers may wrap it).
func (c *Client) failedErr(op string) *Error {
	f := c.failure
	return &Error{Code: f.Code, Op: op, Msg: f.Msg, Err: f.Err}
}

// fail ends the session because of err (disconnect, protocol violation, Close).
func (c *Client) fail(err *Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(err)
}

func (c *Client) failLocked(err *Error) {
	if c.failure != nil {
		return
	}
	c.failure = err
	c.cqFile.Close() // wakes the reactor out of its Read
	unix.Close(c.sqFd)
	c.conn.Close()
	fresh := func() error { return &Error{Code: err.Code, Msg: err.Msg, Err: err.Err} }
	for i, r := range c.pending {
		if r != nil {
			c.pending[i] = nil
			r.finish(fresh())
		}
	}
	c.inFlight = 0
	for r, ok := c.queue.pop(); ok; r, ok = c.queue.pop() {
		if r.state == stQueued {
			r.finish(fresh())
		}
	}
	for w, ok := c.allocs.pop(); ok; w, ok = c.allocs.pop() {
		close(w.ch)
	}
	for s := range c.streams {
		s.end(fresh())
	}
	for _, s := range c.free {
		s.owned = false
	}
	c.free = nil
}

func (r *request) finish(err error) {
	r.state = stDone
	r.err = err
	close(r.done)
}

// ---- submission ------------------------------------------------------------------------------

func (c *Client) newRequest(op protocol.Opcode, name string, slot *Slot, offset, length uint32) *request {
	return &request{op: op, name: name, slot: slot, offset: offset, length: length, weight: 1, done: make(chan struct{})}
}

// start puts r into the SQ now, or into the FIFO behind earlier calls. The slot (if any) must be
// checked by the caller; it is counted busy until r's last completion.
func (c *Client) start(r *request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startLocked(r)
}

func (c *Client) startLocked(r *request) error {
	if c.failure != nil {
		return c.failedErr(r.name)
	}
	if r.weight > c.layout.MaxInFlight {
		r.weight = c.layout.MaxInFlight
	}
	if r.slot != nil {
		r.slot.busy++
	}
	if c.queue.len() == 0 {
		ok, err := c.push(r)
		if err != nil {
			c.failLocked(err)
			return c.failedErr(r.name)
		}
		if ok {
			c.publish()
			return nil
		}
	}
	if c.queue.len()+c.allocs.len() >= c.opts.MaxQueued && r.op != protocol.OpSlotRelease {
		if r.slot != nil {
			c.unbusy(r.slot)
		}
		return &Error{Code: CodeQueueFull, Op: r.name, Msg: fmt.Sprintf("%d calls are already waiting for ring space (MaxQueued)", c.opts.MaxQueued)}
	}
	r.state = stQueued
	c.queue.push(r)
	return nil
}

// push writes r into the SQ (unpublished) if ring space and the in-flight budget allow.
func (c *Client) push(r *request) (bool, *Error) {
	if c.inFlight+r.weight > c.layout.MaxInFlight {
		return false, nil
	}
	e, err := c.sq.reserve()
	if err != nil {
		return false, &Error{Code: CodeProtocol, Msg: err.Error()}
	}
	if e == nil {
		return false, nil
	}
	id := c.nextID
	for c.pending[id&c.pendingMask] != nil {
		id++
	}
	c.nextID = id + 1
	r.id = id
	s := protocol.Submission{RequestID: id, Opcode: r.op, SlotID: protocol.NoSlot, Offset: r.offset, Length: r.length, Args: r.args}
	if r.slot != nil {
		s.SlotID, s.SlotGen = r.slot.id, r.slot.gen
	}
	s.Encode(e)
	c.sq.commit()
	c.pending[id&c.pendingMask] = r
	c.inFlight += r.weight
	r.state = stInFlight
	return true, nil
}

var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

// publish makes the written entries visible and rings the sidecar if it sleeps (SPEC §6 P1–P3).
func (c *Client) publish() {
	// P1 + P2: the SeqCst store of tail; P3: the SeqCst load of need_wakeup.
	if c.sq.publish() && c.sidecarWake.Load() != 0 {
		if _, err := unix.Write(c.sqFd, one); err != nil && err != unix.EAGAIN {
			c.failLocked(&Error{Code: CodeDisconnected, Msg: "cannot ring the sq doorbell", Err: err})
		}
	}
}

// pumpLocked moves waiting calls into the SQ while space and budget allow; reports whether a
// call still waits for SQ space (not for budget, which completions release).
func (c *Client) pumpLocked() bool {
	for {
		r, ok := c.queue.peek()
		if !ok {
			break
		}
		if r.state != stQueued { // cancelled while waiting
			c.queue.pop()
			continue
		}
		pushed, err := c.push(r)
		if err != nil {
			c.failLocked(err)
			return false
		}
		if !pushed {
			c.publish()
			return c.inFlight+r.weight <= c.layout.MaxInFlight
		}
		c.queue.pop()
	}
	c.publish()
	return false
}

// wait waits for r's completion or ctx. On ctx, a queued r is withdrawn; an r in flight is
// abandoned: its completion is still handled (slot bookkeeping), unseen.
func (c *Client) wait(ctx context.Context, r *request) (protocol.Completion, error) {
	select {
	case <-r.done:
		return r.comp, r.err
	default:
	}
	select {
	case <-r.done:
		return r.comp, r.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch r.state {
	case stDone:
		return r.comp, r.err
	case stQueued:
		r.state = stDone
		if r.slot != nil {
			c.unbusy(r.slot)
		}
	default:
		r.abandoned = true
	}
	return protocol.Completion{}, &Error{Code: CodeCancelled, Op: r.name, Msg: "the caller's context ended", Err: ctx.Err()}
}

// call is start + wait.
func (c *Client) call(ctx context.Context, r *request) (protocol.Completion, error) {
	if err := ctx.Err(); err != nil {
		return protocol.Completion{}, &Error{Code: CodeCancelled, Op: r.name, Err: err}
	}
	if err := c.start(r); err != nil {
		return protocol.Completion{}, err
	}
	return c.wait(ctx, r)
}

// ---- the reactor -----------------------------------------------------------------------------

// reactor consumes the CQ and GQ, then arms agent_need_wakeup, re-checks, and sleeps on the
// cq_doorbell (SPEC §6 C1–C6). Only it reads completions and grants.
func (c *Client) reactor() {
	defer close(c.reactorDone)
	var buf [8]byte
	lastBeat, beatSeen := c.heartbeat.Load(), time.Now()
	for {
		c.mu.Lock()
		if c.failure != nil {
			c.mu.Unlock()
			return
		}
		c.agentWake.Store(0) // C6: awake
		n, err := c.drainLocked()
		sqBlocked := c.queue.len() > 0 && c.pumpLocked()
		if err == nil && n == 0 {
			// C1: SeqCst store (XCHG), which is also the C2 fence; C3: re-check both tails.
			c.agentWake.Store(1)
			var more bool
			if more, err = c.cq.hasNew(); err == nil && !more {
				more, err = c.gq.hasNew()
			}
			if more {
				n = 1 // C4: work arrived meanwhile: consume instead of sleeping
			}
		}
		if err != nil {
			c.failLocked(&Error{Code: CodeProtocol, Msg: err.Error()})
		}
		waiting := c.inFlight > 0
		c.mu.Unlock()
		if n > 0 {
			continue
		}
		// C5: sleep on the doorbell. Wake on a timer when calls wait for SQ space (its head moves
		// without a doorbell), and every UnresponsiveAfter/4 to watch the heartbeat (a timer in
		// the reactor, not on the call path: a call made while it sleeps is watched from the
		// next tick on).
		var deadline time.Time
		switch {
		case sqBlocked:
			deadline = time.Now().Add(time.Millisecond)
		case c.opts.UnresponsiveAfter > 0:
			deadline = time.Now().Add(c.opts.UnresponsiveAfter / 4)
		}
		c.cqFile.SetReadDeadline(deadline)
		_, rerr := c.cqFile.Read(buf[:])
		if rerr != nil && !os.IsTimeout(rerr) {
			c.fail(&Error{Code: CodeDisconnected, Msg: "the cq doorbell failed", Err: rerr})
			return
		}
		if beat := c.heartbeat.Load(); beat != lastBeat || !waiting {
			lastBeat, beatSeen = beat, time.Now()
		} else if c.opts.UnresponsiveAfter > 0 && time.Since(beatSeen) > c.opts.UnresponsiveAfter {
			c.fail(&Error{Code: CodeUnresponsive, Msg: fmt.Sprintf("calls are pending and the sidecar's heartbeat has not moved for %v", c.opts.UnresponsiveAfter)})
			return
		}
	}
}

// drainLocked handles every completion and grant published so far.
func (c *Client) drainLocked() (uint64, error) {
	total := uint64(0)
	n, err := c.cq.available()
	if err != nil {
		return 0, err
	}
	for i := uint64(0); i < n; i++ {
		if err := c.complete(protocol.DecodeCompletion(c.cq.at(i))); err != nil {
			return 0, err
		}
	}
	c.cq.advance(n)
	c.cq.release()
	total += n
	if n, err = c.gq.available(); err != nil {
		return 0, err
	}
	for i := uint64(0); i < n; i++ {
		g := protocol.DecodeGrant(c.gq.at(i))
		if g.SlotID >= c.layout.SlotCount {
			return 0, fmt.Errorf("grant names slot %d beyond slot_count", g.SlotID)
		}
		c.giveSlot(c.newSlot(g.SlotID, g.SlotGen))
	}
	c.gq.advance(n)
	c.gq.release()
	return total + n, nil
}

// giveSlot hands a granted slot to the oldest Alloc waiting, or to the free list.
func (c *Client) giveSlot(s *Slot) {
	for {
		w, ok := c.allocs.pop()
		if !ok {
			break
		}
		if !w.cancelled {
			w.ch <- s // buffered, and each waiter gets one slot: never blocks
			return
		}
	}
	c.free = append(c.free, s)
}

func (c *Client) complete(comp protocol.Completion) error {
	if p := comp.Problem(); p != "" {
		return fmt.Errorf("malformed completion for request %d: %s", comp.RequestID, p)
	}
	r := c.pending[comp.RequestID&c.pendingMask]
	if r == nil || r.id != comp.RequestID {
		return fmt.Errorf("completion for unknown request %d", comp.RequestID)
	}
	hasSlot := comp.Flags&protocol.CQSlot != 0
	if hasSlot && comp.SlotID >= c.layout.SlotCount {
		return fmt.Errorf("completion names slot %d beyond slot_count", comp.SlotID)
	}
	if comp.Flags&protocol.CQMore != 0 {
		// A stream chunk: a filled slot granted to us (SPEC §7.2 OPEN_READ).
		if hasSlot {
			s := c.newSlot(comp.SlotID, comp.SlotGen)
			if r.stream == nil || !r.stream.chunk(s, comp.Result, comp.Aux[0], comp.Aux[1]) {
				c.releaseLocked(s)
			}
		}
		return nil
	}
	c.pending[comp.RequestID&c.pendingMask] = nil
	c.inFlight -= r.weight
	if s := r.slot; s != nil {
		if r.consumes && !hasSlot {
			s.busy--
			s.owned = false // consumed: the sidecar's now
			s.releaseDeferred = false
		} else {
			c.unbusy(s)
		}
	}
	r.comp = comp
	var err error
	if comp.Status != 0 {
		detail := ""
		if r.wantMsg && r.slot != nil && hasSlot && comp.Result > 0 && comp.Result <= uint64(c.layout.SlotSize) {
			detail = string(c.slotBytes(r.slot.id)[:comp.Result])
		}
		err = errorFromStatus(comp.Status, r.name, detail)
	}
	if r.abandoned && err == nil && r.op == protocol.OpOpenWrite {
		// Nobody will commit or abort this writer: abort it so nothing of it remains.
		ab := c.newRequest(protocol.OpAbort, "abort", nil, 0, 0)
		ab.args[0] = comp.Result
		c.startLocked(ab)
	}
	if r.stream != nil {
		r.stream.finish(comp, err)
	}
	r.finish(err)
	return nil
}

// unbusy ends one request's use of s, sending a Release deferred until then.
func (c *Client) unbusy(s *Slot) {
	s.busy--
	if s.busy == 0 && s.releaseDeferred {
		s.releaseDeferred = false
		c.sendRelease(s)
	}
}

// ---- the control socket ----------------------------------------------------------------------

type controlMsg struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// controlLoop reads control frames until EOF, which means the sidecar is gone.
func (c *Client) controlLoop() {
	defer close(c.controlDone)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			c.fail(&Error{Code: CodeDisconnected, Msg: "the sidecar is gone (EOF on the control socket)", Err: err})
			return
		}
		n := uint32(hdr[0]) | uint32(hdr[1])<<8 | uint32(hdr[2])<<16 | uint32(hdr[3])<<24
		if n > protocol.MaxFrame {
			c.fail(&Error{Code: CodeProtocol, Msg: fmt.Sprintf("control frame of %d bytes exceeds %d", n, protocol.MaxFrame)})
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c.conn, body); err != nil {
			c.fail(&Error{Code: CodeDisconnected, Msg: "the sidecar is gone (EOF on the control socket)", Err: err})
			return
		}
		var m controlMsg
		if err := json.Unmarshal(body, &m); err != nil {
			c.fail(&Error{Code: CodeProtocol, Msg: "control frame is not JSON"})
			return
		}
		switch m.Type {
		case "draining":
			c.mu.Lock()
			c.draining = true
			c.mu.Unlock()
		case "error":
			c.fail(&Error{Code: CodeDisconnected, Msg: fmt.Sprintf("the sidecar ended the session: %s %s", m.Code, m.Message)})
			return
		}
		// Unknown frame types are ignored: later versions may add notices.
	}
}
