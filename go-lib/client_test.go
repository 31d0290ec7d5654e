package shmpipe

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shmpipe/shmpipe/go-lib/internal/testsidecar"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func connectT(t *testing.T, s *testsidecar.Sidecar, o Options) *Client {
	t.Helper()
	o.SocketPath = s.Socket
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, o)
	if err != nil {
		t.Fatalf("connect: %v (sidecar: %s)", err, s.Stderr)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestHandshakeEchoNopDelay(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 8, SlotSize: 65536})
	ctx := ctxT(t)
	l := c.Layout()
	if l.SlotCount != 8 || l.SlotSize != 65536 || l.Generation == 0 || l.MaxInFlight == 0 {
		t.Fatalf("layout %+v", l)
	}
	slot, err := c.Alloc(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(slot.Bytes()) != 65536 {
		t.Fatalf("slot view is %d bytes", len(slot.Bytes()))
	}
	data := randomBytes(4000)
	copy(slot.Bytes()[96:], data)
	crc, err := c.Echo(ctx, slot, 96, len(data))
	if err != nil {
		t.Fatal(err)
	}
	if want := crc32.Checksum(data, castagnoli); crc != want {
		t.Fatalf("echo crc %08x, want %08x", crc, want)
	}
	if err := c.Nop(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := c.Delay(ctx, 20_000); err != nil {
		t.Fatal(err)
	}
	if time.Since(t0) < 20*time.Millisecond {
		t.Fatalf("DELAY 20 ms came back after %v", time.Since(t0))
	}
	if _, err := c.Echo(ctx, slot, 65000, 1000); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("echo past the slot: %v", err)
	}
	slot.Release()
	if _, err := c.Echo(ctx, slot, 0, 1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("echo of a released slot: %v", err)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st["session"]; !ok {
		t.Fatalf("stats: %v", st)
	}
}

func TestObjectsRoundTrip(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 32, SlotSize: 1 << 20})
	ctx := ctxT(t)

	// Put from a slot filled in place, then read it back whole.
	small := randomBytes(10_000)
	slot, _ := c.Alloc(ctx)
	copy(slot.Bytes(), small)
	pr, err := c.Put(ctx, "go/small.bin", slot, 0, len(small))
	if err != nil {
		t.Fatal(err)
	}
	if pr.Size != uint64(len(small)) || pr.Checksum != crc32.Checksum(small, castagnoli) {
		t.Fatalf("put result %+v", pr)
	}
	if _, err := c.Echo(ctx, slot, 0, 1); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("a consumed slot was usable: %v", err)
	}
	info, err := c.Stat(ctx, "go/small.bin")
	if err != nil || info.Size != uint64(len(small)) || info.Checksum != pr.Checksum || info.MtimeMs == 0 {
		t.Fatalf("stat %+v %v", info, err)
	}

	// A streamed upload larger than a slot (io.ReaderFrom), read back through io.WriterTo.
	big := randomBytes(5<<20 + 12345)
	w, err := c.OpenWrite(ctx, "go/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if pr, err = w.Commit(ctx); err != nil || pr.Size != uint64(len(big)) {
		t.Fatalf("commit %+v %v", pr, err)
	}
	rs, err := c.OpenRead(ctx, "go/big.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := io.Copy(&got, rs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), big) || !rs.Result().Verified {
		t.Fatalf("read back %d bytes (verified %v), want %d", got.Len(), rs.Result().Verified, len(big))
	}
	rs.Close()

	// io.Writer (copies) and io.Reader (copies) adapters, and a range.
	w, _ = c.OpenWrite(ctx, "go/written.bin")
	for off := 0; off < len(big); off += 777_777 {
		w.Write(big[off:min(off+777_777, len(big))])
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rs, _ = c.OpenRead(ctx, "go/written.bin", &ReadOptions{Start: 1 << 20, End: 3<<20 + 5})
	part, err := io.ReadAll(rs)
	if err != nil || !bytes.Equal(part, big[1<<20:3<<20+5]) || rs.Result().Verified {
		t.Fatalf("range read: %d bytes, %v, verified %v", len(part), err, rs.Result().Verified)
	}
	rs.Close()

	// Files, straight into and out of slots.
	dir := t.TempDir()
	for i, n := range []int{0, 1, 65536, 1 << 20, 3<<20 + 1} {
		src := filepath.Join(dir, "src")
		data := randomBytes(n)
		os.WriteFile(src, data, 0o644)
		key := "go/files/" + string(rune('a'+i))
		if _, err := c.PutFile(ctx, src, key); err != nil {
			t.Fatalf("putFile %d: %v", n, err)
		}
		dst := filepath.Join(dir, "dst")
		r, err := c.GetFile(ctx, key, dst)
		if err != nil {
			t.Fatalf("getFile %d: %v", n, err)
		}
		back, _ := os.ReadFile(dst)
		if !bytes.Equal(back, data) || !r.Verified {
			t.Fatalf("file of %d bytes came back as %d (verified %v)", n, len(back), r.Verified)
		}
	}

	var keys []string
	for e, err := range c.List(ctx, "go", 2) { // pages of 2
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, e.Key)
	}
	want := []string{"go/big.bin", "go/files/a", "go/files/b", "go/files/c", "go/files/d", "go/files/e", "go/small.bin", "go/written.bin"}
	if len(keys) != len(want) {
		t.Fatalf("list: %v", keys)
	}
	for i := range want {
		if keys[i] != want[i] {
			t.Fatalf("list: %v", keys)
		}
	}

	if err := c.Delete(ctx, "go/small.bin"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, "go/small.bin"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
	if _, err := c.GetFile(ctx, "go/small.bin", filepath.Join(dir, "missing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a missing key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Fatal("a failed get left a file")
	}
	if err := c.Delete(ctx, "go/small.bin"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	// A writer aborted leaves nothing.
	w, _ = c.OpenWrite(ctx, "go/aborted")
	w.Write(big[:2<<20])
	w.Abort(ctx)
	if _, err := c.Stat(ctx, "go/aborted"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted upload: %v", err)
	}
}

func TestBadArgumentsFailLocally(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 4, SlotSize: 65536})
	ctx := ctxT(t)
	for _, key := range []string{"", "/a", "a/", "a//b", "a/../b", "a/./b", "a\x01b", "a/b#12", string(make([]byte, 1025)), "\xff"} {
		if _, err := c.Stat(ctx, key); CodeOf(err) != CodeInvalidArgument {
			t.Fatalf("key %q: %v", key, err)
		}
	}
	if _, err := c.OpenRead(ctx, "k", &ReadOptions{ReadAhead: 65}); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("read-ahead 65: %v", err)
	}
	if err := c.Delay(ctx, 60_000_001); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("delay past 60 s: %v", err)
	}
	if _, err := Connect(ctx, Options{}); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("connect without a socket: %v", err)
	}
	if _, err := Connect(ctx, Options{SocketPath: filepath.Join(t.TempDir(), "none")}); CodeOf(err) != CodeDisconnected {
		t.Fatalf("connect to nothing: %v", err)
	}
}

func TestContextCancellation(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 4, SlotSize: 65536})
	ctx := ctxT(t)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err := c.Delay(short, 10_000_000)
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 5*time.Second {
		t.Fatalf("cancelled delay: %v after %v", err, time.Since(t0))
	}
	// An Alloc waiting for a grant gives up with its context; the session goes on.
	var held []*Slot
	for {
		sl, _ := c.TryAlloc()
		if sl == nil {
			break
		}
		held = append(held, sl)
	}
	if len(held) == 0 {
		t.Fatal("no slot was granted")
	}
	short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := c.Alloc(short2); !errors.Is(err, ErrCancelled) {
		t.Fatalf("alloc with none free: %v", err)
	}
	for _, sl := range held {
		sl.Release()
	}
	sl, err := c.Alloc(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Echo(ctx, sl, 0, 100); err != nil {
		t.Fatal(err)
	}
}

// The sidecar dies with calls in flight: every pending call fails with SHMPIPE_E_DISCONNECTED at
// once, later calls too, and nothing hangs.
func TestSidecarKilledMidCall(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 8, SlotSize: 65536})
	ctx := ctxT(t)
	var calls []*Call
	for i := 0; i < 200; i++ {
		call, err := c.DelayAsync(30_000_000)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Delay(ctx, 30_000_000)
		}()
	}
	rs, err := c.OpenRead(ctx, "no/such/object/yet", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nop(ctx); err != nil { // the delays are in flight
		t.Fatal(err)
	}
	t0 := time.Now()
	s.Kill(t)
	for _, call := range calls {
		if _, err := call.Wait(ctx); !errors.Is(err, ErrDisconnected) {
			t.Fatalf("pending call: %v", err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrDisconnected) {
			t.Fatalf("blocking call: %v", err)
		}
	}
	if _, err := rs.Next(ctx); err == nil || io.EOF == err {
		t.Fatalf("stream: %v", err)
	}
	if time.Since(t0) > 5*time.Second {
		t.Fatalf("the calls failed only after %v", time.Since(t0))
	}
	if err := c.Nop(ctx); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("a call after the disconnect: %v", err)
	}
	if _, err := c.Alloc(ctx); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("alloc after the disconnect: %v", err)
	}
	if !errors.Is(c.Err(), ErrDisconnected) {
		t.Fatalf("Err: %v", c.Err())
	}
	c.Close()
}

// A sidecar that stops (SIGSTOP) while calls are pending: its heartbeat stops, and the calls fail
// with SHMPIPE_E_UNRESPONSIVE after UnresponsiveAfter instead of waiting forever.
func TestUnresponsiveSidecar(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 4, SlotSize: 65536, UnresponsiveAfter: 500 * time.Millisecond})
	ctx := ctxT(t)
	if err := c.Delay(ctx, 1_200_000); err != nil { // a long call on a live sidecar is fine
		t.Fatalf("a 1.2 s call with a 0.5 s heartbeat deadline: %v", err)
	}
	s.Cmd.Process.Signal(syscall.SIGSTOP)
	defer s.Cmd.Process.Signal(syscall.SIGCONT)
	waitFor(t, 5*time.Second, "the sidecar to stop", func() bool {
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(s.Cmd.Process.Pid) + "/stat")
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		return len(f) > 0 && f[0] == "T"
	})
	t0 := time.Now()
	err := c.Delay(ctx, 10_000)
	if CodeOf(err) != CodeUnresponsive || time.Since(t0) > 5*time.Second {
		t.Fatalf("call to a stopped sidecar: %v after %v", err, time.Since(t0))
	}
}

// Threads of this process stay flat with 10,000 calls outstanding from one goroutine.
func TestThreadsFlatUnder10kInFlight(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 4, SlotSize: 65536})
	ctx := ctxT(t)
	for i := 0; i < 1000; i++ { // warm the runtime
		c.Nop(ctx)
	}
	before := threads(t)
	calls := make([]*Call, 0, 10_000)
	for i := 0; i < 10_000; i++ {
		call, err := c.DelayAsync(300_000)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call)
	}
	during := threads(t)
	for _, call := range calls {
		if _, err := call.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	after := threads(t)
	if during > before+2 || after > before+2 {
		t.Fatalf("OS threads %d before, %d with 10,000 calls outstanding, %d after", before, during, after)
	}
	t.Logf("OS threads: %d before, %d with 10,000 calls outstanding, %d after", before, during, after)
}

// waitFor polls cond until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func threads(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// 8 slots of 64 KiB and parts of 8 MiB: a writer's partial part would pin every slot, so the
// slot-allocating adapters refuse instead of deadlocking.
func TestStreamingWriterRefusedWhenAPartCouldTakeEverySlot(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 8, SlotSize: 65536})
	ctx := ctxT(t)
	w, err := c.OpenWrite(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 100_000)); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("Write: %v", err)
	}
	if _, err := w.ReadFrom(bytes.NewReader(make([]byte, 100_000))); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("ReadFrom: %v", err)
	}
	w.Abort(ctx)
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, make([]byte, 100_000), 0o644)
	if _, err := c.PutFile(ctx, src, "k"); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("PutFile: %v", err)
	}
}

// A read stream closed after its first chunk is ABORTed: its slots come back and the session
// goes on; a writer abandoned by its context leaves nothing in the store.
func TestStreamClosedEarlyGivesItsSlotsBack(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 16, SlotSize: 1 << 20})
	ctx := ctxT(t)
	w, _ := c.OpenWrite(ctx, "obj")
	if _, err := w.Write(randomBytes(8 << 20)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	window := int(c.Layout().GrantWindow)
	for round := 0; round < 3; round++ {
		rs, err := c.OpenRead(ctx, "obj", &ReadOptions{ReadAhead: 4})
		if err != nil {
			t.Fatal(err)
		}
		if ch, err := rs.Next(ctx); err != nil || len(ch.Data) == 0 {
			t.Fatalf("first chunk: %v", err)
		}
		rs.Close()
	}
	// Every slot the session may hold is allocatable again (the streams' slots came back).
	var held []*Slot
	deadline, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(held) < window {
		sl, err := c.Alloc(deadline)
		if err != nil {
			t.Fatalf("only %d of %d slots came back: %v", len(held), window, err)
		}
		held = append(held, sl)
	}
	for _, sl := range held {
		sl.Release()
	}
	if err := c.Nop(ctx); err != nil {
		t.Fatal(err)
	}
}

// A Put whose data fills the slot leaves no room for the key: it goes as a one-WRITE upload.
func TestPutOfAFullSlot(t *testing.T) {
	s := testsidecar.Start(t)
	c := connectT(t, s, Options{SlotCount: 16, SlotSize: 1 << 20})
	ctx := ctxT(t)
	sl, _ := c.Alloc(ctx)
	data := randomBytes(sl.Len())
	copy(sl.Bytes(), data)
	if r, err := c.Put(ctx, "full", sl, 0, len(data)); err != nil || r.Size != uint64(len(data)) || r.Checksum != crc32.Checksum(data, castagnoli) {
		t.Fatalf("put of a full slot: %+v %v", r, err)
	}
	rs, _ := c.OpenRead(ctx, "full", nil)
	back, err := io.ReadAll(rs)
	rs.Close()
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("read back %d bytes: %v", len(back), err)
	}
}
