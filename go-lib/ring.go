package shmpipe

// The agent's halves of the three SPSC rings (SPEC §4) over the mapped segment: the SQ producer
// and the CQ/GQ consumers. Positions are u64 words in shared memory accessed with sync/atomic,
// whose operations are sequentially consistent (Go memory model), which covers every
// Acquire/Release the SPEC asks for; entry bytes are plain loads and stores ordered by them.
// Each half keeps its own position privately and re-reads the peer's only when its cached copy
// says full (producer) or empty (consumer). Every peer position is checked (SPEC §4): a sidecar
// that breaks the invariants ends the session with SHMPIPE_E_PROTOCOL instead of being believed.
//
// Ordering pairs (the Rust side labels the same names in shm-protocol/src/ring.rs):
//   - [PUBLISH] producer.publish's store of tail ↔ the sidecar's Acquire load of the SQ tail;
//     consumer.refreshTail's load ↔ the sidecar's Release store of the CQ/GQ tail.
//   - [RELEASE] consumer.release's store of head ↔ the sidecar producer's Acquire load of head;
//     producer.refreshHead's load ↔ the sidecar consumer's Release store of the SQ head.

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/shmpipe/shmpipe/go-lib/protocol"
)

// word64 is the atomic u64 at mem[off]; off is a multiple of 8 inside a page-aligned mapping.
func word64(mem []byte, off uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

// word32 is the atomic u32 at mem[off]; off is a multiple of 4.
func word32(mem []byte, off uint64) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

type ringCorrupt struct {
	ring       string
	head, tail uint64
}

func (e *ringCorrupt) Error() string {
	return fmt.Sprintf("%s ring positions are corrupt: head %d, tail %d", e.ring, e.head, e.tail)
}

type ringBase struct {
	name      string
	tailW     *atomic.Uint64
	headW     *atomic.Uint64
	entries   []byte
	capacity  uint64
	mask      uint64
	entrySize uint64
}

func newRingBase(mem []byte, name string, off uint64, capacity uint32, entrySize int) (ringBase, uint64, uint64, error) {
	b := ringBase{
		name: name, tailW: word64(mem, off+protocol.RingTail), headW: word64(mem, off+protocol.RingHead),
		capacity: uint64(capacity), mask: uint64(capacity) - 1, entrySize: uint64(entrySize),
	}
	start := off + protocol.RingEntries
	b.entries = mem[start : start+uint64(capacity)*uint64(entrySize) : start+uint64(capacity)*uint64(entrySize)]
	tail, head := b.tailW.Load(), b.headW.Load()
	if tail-head > b.capacity {
		return b, 0, 0, &ringCorrupt{name, head, tail}
	}
	return b, tail, head, nil
}

// producer is the SQ: the agent writes 64-byte submissions.
type producer struct {
	ringBase
	tail       uint64
	published  uint64
	cachedHead uint64
}

func newProducer(mem []byte, name string, off uint64, capacity uint32, entrySize int) (*producer, error) {
	b, tail, head, err := newRingBase(mem, name, off, capacity, entrySize)
	if err != nil {
		return nil, err
	}
	return &producer{ringBase: b, tail: tail, published: tail, cachedHead: head}, nil
}

// reserve is the entry at the tail for the caller to fill and commit, or nil when full.
func (p *producer) reserve() ([]byte, error) {
	if p.tail-p.cachedHead == p.capacity {
		if err := p.refreshHead(); err != nil {
			return nil, err
		}
		if p.tail-p.cachedHead == p.capacity {
			return nil, nil
		}
	}
	at := (p.tail & p.mask) * p.entrySize
	return p.entries[at : at+p.entrySize : at+p.entrySize], nil
}

func (p *producer) commit() { p.tail++ }

// publish makes every committed entry visible (SPEC §6 P1); reports whether anything was new.
func (p *producer) publish() bool {
	if p.tail == p.published {
		return false
	}
	// [PUBLISH] SeqCst store (≥ Release), which is also the P2 fence before the caller's
	// need_wakeup load (atomic.Store is an XCHG on amd64).
	p.tailW.Store(p.tail)
	p.published = p.tail
	return true
}

func (p *producer) refreshHead() error {
	// [RELEASE] SeqCst load (≥ Acquire): pairs with the sidecar's Release store of the SQ head.
	head := p.headW.Load()
	// SPEC §4: 0 ≤ tail - head ≤ capacity, and head never decreases.
	if head-p.cachedHead > p.tail-p.cachedHead {
		return &ringCorrupt{p.name, head, p.tail}
	}
	p.cachedHead = head
	return nil
}

// consumer is the CQ or GQ: the sidecar produces, the agent consumes.
type consumer struct {
	ringBase
	head       uint64
	released   uint64
	cachedTail uint64
}

func newConsumer(mem []byte, name string, off uint64, capacity uint32, entrySize int) (*consumer, error) {
	b, _, head, err := newRingBase(mem, name, off, capacity, entrySize)
	if err != nil {
		return nil, err
	}
	return &consumer{ringBase: b, head: head, released: head, cachedTail: head}, nil
}

// available is the number of entries ready to read, re-reading the tail only when the cache
// says empty.
func (c *consumer) available() (uint64, error) {
	if c.cachedTail == c.head {
		if err := c.refreshTail(); err != nil {
			return 0, err
		}
	}
	return c.cachedTail - c.head, nil
}

// hasNew re-reads the shared tail (the C3 re-check before sleeping).
func (c *consumer) hasNew() (bool, error) {
	if err := c.refreshTail(); err != nil {
		return false, err
	}
	return c.cachedTail != c.head, nil
}

// at is the i-th unread entry (i < available()).
func (c *consumer) at(i uint64) []byte {
	off := ((c.head + i) & c.mask) * c.entrySize
	return c.entries[off : off+c.entrySize : off+c.entrySize]
}

func (c *consumer) advance(n uint64) { c.head += n }

// release hands consumed entries back to the producer.
func (c *consumer) release() {
	if c.head == c.released {
		return
	}
	// [RELEASE] SeqCst store (≥ Release): our reads of the entries happen before the sidecar
	// (Acquire load of head) overwrites them.
	c.headW.Store(c.head)
	c.released = c.head
}

func (c *consumer) refreshTail() error {
	// [PUBLISH] SeqCst load (≥ Acquire): pairs with the sidecar's Release store of tail.
	tail := c.tailW.Load()
	// SPEC §4: 0 ≤ tail - head ≤ capacity and tail never decreases (checked, not trusted).
	if tail-c.cachedTail > c.capacity || tail-c.head > c.capacity {
		return &ringCorrupt{c.name, c.head, tail}
	}
	c.cachedTail = tail
	return nil
}

type (
	atomicU32 = atomic.Uint32
	atomicU64 = atomic.Uint64
)
