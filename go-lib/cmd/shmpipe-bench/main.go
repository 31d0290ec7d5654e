// Command shmpipe-bench is the Go client's part of `npm run perf:clients` (perf/clients.js): the
// same measures as the TypeScript and Python parts, each against the same work over the sidecar's
// UDS baseline transport (sidecar/src/baseline.rs) written in Go, in the same run:
//   - await round trip of a 64-byte ECHO, one in flight: p50/p99;
//   - 1 MiB PUTs and whole-object GETs with --inflight requests in flight (shm: lanes of one
//     client; UDS: one connection per lane, since a baseline connection runs its requests in
//     order), the payload copied from process memory into the slot (or the socket);
//   - OS threads and goroutines of this process before and with --threads-inflight DELAYs
//     outstanding, all started from one goroutine (DelayAsync).
//
// Prints one JSON object.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	shmpipe "github.com/shmpipe/shmpipe/go-lib"
	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

var (
	sidecar  = flag.String("sidecar", "", "control socket")
	baseline = flag.String("baseline", "", "UDS baseline socket")
	rttCount = flag.Int("rtt-count", 20000, "round trips to time")
	mib      = flag.Int("mib", 512, "MiB to put and to get")
	inflight = flag.Int("inflight", 16, "requests in flight for put/get")
	tinfl    = flag.Int("threads-inflight", 10000, "DELAYs outstanding for the thread count")
)

const MiB = 1 << 20

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmpipe-bench:", err)
		os.Exit(1)
	}
}

func threads() int {
	e, _ := os.ReadDir("/proc/self/task")
	return len(e)
}

func pct(samples []float64) (float64, float64) {
	sort.Float64s(samples)
	return samples[len(samples)/2], samples[len(samples)*99/100]
}

// ---- the UDS baseline ----------------------------------------------------------------------

type uds struct {
	c   net.Conn
	hdr [4 + 64]byte
	buf []byte
}

func dialUDS() *uds {
	c, err := net.Dial("unix", *baseline)
	must(err)
	return &uds{c: c, buf: make([]byte, 4+64+MiB+1024)}
}

// send writes one request frame: entry with opcode and args, then payload parts.
func (u *uds) send(op uint8, args [4]uint64, parts ...[]byte) {
	n := 64
	for _, p := range parts {
		n += len(p)
	}
	f := u.buf[:4+n]
	binary.LittleEndian.PutUint32(f, uint32(n))
	s := protocol.Submission{RequestID: 1, Opcode: op, SlotID: protocol.NoSlot, Args: args}
	s.Encode(f[4:68])
	at := 68
	for _, p := range parts {
		at += copy(f[at:], p)
	}
	_, err := u.c.Write(f)
	must(err)
}

// recv reads one reply: the completion and its payload length (payload read into scratch).
func (u *uds) recv(scratch []byte) protocol.Completion {
	_, err := io.ReadFull(u.c, u.hdr[:])
	must(err)
	n := binary.LittleEndian.Uint32(u.hdr[:4])
	c := protocol.DecodeCompletion(u.hdr[4:68])
	if n > 64 {
		_, err = io.ReadFull(u.c, scratch[:n-64])
		must(err)
	}
	if c.Status != 0 {
		must(fmt.Errorf("baseline op failed with status %d", c.Status))
	}
	return c
}

// ---- measures ------------------------------------------------------------------------------

func lanes(n, total int, f func(lane, i int)) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for l := 0; l < n; l++ {
		wg.Add(1)
		go func(l int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				f(l, i)
			}
		}(l)
	}
	wg.Wait()
	return time.Since(t0).Seconds()
}

func main() {
	flag.Parse()
	ctx := context.Background()
	out := map[string]any{"client": "go", "go": runtime.Version()}
	c, err := shmpipe.Connect(ctx, shmpipe.Options{SocketPath: *sidecar, SlotCount: 64, SlotSize: 2 * MiB, ClientName: "perf-clients-go"})
	must(err)
	defer c.Close()
	src := make([]byte, MiB)
	for i := range src {
		src[i] = byte(i * 7)
	}

	// Round trips, one in flight.
	slot, err := c.Alloc(ctx)
	must(err)
	copy(slot.Bytes(), src[:64])
	rtt := func(n int) []float64 {
		s := make([]float64, n)
		for i := range s {
			t0 := time.Now()
			_, err := c.Echo(ctx, slot, 0, 64)
			must(err)
			s[i] = float64(time.Since(t0).Nanoseconds()) / 1000
		}
		return s
	}
	rtt(20000) // warm: the dispatcher's spin adapts to a busy session (cold round trips measured ~30x slower)
	out["shm_rtt_p50_us"], out["shm_rtt_p99_us"] = pct(rtt(*rttCount))
	slot.Release()
	u := dialUDS()
	scratch := make([]byte, 2*MiB)
	urtt := func(n int) []float64 {
		s := make([]float64, n)
		for i := range s {
			t0 := time.Now()
			u.send(protocol.OpEcho, [4]uint64{}, src[:64])
			u.recv(scratch)
			s[i] = float64(time.Since(t0).Nanoseconds()) / 1000
		}
		return s
	}
	urtt(5000)
	out["uds_rtt_p50_us"], out["uds_rtt_p99_us"] = pct(urtt(*rttCount / 2))
	u.c.Close()

	// 1 MiB puts and gets, --inflight lanes.
	total := *mib
	key := func(l int) string { return fmt.Sprintf("perf/go/%d", l) }
	put := func(l, i int) {
		s, err := c.Alloc(ctx)
		must(err)
		copy(s.Bytes(), src)
		_, err = c.Put(ctx, key(l), s, 0, MiB)
		must(err)
	}
	get := func(l, i int) {
		rs, err := c.OpenRead(ctx, key(l), nil)
		must(err)
		n := 0
		for {
			ch, err := rs.Next(ctx)
			if err == io.EOF {
				break
			}
			must(err)
			n += len(ch.Data)
		}
		rs.Close()
		if n != MiB {
			must(fmt.Errorf("got %d bytes", n))
		}
	}
	lanes(*inflight, *inflight*2, put) // warm, and the objects the gets read
	lanes(*inflight, *inflight*2, get)
	out["shm_put_gbps"] = float64(total) * MiB / lanes(*inflight, total, put) / 1e9
	out["shm_get_gbps"] = float64(total) * MiB / lanes(*inflight, total, get) / 1e9

	conns := make([]*uds, *inflight)
	bufs := make([][]byte, *inflight)
	for i := range conns {
		conns[i] = dialUDS()
		bufs[i] = make([]byte, 2*MiB)
	}
	uput := func(l, i int) {
		k := []byte(fmt.Sprintf("perf/go-uds/%d", l))
		conns[l].send(protocol.OpPut, [4]uint64{uint64(len(k))}, k, src)
		conns[l].recv(bufs[l])
	}
	uget := func(l, i int) {
		k := []byte(fmt.Sprintf("perf/go-uds/%d", l))
		conns[l].send(protocol.OpOpenRead, [4]uint64{0, protocol.RangeToEnd}, k)
		n := uint64(0)
		for {
			comp := conns[l].recv(bufs[l])
			if comp.Flags&protocol.CQMore == 0 {
				break
			}
			n += comp.Result
		}
		if n != MiB {
			must(fmt.Errorf("uds get: %d bytes", n))
		}
	}
	lanes(*inflight, *inflight*2, uput)
	lanes(*inflight, *inflight*2, uget)
	out["uds_put_gbps"] = float64(total) * MiB / lanes(*inflight, total, uput) / 1e9
	out["uds_get_gbps"] = float64(total) * MiB / lanes(*inflight, total, uget) / 1e9
	for _, u := range conns {
		u.c.Close()
	}

	// Threads with --threads-inflight DELAYs outstanding, started from this one goroutine.
	out["threads_before"], out["goroutines_before"] = threads(), runtime.NumGoroutine()
	calls := make([]*shmpipe.Call, 0, *tinfl)
	for i := 0; i < *tinfl; i++ {
		call, err := c.DelayAsync(300_000)
		must(err)
		calls = append(calls, call)
	}
	out["threads_during"], out["goroutines_during"] = threads(), runtime.NumGoroutine()
	time.Sleep(100 * time.Millisecond)
	out["threads_during"] = max(out["threads_during"].(int), threads())
	for _, call := range calls {
		_, err := call.Wait(ctx)
		must(err)
	}
	out["threads_after"] = threads()
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
