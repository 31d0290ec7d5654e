package shmpipe

// Streaming uploads (SPEC §7.2 OPEN_WRITE, WRITE, COMMIT, ABORT). A Writer sends slots in
// order; its io.Writer and io.ReaderFrom adapters keep up to Window WRITEs in flight, and
// ReadFrom reads its source straight into slots (no copy in between).

import (
	"context"
	"errors"
	"io"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// DefaultWindow is the WRITEs a Writer's adapters keep in flight.
const DefaultWindow = 8

// Writer is a streaming upload: write slots in order, then Commit (or Abort). Nothing is visible
// under the key before Commit. A Writer is not safe for concurrent use.
type Writer struct {
	c      *Client
	key    string
	handle uint64
	ctx    context.Context
	// Window is the WRITEs the io adapters keep in flight (default DefaultWindow).
	Window   int
	inflight fifo[*request]
	cur      *Slot // partly filled by Write
	curN     int
	err      error
	done     bool
}

// OpenWrite starts a streaming upload of key. ctx bounds the open and is the context of the
// Writer's io adapters (Write, ReadFrom, Close).
func (c *Client) OpenWrite(ctx context.Context, key string) (*Writer, error) {
	comp, err := c.keyCall(ctx, protocol.OpOpenWrite, "openWrite", key)
	if err != nil {
		return nil, err
	}
	return &Writer{c: c, key: key, handle: comp.Result, ctx: ctx, Window: DefaultWindow}, nil
}

// Key is the object key being written.
func (w *Writer) Key() string { return w.key }

func (w *Writer) usable(op string) error {
	if w.done {
		return invalidArg(op, "the writer for %q was committed or aborted", w.key)
	}
	return w.err
}

// startWrite submits a WRITE of s without waiting; the slot is consumed.
func (w *Writer) startWrite(s *Slot, offset, length int) error {
	c := w.c
	if err := checkRange(s, offset, length, "write"); err != nil {
		return err
	}
	r := c.newRequest(protocol.OpWrite, "write", s, uint32(offset), uint32(length))
	r.args[0] = w.handle
	r.consumes = true
	if err := c.startChecked(r); err != nil {
		return err
	}
	w.inflight.push(r)
	return nil
}

// settle waits until at most keep WRITEs are in flight; the first failure sticks.
func (w *Writer) settle(ctx context.Context, keep int) error {
	for w.inflight.len() > keep {
		r, _ := w.inflight.pop()
		if _, err := w.c.wait(ctx, r); err != nil && w.err == nil {
			w.err = err
		}
	}
	return w.err
}

// WriteSlot appends length bytes at offset of s and waits until the sidecar has taken them. The
// slot is consumed: do not touch it afterwards.
func (w *Writer) WriteSlot(ctx context.Context, s *Slot, offset, length int) error {
	if err := w.usable("write"); err != nil {
		return err
	}
	if err := w.flushCur(); err != nil {
		return err
	}
	if err := w.startWrite(s, offset, length); err != nil {
		return err
	}
	return w.settle(ctx, 0)
}

func (w *Writer) flushCur() error {
	if w.cur == nil {
		return nil
	}
	s, n := w.cur, w.curN
	w.cur, w.curN = nil, 0
	if err := w.startWrite(s, 0, n); err != nil {
		s.Release()
		return err
	}
	return w.settle(w.ctx, max(w.Window, 1)-1)
}

// checkWindow refuses the slot-allocating adapters in a session where a writer's partial part
// (pinned until the part is complete, SPEC §9) could take every slot the client can hold.
func (w *Writer) checkWindow(op string) error {
	l := w.c.layout
	perPart := (l.PartSize + uint64(l.SlotSize) - 1) / uint64(l.SlotSize)
	if perPart+1 > uint64(l.GrantWindow) {
		return invalidArg(op, "a streaming upload pins up to %d slots (part size %d) but this session can hold only %d: connect with more or larger slots", perPart, l.PartSize, l.GrantWindow)
	}
	return nil
}

// Write copies p into slots and sends each full one (io.Writer). Errors of WRITEs in flight
// surface in a later call or in Commit.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable("write"); err != nil {
		return 0, err
	}
	if err := w.checkWindow("write"); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if w.cur == nil {
			s, err := w.c.Alloc(w.ctx)
			if err != nil {
				return n, err
			}
			w.cur, w.curN = s, 0
		}
		k := copy(w.cur.buf[w.curN:], p)
		w.curN += k
		n += k
		p = p[k:]
		if w.curN == w.cur.Len() {
			if err := w.flushCur(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// ReadFrom reads r straight into slots until EOF and sends them (io.ReaderFrom).
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if err := w.usable("write"); err != nil {
		return 0, err
	}
	if err := w.checkWindow("write"); err != nil {
		return 0, err
	}
	if err := w.flushCur(); err != nil {
		return 0, err
	}
	var total int64
	for {
		s, err := w.c.Alloc(w.ctx)
		if err != nil {
			return total, err
		}
		n, rerr := io.ReadFull(r, s.buf)
		total += int64(n)
		if n > 0 {
			if err := w.startWrite(s, 0, n); err != nil {
				s.Release()
				return total, err
			}
			if err := w.settle(w.ctx, max(w.Window, 1)); err != nil {
				return total, err
			}
		} else {
			s.Release()
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return total, nil
		}
		if rerr != nil {
			return total, &Error{Code: CodeIO, Op: "write", Msg: "reading the source", Err: rerr}
		}
	}
}

// Commit makes the object visible once every byte was taken; returns its size and CRC-32C. The
// writer is finished whatever the outcome (a failed one is aborted).
func (w *Writer) Commit(ctx context.Context) (PutResult, error) {
	if w.done {
		return PutResult{}, invalidArg("commit", "the writer for %q was committed or aborted", w.key)
	}
	err := w.flushCur()
	if err == nil {
		err = w.settle(ctx, 0)
	}
	if err != nil {
		w.Abort(context.WithoutCancel(ctx))
		return PutResult{}, err
	}
	w.done = true
	r := w.c.newRequest(protocol.OpCommit, "commit", nil, 0, 0)
	r.args[0] = w.handle
	comp, err := w.c.call(ctx, r)
	return PutResult{comp.Result, uint32(comp.Aux[0])}, err
}

// Close commits (io.Closer), with the Writer's context.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	_, err := w.Commit(w.ctx)
	return err
}

// Abort abandons the upload: nothing of it stays in the store. Idempotent after Commit/Abort.
func (w *Writer) Abort(ctx context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	if w.cur != nil {
		w.cur.Release()
		w.cur = nil
	}
	w.settle(ctx, 0)
	r := w.c.newRequest(protocol.OpAbort, "abort", nil, 0, 0)
	r.args[0] = w.handle
	_, err := w.c.call(ctx, r)
	return err
}
