package shmpipe

// The object-store ops of SPEC §7.2: Put, Stat, Delete, List, and streaming uploads (OpenWrite →
// Writer). Every argument is checked here before any ring work; a bad one fails with
// SHMPIPE_E_INVALID_ARGUMENT and a message that says why. Keys follow the sidecar's rules.

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// ObjectInfo is what the store says about an object.
type ObjectInfo struct {
	Key      string
	Size     uint64
	Checksum uint32 // CRC-32C of the data
	MtimeMs  uint64 // last modification, Unix milliseconds
}

// PutResult is what an upload stored.
type PutResult struct {
	Size     uint64
	Checksum uint32 // CRC-32C as the sidecar computed it
}

// ListEntry is one LIST entry.
type ListEntry struct {
	Key     string `json:"key"`
	Size    uint64 `json:"size"`
	MtimeMs uint64 `json:"mtime_ms"`
}

var stagingSuffix = regexp.MustCompile(`#[0-9]+$`)

// KeyProblem says why key is not a valid object key (SPEC §7.2), or returns "".
func KeyProblem(key string) string {
	switch {
	case key == "":
		return "must not be empty"
	case len(key) > protocol.MaxKeyLen:
		return fmt.Sprintf("is %d bytes of UTF-8, more than %d", len(key), protocol.MaxKeyLen)
	case !utf8.ValidString(key):
		return "is not valid UTF-8"
	case strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/"):
		return "must not start or end with '/'"
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return "must not contain control characters"
		}
	}
	segs := strings.Split(key, "/")
	for _, s := range segs {
		switch s {
		case "":
			return "must not contain empty segments ('//')"
		case ".", "..":
			return "must not contain '.' or '..' segments"
		}
	}
	if stagingSuffix.MatchString(segs[len(segs)-1]) {
		return "must not end in '#' followed by digits (reserved for uploads in progress)"
	}
	return ""
}

func checkKey(key, op string) error {
	if p := KeyProblem(key); p != "" {
		k := key
		if len(k) > 80 {
			k = k[:80]
		}
		return invalidArg(op, "key %q %s", k, p)
	}
	return nil
}

// payloadSlot allocates a slot holding payload at offset 0.
func (c *Client) payloadSlot(ctx context.Context, payload []byte, op string) (*Slot, error) {
	s, err := c.Alloc(ctx)
	if err != nil {
		return nil, err
	}
	if len(payload) > s.Len() {
		s.Release()
		return nil, invalidArg(op, "a request of %d bytes does not fit a slot of %d", len(payload), s.Len())
	}
	copy(s.buf, payload)
	return s, nil
}

// slotCall checks r's slot and starts r under one lock, then waits.
func (c *Client) slotCall(ctx context.Context, r *request) (protocol.Completion, error) {
	if err := ctx.Err(); err != nil {
		return protocol.Completion{}, &Error{Code: CodeCancelled, Op: r.name, Err: err}
	}
	if err := c.startChecked(r); err != nil {
		return protocol.Completion{}, err
	}
	return c.wait(ctx, r)
}

// startChecked checks r's slot (held by this client) and starts r, under one lock, so the slot
// cannot be released in between.
func (c *Client) startChecked(r *request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.slot != nil {
		if err := c.checkSlotLocked(r.slot, r.name); err != nil {
			return err
		}
	}
	return c.startLocked(r)
}

// Put stores length bytes at offset of s as the object key, replacing it atomically. The slot is
// consumed: do not touch it afterwards (on an argument error it stays the caller's). The key
// travels in the same slot after (or before) the data; when it fits neither, a one-WRITE
// streaming upload is used.
func (c *Client) Put(ctx context.Context, key string, s *Slot, offset, length int) (PutResult, error) {
	if err := checkKey(key, "put"); err != nil {
		return PutResult{}, err
	}
	if s == nil {
		return PutResult{}, invalidArg("put", "no slot")
	}
	if err := checkRange(s, offset, length, "put"); err != nil {
		return PutResult{}, err
	}
	keyAt := -1
	if offset+length+len(key) <= s.Len() {
		keyAt = offset + length
	} else if len(key) <= offset {
		keyAt = 0
	}
	if keyAt < 0 {
		w, err := c.OpenWrite(ctx, key)
		if err != nil {
			return PutResult{}, err
		}
		if err := w.WriteSlot(ctx, s, offset, length); err != nil {
			w.Abort(context.WithoutCancel(ctx))
			return PutResult{}, err
		}
		return w.Commit(ctx)
	}
	copy(s.buf[keyAt:], key)
	r := c.newRequest(protocol.OpPut, "put", s, uint32(offset), uint32(length))
	r.args[0], r.args[1] = uint64(len(key)), uint64(keyAt)
	r.consumes, r.wantMsg = true, true
	comp, err := c.slotCall(ctx, r)
	return PutResult{comp.Result, uint32(comp.Aux[0])}, err
}

// keyCall runs a key-only op (STAT, DELETE, OPEN_WRITE) in a fresh slot, released afterwards.
func (c *Client) keyCall(ctx context.Context, op protocol.Opcode, name, key string) (protocol.Completion, error) {
	if err := checkKey(key, name); err != nil {
		return protocol.Completion{}, err
	}
	s, err := c.payloadSlot(ctx, []byte(key), name)
	if err != nil {
		return protocol.Completion{}, err
	}
	defer s.Release()
	r := c.newRequest(op, name, s, 0, uint32(len(key)))
	r.wantMsg = true
	return c.slotCall(ctx, r)
}

// Stat is the size, CRC-32C and modification time of key; SHMPIPE_E_NOT_FOUND if there is none.
func (c *Client) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	comp, err := c.keyCall(ctx, protocol.OpStat, "stat", key)
	if err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{key, comp.Result, uint32(comp.Aux[0]), comp.Aux[1]}, nil
}

// Delete deletes key; it succeeds when there was no such object.
func (c *Client) Delete(ctx context.Context, key string) error {
	_, err := c.keyCall(ctx, protocol.OpDelete, "delete", key)
	return err
}

// List yields the objects under prefix (whole path segments), in key order, fetched page by
// page (pageSize 0: 1000). An error is yielded once, last.
func (c *Client) List(ctx context.Context, prefix string, pageSize int) iter.Seq2[ListEntry, error] {
	return func(yield func(ListEntry, error) bool) {
		if pageSize == 0 {
			pageSize = 1000
		}
		if pageSize < 1 || pageSize > 10000 {
			yield(ListEntry{}, invalidArg("list", "pageSize %d is not in 1..=10000", pageSize))
			return
		}
		if t := strings.TrimSuffix(prefix, "/"); t != "" {
			if p := KeyProblem(t); p != "" && !strings.HasPrefix(p, "must not end in '#'") {
				yield(ListEntry{}, invalidArg("list", "prefix %q %s", prefix, p))
				return
			}
		}
		var token *string
		limit := pageSize
		for {
			req, _ := json.Marshal(map[string]any{"prefix": prefix, "token": token, "limit": limit})
			s, err := c.payloadSlot(ctx, req, "list")
			if err != nil {
				yield(ListEntry{}, err)
				return
			}
			r := c.newRequest(protocol.OpList, "list", s, 0, uint32(len(req)))
			r.wantMsg = true
			comp, err := c.slotCall(ctx, r)
			if CodeOf(err) == CodeOutOfRange && limit > 1 {
				s.Release()
				limit = max(1, limit/2) // the page does not fit the slot: ask for fewer entries
				continue
			}
			var page struct {
				Entries []ListEntry `json:"entries"`
				Next    *string     `json:"next"`
			}
			if err == nil {
				if comp.Result > uint64(s.Len()) {
					err = &Error{Code: CodeProtocol, Op: "list", Msg: "the page exceeds the slot"}
				} else if jerr := json.Unmarshal(s.buf[:comp.Result], &page); jerr != nil {
					err = &Error{Code: CodeProtocol, Op: "list", Msg: "the sidecar returned an invalid page", Err: jerr}
				}
			}
			s.Release()
			if err != nil {
				yield(ListEntry{}, err)
				return
			}
			for _, e := range page.Entries {
				if !yield(e, nil) {
					return
				}
			}
			if page.Next == nil {
				return
			}
			token = page.Next
		}
	}
}
