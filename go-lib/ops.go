package shmpipe

// The core ops of SPEC §7.1: NOP, ECHO, DELAY, STATS; each blocking (with a context) and, for
// pipelining many calls from one goroutine, as an *Async call.

import (
	"context"
	"encoding/json"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// Result is what a completed call returned: the completion's result and aux words.
type Result struct {
	Value uint64
	Aux   [3]uint64
}

// Call is a request in flight, started by an *Async method. Wait for it with Wait or Done.
type Call struct {
	c *Client
	r *request
}

// Done is closed when the call completed (or the session ended).
func (call *Call) Done() <-chan struct{} { return call.r.done }

// Wait waits for the call; if ctx ends first the call is abandoned (its completion is handled,
// unseen) and the error has code SHMPIPE_E_CANCELLED.
func (call *Call) Wait(ctx context.Context) (Result, error) {
	comp, err := call.c.wait(ctx, call.r)
	return Result{comp.Result, comp.Aux}, err
}

func (c *Client) startCall(r *request) (*Call, error) {
	if err := c.start(r); err != nil {
		return nil, err
	}
	return &Call{c, r}, nil
}

// NopAsync starts a NOP.
func (c *Client) NopAsync() (*Call, error) {
	return c.startCall(c.newRequest(protocol.OpNop, "nop", nil, 0, 0))
}

// Nop is a round trip that does nothing.
func (c *Client) Nop(ctx context.Context) error {
	_, err := c.call(ctx, c.newRequest(protocol.OpNop, "nop", nil, 0, 0))
	return err
}

func (c *Client) delayRequest(us uint32) (*request, error) {
	if us > protocol.MaxDelayUS {
		return nil, invalidArg("delay", "%d µs is more than %d", us, protocol.MaxDelayUS)
	}
	r := c.newRequest(protocol.OpDelay, "delay", nil, 0, 0)
	r.args[0] = uint64(us)
	return r, nil
}

// DelayAsync starts a DELAY: the sidecar completes it after us microseconds (≤ 60 s).
func (c *Client) DelayAsync(us uint32) (*Call, error) {
	r, err := c.delayRequest(us)
	if err != nil {
		return nil, err
	}
	return c.startCall(r)
}

// Delay has the sidecar wait us microseconds (≤ 60 s) before completing.
func (c *Client) Delay(ctx context.Context, us uint32) error {
	r, err := c.delayRequest(us)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, r)
	return err
}

func (c *Client) echoRequest(s *Slot, offset, length int) (*request, error) {
	if s == nil {
		return nil, invalidArg("echo", "no slot")
	}
	if err := checkRange(s, offset, length, "echo"); err != nil {
		return nil, err
	}
	return c.newRequest(protocol.OpEcho, "echo", s, uint32(offset), uint32(length)), nil
}

// EchoAsync starts an ECHO of length bytes at offset in s.
func (c *Client) EchoAsync(s *Slot, offset, length int) (*Call, error) {
	r, err := c.echoRequest(s, offset, length)
	if err != nil {
		return nil, err
	}
	if err := c.startChecked(r); err != nil {
		return nil, err
	}
	return &Call{c, r}, nil
}

// Echo has the sidecar checksum length bytes at offset in s, in place; returns the CRC-32C.
func (c *Client) Echo(ctx context.Context, s *Slot, offset, length int) (uint32, error) {
	r, err := c.echoRequest(s, offset, length)
	if err != nil {
		return 0, err
	}
	comp, err := c.slotCall(ctx, r)
	return uint32(comp.Aux[0]), err
}

// Stats is the sidecar's counters for this session and globally (the STATS op), as JSON.
func (c *Client) Stats(ctx context.Context) (map[string]any, error) {
	s, err := c.Alloc(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Release()
	comp, err := c.call(ctx, c.newRequest(protocol.OpStats, "stats", s, 0, uint32(s.Len())))
	if err != nil {
		return nil, err
	}
	if comp.Result > uint64(s.Len()) {
		return nil, &Error{Code: CodeProtocol, Op: "stats", Msg: "the result exceeds the slot"}
	}
	var out map[string]any
	if err := json.Unmarshal(s.buf[:comp.Result], &out); err != nil {
		return nil, &Error{Code: CodeProtocol, Op: "stats", Msg: "invalid JSON", Err: err}
	}
	return out, nil
}
