package shmpipe

// Files straight to and from slots: PutFile reads a file into slots (ReadAt into the slot's
// memory, no buffer in between) and uploads them; GetFile writes each chunk from its slot at its
// offset into a temporary file, renamed into place only after the whole object arrived verified.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
)

func ioErr(op, file string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Code: CodeIO, Op: op, Msg: file, Err: err}
}

// PutFile uploads the regular file at path as key. A file that fits one slot with its key is
// read into a slot and PUT; a larger one is streamed through a Writer with Window WRITEs in
// flight.
func (c *Client) PutFile(ctx context.Context, path, key string) (PutResult, error) {
	if err := checkKey(key, "putFile"); err != nil {
		return PutResult{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return PutResult{}, ioErr("putFile", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return PutResult{}, ioErr("putFile", path, err)
	}
	if !st.Mode().IsRegular() {
		return PutResult{}, invalidArg("putFile", "%s is not a regular file", path)
	}
	size := st.Size()
	if size+int64(len(key)) <= int64(c.layout.SlotSize) {
		s, err := c.Alloc(ctx)
		if err != nil {
			return PutResult{}, err
		}
		n, err := io.ReadFull(io.NewSectionReader(f, 0, size), s.buf[:size])
		if err != nil {
			s.Release()
			if int64(n) < size {
				return PutResult{}, &Error{Code: CodeIO, Op: "putFile", Msg: path + " shrank while it was read", Err: err}
			}
			return PutResult{}, ioErr("putFile", path, err)
		}
		return c.Put(ctx, key, s, 0, int(size))
	}
	perPart := (c.layout.PartSize + uint64(c.layout.SlotSize) - 1) / uint64(c.layout.SlotSize)
	if perPart+1 > uint64(c.layout.GrantWindow) {
		return PutResult{}, invalidArg("putFile", "a streaming upload pins up to %d slots (part size %d) but this session can hold only %d: connect with more or larger slots", perPart, c.layout.PartSize, c.layout.GrantWindow)
	}
	w, err := c.OpenWrite(ctx, key)
	if err != nil {
		return PutResult{}, err
	}
	n, err := w.ReadFrom(io.LimitReader(f, size))
	if err == nil && n < size {
		err = &Error{Code: CodeIO, Op: "putFile", Msg: path + " shrank while it was read"}
	}
	if err != nil {
		w.Abort(context.WithoutCancel(ctx))
		return PutResult{}, ioErr("putFile", path, err)
	}
	return w.Commit(ctx)
}

// GetFile downloads key into the file at path, through a temporary file in the same directory
// that is renamed into place only after the whole object arrived and was verified. A failure
// leaves no file behind and does not touch an existing one.
func (c *Client) GetFile(ctx context.Context, key, path string) (ReadResult, error) {
	rs, err := c.OpenRead(ctx, key, &ReadOptions{ReadAhead: 8})
	if err != nil {
		return ReadResult{}, err
	}
	defer rs.Close()
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".shmpipe-"+hex.EncodeToString(rnd[:])+".tmp")
	var f *os.File
	ok := false
	defer func() {
		if f != nil {
			f.Close()
		}
		if !ok && f != nil {
			os.Remove(tmp)
		}
	}()
	open := func() error {
		if f == nil {
			var err error
			if f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666); err != nil {
				f = nil
				return ioErr("getFile", tmp, err)
			}
		}
		return nil
	}
	for {
		ch, err := rs.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return ReadResult{}, err // a missing key creates nothing
		}
		if err := open(); err != nil {
			return ReadResult{}, err
		}
		if _, err := f.WriteAt(ch.Data, int64(ch.Offset)); err != nil {
			return ReadResult{}, ioErr("getFile", tmp, err)
		}
	}
	if err := open(); err != nil { // an empty object: the file must exist all the same
		return ReadResult{}, err
	}
	if err := f.Close(); err != nil {
		f = nil
		os.Remove(tmp)
		return ReadResult{}, ioErr("getFile", tmp, err)
	}
	f = nil
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return ReadResult{}, ioErr("getFile", path, err)
	}
	ok = true
	return rs.Result(), nil
}
