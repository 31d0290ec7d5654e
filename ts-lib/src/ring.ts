/**
 * The agent's halves of the three SPSC rings (SPEC §4) over the mapped segment: the SQ producer
 * and the CQ/GQ consumers. Positions are u64 in shared memory, read and written with Atomics on
 * a BigUint64Array (Atomics.* are sequentially consistent, which covers every Acquire/Release
 * the SPEC asks for); entry bytes are plain typed-array loads/stores ordered by those positions.
 * Each half keeps its own position privately and re-reads the peer's only when its cached copy
 * says full (producer) or empty (consumer). Positions are kept as JS numbers: they start at the
 * value found at connect (0 for a fresh segment) and grow by one per entry, so they stay far
 * below 2^53.
 *
 * Ordering pairs (the Rust side labels the same names in shm-protocol/src/ring.rs):
 * - [PUBLISH] Producer.publish `Atomics.store(tail)` ↔ the sidecar's Acquire load of the SQ tail;
 *   Consumer.available `Atomics.load(tail)` ↔ the sidecar's Release store of the CQ/GQ tail.
 * - [RELEASE] Consumer.consume `Atomics.store(head)` ↔ the sidecar producer's Acquire load of
 *   head; Producer.refreshHead `Atomics.load(head)` ↔ the sidecar consumer's Release store.
 */

import { RING } from './protocol';

/** Typed-array views of one mapped segment, created once per connection. */
export class SegmentViews {
  readonly u8: Uint8Array;
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  readonly b64: BigUint64Array;

  constructor(readonly buffer: ArrayBuffer) {
    this.u8 = new Uint8Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.i32 = new Int32Array(buffer);
    this.b64 = new BigUint64Array(buffer);
  }
}

/** The peer broke the position invariants of SPEC §4; the session must end. */
export class RingCorrupt extends Error {
  constructor(ring: string, head: number, tail: number | bigint) {
    super(`${ring} ring positions are corrupt: head ${head}, tail ${tail}`);
  }
}

const MAX_POSITION = Number.MAX_SAFE_INTEGER;

/** The position stored at `index` of `b64`, as a number (rejecting values beyond 2^53). */
function loadPosition(b64: BigUint64Array, index: number): number {
  const v = Atomics.load(b64, index);
  return v <= BigInt(MAX_POSITION) ? Number(v) : -1;
}

/**
 * What both halves share: the ring's geometry and the validated positions found at connect
 * (SPEC §4: 0 ≤ tail - head ≤ capacity).
 */
abstract class RingHalf {
  readonly capacity: number;
  protected readonly mask: number;
  protected readonly tailIndex: number;
  protected readonly headIndex: number;
  protected readonly entries: number;
  protected readonly initialHead: number;
  protected readonly initialTail: number;

  constructor(
    protected readonly views: SegmentViews,
    protected readonly name: string,
    offset: number,
    capacity: number,
    protected readonly entrySize: number,
  ) {
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.tailIndex = (offset + RING.tail) / 8;
    this.headIndex = (offset + RING.head) / 8;
    this.entries = offset + RING.entries;
    const tail = loadPosition(views.b64, this.tailIndex);
    const head = loadPosition(views.b64, this.headIndex);
    if (tail < 0 || head < 0 || tail - head < 0 || tail - head > capacity) throw new RingCorrupt(name, head, tail);
    this.initialHead = head;
    this.initialTail = tail;
  }
}

/** The SQ: the agent writes 64-byte submissions, the sidecar consumes them. */
export class Producer extends RingHalf {
  private tail: number;
  private published: number;
  private cachedHead: number;

  constructor(views: SegmentViews, name: string, offset: number, capacity: number, entrySize: number) {
    super(views, name, offset, capacity, entrySize);
    this.tail = this.initialTail;
    this.published = this.initialTail;
    this.cachedHead = this.initialHead;
  }

  /** Free entries, re-reading the consumer's head only when the cache says full. */
  free(): number {
    if (this.tail - this.cachedHead === this.capacity) this.refreshHead();
    return this.capacity - (this.tail - this.cachedHead);
  }

  /**
   * Byte offset of the entry at the tail, which the caller fills and then commit()s; -1 when full.
   */
  reserve(): number {
    if (this.tail - this.cachedHead === this.capacity) {
      this.refreshHead();
      if (this.tail - this.cachedHead === this.capacity) return -1;
    }
    return this.entries + (this.tail & this.mask) * this.entrySize;
  }

  commit(): void {
    this.tail++;
  }

  /** Entries written but not yet published. */
  unpublished(): number {
    return this.tail - this.published;
  }

  /** Makes every committed entry visible (SPEC §6 P1). Returns whether anything was new. */
  publish(): boolean {
    if (this.tail === this.published) return false;
    // [PUBLISH] SeqCst store (≥ Release): entries written above are visible to the sidecar's
    // Acquire load of tail. Being SeqCst it is also the P2 fence before the need_wakeup load.
    Atomics.store(this.views.b64, this.tailIndex, BigInt(this.tail));
    this.published = this.tail;
    return true;
  }

  private refreshHead(): void {
    // [RELEASE] SeqCst load (≥ Acquire): pairs with the sidecar's Release store of SQ head.
    const head = loadPosition(this.views.b64, this.headIndex);
    // SPEC §4: 0 ≤ tail - head ≤ capacity, and head never decreases.
    if (head < this.cachedHead || head > this.tail || this.tail - head > this.capacity) {
      throw new RingCorrupt(this.name, head, this.tail);
    }
    this.cachedHead = head;
  }
}

/**
 * The CQ or GQ: the sidecar produces, the agent consumes. One implementation for both; they
 * differ only in entry size and in what the client does with an entry (`consume`'s visitor).
 */
export class Consumer extends RingHalf {
  private head: number;
  private cachedTail: number;

  constructor(views: SegmentViews, name: string, offset: number, capacity: number, entrySize: number) {
    super(views, name, offset, capacity, entrySize);
    this.head = this.initialHead;
    this.cachedTail = this.initialHead;
  }

  /**
   * Entries ready to read. Re-reads the producer's tail (validating it, SPEC §4) only when
   * everything cached has been consumed.
   */
  available(): number {
    if (this.cachedTail === this.head) this.refreshTail();
    return this.cachedTail - this.head;
  }

  /** Whether the shared tail shows unread entries (the C3 re-check before sleeping). */
  hasNew(): boolean {
    this.refreshTail();
    return this.cachedTail !== this.head;
  }

  /**
   * Reads every entry available now, in order: `visit(byteOffset)` for each, then one store of
   * head hands them all back (a batch). Returns how many were read. When `visit` returns false
   * (the session ended meanwhile) it stops there and hands nothing back.
   */
  consume(visit: (at: number) => boolean): number {
    const n = this.available();
    if (n === 0) return 0;
    const head = this.head;
    for (let i = 0; i < n; i++) {
      if (!visit(this.entries + ((head + i) & this.mask) * this.entrySize)) return 0;
    }
    this.head = head + n;
    // [RELEASE] SeqCst store (≥ Release): our reads of those entries happen before the sidecar
    // (Acquire load of head) overwrites them.
    Atomics.store(this.views.b64, this.headIndex, BigInt(this.head));
    return n;
  }

  private refreshTail(): void {
    // [PUBLISH] SeqCst load (≥ Acquire): pairs with the sidecar's Release store of tail.
    const tail = loadPosition(this.views.b64, this.tailIndex);
    // SPEC §4: 0 ≤ tail - head ≤ capacity and tail never decreases (hostile-peer check).
    if (tail < this.cachedTail || tail - this.head > this.capacity) throw new RingCorrupt(this.name, this.head, tail);
    this.cachedTail = tail;
  }
}
