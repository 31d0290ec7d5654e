package shmpipe

// Read streams (SPEC §7.2 OPEN_READ): the sidecar fills slots with an object's bytes and hands
// each over; the consumer gives it back when done (backpressure: at most ReadAhead slots are
// out). ReadStream yields the chunks themselves (Next), and adapts them to io.Reader (one copy,
// into the caller's buffer) and io.WriterTo (no copy: each chunk is written from its slot).

import (
	"context"
	"io"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// ReadOptions of OpenRead. The zero value reads the whole object with a read-ahead of 4.
type ReadOptions struct {
	// Start and End (exclusive) select a range; End 0 means to the end of the object.
	Start, End uint64
	// ReadAhead is the slots the stream may hold at once (1..=64; 0: 4).
	ReadAhead int
}

// Chunk is Data (at the start of Slot) at Offset in the object.
type Chunk struct {
	Slot   *Slot
	Data   []byte
	Offset uint64
}

// ReadResult is how a stream ended.
type ReadResult struct {
	Size uint64
	// Verified: the whole object was read and its checksum matched (false for ranges).
	Verified bool
}

// streamSink receives a stream's completions in the reactor; guarded by c.mu.
type streamSink struct {
	c         *Client
	chunks    fifo[Chunk]
	notify    chan struct{}
	handle    uint64
	cancelled bool
	ended     bool
	err       error
	result    ReadResult
}

func (s *streamSink) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// chunk takes a chunk slot; false means "release it" (the stream was cancelled).
func (s *streamSink) chunk(slot *Slot, length, offset, handle uint64) bool {
	if s.handle == 0 {
		s.handle = handle
		if s.cancelled {
			s.c.sendAbort(handle)
		}
	}
	if s.cancelled || s.ended || length > uint64(slot.Len()) {
		return false
	}
	s.chunks.push(Chunk{Slot: slot, Data: slot.buf[:length], Offset: offset})
	s.wake()
	return true
}

func (s *streamSink) finish(comp protocol.Completion, err error) {
	if err == nil {
		s.result = ReadResult{Size: comp.Result, Verified: comp.Aux[0] == 1}
	}
	s.end(err)
}

func (s *streamSink) end(err error) {
	if s.ended {
		return
	}
	s.ended, s.err = true, err
	delete(s.c.streams, s)
	s.wake()
}

func (c *Client) sendAbort(handle uint64) {
	r := c.newRequest(protocol.OpAbort, "abort", nil, 0, 0)
	r.args[0] = handle
	c.startLocked(r)
}

// ReadStream is an object's bytes as a sequence of filled slots. Not safe for concurrent use;
// Close it when done (it releases what it holds and cancels the rest).
type ReadStream struct {
	c       *Client
	ctx     context.Context
	sink    *streamSink
	req     *request
	current *Chunk
	rest    []byte // io.Reader: what is left of current
	closed  bool
}

// OpenRead starts reading key. ctx bounds the stream's calls made through the io adapters
// (Read, WriteTo); Next takes its own.
func (c *Client) OpenRead(ctx context.Context, key string, o *ReadOptions) (*ReadStream, error) {
	var opts ReadOptions
	if o != nil {
		opts = *o
	}
	if opts.ReadAhead == 0 {
		opts.ReadAhead = 4
	}
	if opts.ReadAhead < 1 || opts.ReadAhead > 64 {
		return nil, invalidArg("openRead", "ReadAhead %d is not in 1..=64", opts.ReadAhead)
	}
	end := opts.End
	if end == 0 {
		end = protocol.RangeToEnd
	} else if end < opts.Start {
		return nil, invalidArg("openRead", "range end %d is below its start %d", end, opts.Start)
	}
	if err := checkKey(key, "openRead"); err != nil {
		return nil, err
	}
	return c.openStream(ctx, protocol.OpOpenRead, "openRead", []byte(key), [4]uint64{opts.Start, end, uint64(opts.ReadAhead)}, opts.ReadAhead)
}

// openStream starts a stream op (OPEN_READ, CONTENT_READ) whose slot carries payload.
func (c *Client) openStream(ctx context.Context, op protocol.Opcode, name string, payload []byte, args [4]uint64, readAhead int) (*ReadStream, error) {
	s, err := c.payloadSlot(ctx, payload, name)
	if err != nil {
		return nil, err
	}
	sink := &streamSink{c: c, notify: make(chan struct{}, 1)}
	r := c.newRequest(op, name, s, 0, uint32(len(payload)))
	r.args, r.weight, r.consumes, r.wantMsg, r.stream = args, uint32(1+readAhead), true, true, sink
	c.mu.Lock()
	err = c.startLocked(r)
	if err == nil {
		c.streams[sink] = struct{}{}
	}
	c.mu.Unlock()
	if err != nil {
		s.Release()
		return nil, err
	}
	return &ReadStream{c: c, ctx: ctx, sink: sink, req: r}, nil
}

func (rs *ReadStream) releaseCurrent() {
	if rs.current != nil {
		rs.current.Slot.Release()
		rs.current, rs.rest = nil, nil
	}
}

// Next releases the previous chunk and returns the next one; io.EOF once the stream ended well
// (then Result says how). Chunks of a whole-object read are verified when the stream ends: a
// checksum mismatch fails the stream with SHMPIPE_E_INTEGRITY before its last byte is delivered.
func (rs *ReadStream) Next(ctx context.Context) (*Chunk, error) {
	rs.releaseCurrent()
	if rs.closed {
		return nil, invalidArg("next", "the stream was closed")
	}
	c := rs.c
	for {
		c.mu.Lock()
		ch, ok := rs.sink.chunks.pop()
		ended, err := rs.sink.ended, rs.sink.err
		c.mu.Unlock()
		if ok {
			rs.current = &ch
			rs.rest = ch.Data
			return rs.current, nil
		}
		if ended {
			// The payload slot is ours again when the stream could not be opened.
			rs.req.slot.Release()
			if err != nil {
				return nil, err
			}
			return nil, io.EOF
		}
		select {
		case <-rs.sink.notify:
		case <-ctx.Done():
			return nil, &Error{Code: CodeCancelled, Op: "next", Msg: "the caller's context ended", Err: ctx.Err()}
		}
	}
}

// Result is how the stream ended (valid after Next returned io.EOF).
func (rs *ReadStream) Result() ReadResult {
	rs.c.mu.Lock()
	defer rs.c.mu.Unlock()
	return rs.sink.result
}

// Read copies the stream's bytes into p (io.Reader).
func (rs *ReadStream) Read(p []byte) (int, error) {
	for len(rs.rest) == 0 {
		if _, err := rs.Next(rs.ctx); err != nil {
			return 0, err
		}
	}
	n := copy(p, rs.rest)
	rs.rest = rs.rest[n:]
	return n, nil
}

// WriteTo writes every remaining chunk to w straight from its slot (io.WriterTo).
func (rs *ReadStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(rs.rest) > 0 {
		n, err := w.Write(rs.rest)
		total += int64(n)
		if err != nil {
			return total, err
		}
		rs.rest = nil
	}
	for {
		ch, err := rs.Next(rs.ctx)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, err := w.Write(ch.Data)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// Close releases every chunk the stream holds and cancels the rest (ABORT of its handle).
func (rs *ReadStream) Close() error {
	if rs.closed {
		return nil
	}
	rs.closed = true
	rs.releaseCurrent()
	c := rs.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, ok := rs.sink.chunks.pop(); ok; ch, ok = rs.sink.chunks.pop() {
		c.releaseLocked(ch.Slot)
	}
	if !rs.sink.ended {
		rs.sink.cancelled = true
		if rs.sink.handle != 0 && c.failure == nil {
			c.sendAbort(rs.sink.handle)
		}
		rs.req.abandoned = true
	} else {
		c.releaseLocked(rs.req.slot)
	}
	return nil
}
