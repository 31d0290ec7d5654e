package shmpipe

import (
	"context"
	"fmt"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// Slot is a page-aligned region of the shared segment granted to this client (SPEC §5.3, §9).
// Bytes() views the shared memory itself: what is written there is what the sidecar reads, with
// no copy (read a file straight into it). A slot is held until Release, or until an operation
// that consumes it (Put, Writer.WriteSlot) is accepted. The view must not be used after that, nor
// after the client is closed.
type Slot struct {
	c   *Client
	id  uint32
	gen uint32
	buf []byte
	// Guarded by c.mu:
	owned           bool
	busy            int  // requests in flight that name this slot
	releaseDeferred bool // Release was called while busy
}

// Bytes is the slot's memory, SlotSize bytes long.
func (s *Slot) Bytes() []byte { return s.buf }

// ID is the slot's index in the segment.
func (s *Slot) ID() uint32 { return s.id }

// Generation is the generation the slot was granted with.
func (s *Slot) Generation() uint32 { return s.gen }

// Len is the slot's capacity in bytes.
func (s *Slot) Len() int { return len(s.buf) }

// Release gives the slot back to the sidecar. Idempotent; while an operation still uses the slot,
// the release is sent when that operation completes.
func (s *Slot) Release() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(s)
}

func (c *Client) slotBytes(id uint32) []byte {
	off := c.layout.SlotOffset + uint64(id)*uint64(c.layout.SlotSize)
	end := off + uint64(c.layout.SlotSize)
	return c.mem[off:end:end]
}

func (c *Client) newSlot(id, gen uint32) *Slot {
	return &Slot{c: c, id: id, gen: gen, buf: c.slotBytes(id), owned: true}
}

func (c *Client) releaseLocked(s *Slot) {
	if !s.owned {
		return
	}
	s.owned = false
	if c.failure != nil {
		return
	}
	if s.busy > 0 {
		s.releaseDeferred = true
		return
	}
	c.sendRelease(s)
}

func (c *Client) sendRelease(s *Slot) {
	r := c.newRequest(protocol.OpSlotRelease, "release", s, 0, 0)
	c.startLocked(r) // a failure here is the session's, reported to every other call
}

// checkSlot says why s cannot be used in an op of this client, or returns nil. Needs c.mu.
func (c *Client) checkSlotLocked(s *Slot, op string) *Error {
	if s == nil || s.c != c {
		return invalidArg(op, "the slot must come from this client's Alloc")
	}
	if !s.owned {
		return invalidArg(op, "slot %d was released or consumed", s.id)
	}
	return nil
}

func checkRange(s *Slot, offset, length int, op string) *Error {
	if offset < 0 || length < 0 || offset+length > len(s.buf) {
		return invalidArg(op, "offset %d and length %d must satisfy 0 ≤ offset, 0 ≤ length, offset+length ≤ %d", offset, length, len(s.buf))
	}
	return nil
}

// allocWaiter is an Alloc waiting for a grant; cancelled is guarded by c.mu.
type allocWaiter struct {
	ch        chan *Slot
	cancelled bool
}

// Alloc returns a free slot, waiting (FIFO) for a grant when none is free. No round trip when one
// is.
func (c *Client) Alloc(ctx context.Context) (*Slot, error) {
	c.mu.Lock()
	if c.failure != nil {
		defer c.mu.Unlock()
		return nil, c.failedErr("alloc")
	}
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		c.mu.Unlock()
		return s, nil
	}
	if c.queue.len()+c.allocs.len() >= c.opts.MaxQueued {
		c.mu.Unlock()
		return nil, &Error{Code: CodeQueueFull, Op: "alloc", Msg: fmt.Sprintf("%d calls are already waiting (MaxQueued)", c.opts.MaxQueued)}
	}
	w := &allocWaiter{ch: make(chan *Slot, 1)}
	c.allocs.push(w)
	c.mu.Unlock()
	select {
	case s, ok := <-w.ch:
		if ok {
			return s, nil
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, c.failedErr("alloc")
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		w.cancelled = true // the reactor skips it from now on …
		select {
		case s, ok := <-w.ch: // … but it may have handed one over already
			if ok {
				c.giveSlot(s)
			}
		default:
		}
		return nil, &Error{Code: CodeCancelled, Op: "alloc", Msg: "the caller's context ended", Err: ctx.Err()}
	}
}

// TryAlloc returns a free slot, or nil when none is granted right now.
func (c *Client) TryAlloc() (*Slot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failure != nil {
		return nil, c.failedErr("alloc")
	}
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s, nil
	}
	return nil, nil
}
