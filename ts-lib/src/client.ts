/**
 * The Client: one session with the sidecar, and connect(), which makes one. The handshake is in
 * handshake.ts, the control socket in control.ts, the request table in requests.ts, slots in
 * slots.ts, the rings in ring.ts, the object-store calls in store.ts; this module ties them
 * together: it submits requests into the SQ, completes them from the CQ and takes slot grants
 * from the GQ.
 *
 * Threading and waiting: everything runs on the JS thread, which never blocks and never spins.
 * - Submissions are written into the SQ at once; the tail is published once per microtask tick
 *   (a batch), then `sidecar_need_wakeup` is loaded and the sq doorbell rung only if set (SPEC §6
 *   P1–P3).
 * - The agent sleeps by returning to the event loop; the addon's uv_poll on the cq doorbell calls
 *   drain(), which consumes CQ and GQ, then stores `agent_need_wakeup = 1` and re-checks both
 *   tails before returning (SPEC §6 C1–C4), so no completion is ever left unannounced.
 * - Calls that find the SQ full, the in-flight budget spent (the smaller of the welcome's
 *   `limits.max_in_flight` and `cq_capacity`, so the CQ never overflows), or no free slot wait
 *   in FIFO order, bounded by `maxQueued` (then SHMPIPE_E_QUEUE_FULL).
 * - Control-socket EOF (the sidecar died) rejects every pending call with SHMPIPE_E_DISCONNECTED
 *   at once; later calls reject with the same code (or SHMPIPE_E_CLOSED after close()).
 *
 * `closed` is a Promise that resolves (never rejects) when the client stops: with undefined after
 * close(), or with the ShmpipeError that ended the session.
 */

import { settle } from './completion';
import { ControlChannel } from './control';
import { ShmpipeError, WIRE_ERROR_CODES } from './errors';
import { Fifo } from './fifo';
import { closeAll, handshake, type ClientLayout } from './handshake';
import * as native from './native';
import { parseOptions, type ConnectOptions, type ResolvedOptions } from './options';
import { CQ_MORE, CQ_SLOT, ENTRY_SIZE, HEADER, MAX_DELAY_US, OP_DELAY, OP_ECHO, OP_NOP, OP_SLOT_RELEASE, OP_STATS } from './protocol';
import { K_DELAY, K_ECHO, K_NOP, K_RAW, K_RELEASE, K_STATS, opName, Request, RequestTable, TWO_32, writeSubmission } from './requests';
import type { EchoResult, RawAccess, RawCompletion, Stats } from './results';
import { Consumer, Producer, RingCorrupt, SegmentViews } from './ring';
import { Slot, type SlotOwner } from './slot';
import { SlotPool } from './slots';
import { Watchdog } from './watchdog';
import * as files from './files';
import * as reads from './read-stream';
import * as store from './store';
import type { StoreCompletion, StoreRequest } from './store-request';

export type { ClientLayout } from './handshake';
export type { EchoResult, RawAccess, RawCompletion, Stats, SessionStats, GlobalStats } from './results';

/** Completions handled in one doorbell callback before yielding to other I/O. */
const DRAIN_BUDGET = 65_536;
/** While calls wait because the SQ is full, re-check its head this often (ms). */
const SQ_FULL_RETRY_MS = 1;

const noop = (): void => {};
const RESOLVED = Promise.resolve();
const violation = (message: string): ShmpipeError => new ShmpipeError('SHMPIPE_E_PROTOCOL', message);
const { SHMPIPE_E_INVALID_SLOT: INVALID_SLOT, SHMPIPE_E_STALE_SLOT: STALE_SLOT, SHMPIPE_E_OUT_OF_RANGE: OUT_OF_RANGE, SHMPIPE_E_UNKNOWN_OPCODE: UNKNOWN_OPCODE } = WIRE_ERROR_CODES;

/** What ends the session for an exception thrown while acting on the sidecar's memory. */
function sessionError(e: unknown): ShmpipeError {
  if (e instanceof ShmpipeError) return e;
  if (e instanceof RingCorrupt) return violation(e.message);
  throw e; // a bug of ours: let it surface
}

/**
 * Whether a consuming op (PUT, WRITE, OPEN_READ, FILE_WRITE, CONTENT_READ) that ended with
 * `status` and without `SLOT` was refused before the sidecar took its slot (SPEC §7.2 steps 1–2:
 * nothing changed), so the slot is still the caller's. `otherUses`: the caller's other requests
 * still naming the slot (INVALID_SLOT then means "in flight", not "not yours"). MALFORMED and
 * SHUTTING_DOWN are also what an accepted op that then failed ends with: the slot may be gone,
 * so it is never reused. Any other status: the op was accepted and consumed the slot.
 */
function untaken(status: number, otherUses: number): boolean {
  return status === UNKNOWN_OPCODE || status === OUT_OF_RANGE || (status === INVALID_SLOT && otherUses > 0);
}

/** Connects to the sidecar at `options.socketPath` and completes the handshake. */
export async function connect(options: ConnectOptions): Promise<Client> {
  const o = parseOptions(options);
  const s = await handshake(o);
  return new Client(o, s.layout, s.views, s.rings, s.sock, s.sqFd, s.cqFd);
}

export class Client implements SlotOwner {
  readonly layout: ClientLayout;
  /** Resolves when the client stops: undefined after close(), else the error that ended it. */
  readonly closed: Promise<ShmpipeError | undefined>;
  readonly raw: RawAccess;

  private views: SegmentViews | null;
  private readonly sq: Producer;
  private readonly cq: Consumer;
  private readonly gq: Consumer;
  private readonly control: ControlChannel;
  private readonly sqFd: number;
  private readonly cqFd: number;
  private watchHandle: native.WatchHandle | null = null;
  private readonly maxQueued: number;
  private readonly sidecarWakeIndex: number;
  private readonly agentWakeIndex: number;

  private readonly requests: RequestTable;
  private readonly queue = new Fifo<Request>();
  private readonly slots: SlotPool;
  private readonly watchdog: Watchdog;
  private flushScheduled = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private drainScheduled = false;
  private failure: ShmpipeError | null = null;
  private resolveClosed!: (v: ShmpipeError | undefined) => void;
  private drainingFlag = false;
  /** Whether an idle open client keeps the event loop alive (ref()/unref()). */
  private refed = true;

  /** @internal Created by connect(). */
  constructor(
    o: ResolvedOptions,
    layout: ClientLayout,
    views: SegmentViews,
    rings: { sq: Producer; cq: Consumer; gq: Consumer },
    sock: number,
    sqFd: number,
    cqFd: number,
  ) {
    this.layout = layout;
    this.views = views;
    this.sq = rings.sq;
    this.cq = rings.cq;
    this.gq = rings.gq;
    this.sqFd = sqFd;
    this.cqFd = cqFd;
    this.maxQueued = o.maxQueued;
    this.sidecarWakeIndex = HEADER.sidecar_need_wakeup / 4;
    this.agentWakeIndex = HEADER.agent_need_wakeup / 4;
    this.requests = new RequestTable(layout.maxInFlight);
    this.slots = new SlotPool(this, views, layout.slotOffset, layout.slotSize, layout.slotCount);
    this.watchdog = new Watchdog(views.b64, o.unresponsiveMs, () => this.busy(), (silentMs) =>
      this.fail(
        new ShmpipeError(
          'SHMPIPE_E_UNRESPONSIVE',
          `the sidecar made no progress for ${silentMs} ms (its heartbeat did not move; unresponsiveMs ${o.unresponsiveMs}): the session is closed`,
        ),
      ),
    );
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });

    try {
      this.control = new ControlChannel(sock, {
        onDraining: () => {
          this.drainingFlag = true;
        },
        onEnd: (err) => this.fail(err),
      });
    } catch (e) {
      closeAll([sock, sqFd, cqFd]);
      throw new ShmpipeError('SHMPIPE_E_HANDSHAKE', 'cannot adopt the control socket', { cause: e });
    }
    this.control.send({ type: 'mapped' });

    this.raw = this.makeRaw();
    try {
      this.watchHandle = native.watch(cqFd, (err) => this.onDoorbell(err));
    } catch (e) {
      this.fail(e instanceof ShmpipeError ? e : new ShmpipeError('SHMPIPE_E_HANDSHAKE', String(e)));
      throw e;
    }
    // Grants may already be waiting; start with a drain, which ends by arming agent_need_wakeup.
    this.drain();
  }

  /** True once the sidecar announced a graceful shutdown. */
  get draining(): boolean {
    return this.drainingFlag;
  }

  /**
   * Lets the process (or worker) exit while this client is open with nothing pending, like
   * net.Socket#unref(): its doorbell watcher and control socket stop keeping the event loop
   * alive. Pending calls always keep it alive (the watchdog's timer runs while any is pending).
   * No effect after the client ended. Returns the client.
   */
  unref(): this {
    if (this.failure !== null || !this.refed) return this;
    this.refed = false;
    this.setRefs(false);
    if (!this.busy()) this.watchdog.stop();
    return this;
  }

  /** Undoes unref(): an open client keeps the event loop alive again (the default). */
  ref(): this {
    if (this.failure !== null || this.refed) return this;
    this.refed = true;
    this.setRefs(true);
    return this;
  }

  private setRefs(ref: boolean): void {
    native.watchRef(this.watchHandle as native.WatchHandle, ref);
    this.control.setRef(ref);
    this.watchdog.setKeepAlive(!ref);
  }

  // ---- public operations --------------------------------------------------------------------

  nop(): Promise<void> {
    return this.submit(K_NOP, OP_NOP, null, 0, 0, 0, null);
  }

  /** Has the sidecar checksum `length` bytes at `offset` of `slot` in place. */
  echo(slot: Slot, length: number, offset = 0): Promise<EchoResult> {
    const bad = this.checkSlot(slot, 'echo');
    if (bad !== null) return Promise.reject(bad);
    if (!Number.isInteger(length) || length < 0 || !Number.isInteger(offset) || offset < 0 || offset + length > slot.capacity) {
      return Promise.reject(
        new ShmpipeError(
          'SHMPIPE_E_INVALID_ARGUMENT',
          `echo: offset ${String(offset)} and length ${String(length)} must be integers with 0 ≤ offset, 0 ≤ length, offset + length ≤ ${slot.capacity}`,
        ),
      );
    }
    return this.submit(K_ECHO, OP_ECHO, slot, offset, length, 0, null);
  }

  /** Has the sidecar wait `us` microseconds (≤ 60 s) before completing; resolves with `us`. */
  delay(us: number): Promise<number> {
    if (!Number.isInteger(us) || us < 0 || us > MAX_DELAY_US) {
      return Promise.reject(new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `delay: ${String(us)} must be an integer number of microseconds in 0..=${MAX_DELAY_US}`));
    }
    return this.submit(K_DELAY, OP_DELAY, null, 0, 0, us, null);
  }

  /** The sidecar's counters for this session and globally (SPEC: STATS). Uses one slot briefly. */
  async stats(): Promise<Stats> {
    const slot = await this.alloc();
    try {
      return await this.submit<Stats>(K_STATS, OP_STATS, slot, 0, slot.capacity, 0, null);
    } finally {
      slot.release();
    }
  }

  // ---- object store (SPEC §7.2; the bodies are in store.ts) ----------------------------------

  /**
   * Stores `length` bytes at `offset` of `slot` as the object `key` (replacing it atomically).
   * The key travels in the same slot, after the data; when it does not fit there, a one-WRITE
   * streaming upload is used. The slot is consumed: do not touch it afterwards.
   */
  put(key: string, slot: Slot, length: number, offset = 0): Promise<store.PutResult> {
    return store.put(this, key, slot, length, offset);
  }

  /** Starts a streaming upload of `key` (multipart underneath); nothing is visible before commit(). */
  openWrite(key: string): Promise<store.Writer> {
    return store.openWrite(this, key);
  }

  /**
   * Reads `key` (or `options.range`) as an async iterable of filled slots, each released when the
   * iteration moves on. Throws SHMPIPE_E_INVALID_ARGUMENT at once for bad arguments.
   */
  openRead(key: string, options?: reads.ReadOptions): reads.ReadStream {
    return reads.openRead(this, key, options);
  }

  /** Size, CRC-32C and modification time of `key`; SHMPIPE_E_NOT_FOUND if there is none. */
  stat(key: string): Promise<store.ObjectInfo> {
    return store.stat(this, key);
  }

  /** The objects under `prefix` (whole path segments), in key order, fetched page by page. */
  list(prefix = '', options?: store.ListOptions): AsyncIterable<store.ListEntry> {
    return store.list(this, prefix, options);
  }

  /** Deletes `key`; succeeds when there was no such object. */
  delete(key: string): Promise<void> {
    return store.del(this, key);
  }

  /** Uploads the file at `path` as `key`, reading it straight into slots. */
  putFile(path: string, key: string, options?: store.FileOptions): Promise<store.PutResult> {
    return files.putFile(this, path, key, options);
  }

  /** Downloads `key` into the file at `path` (via a temporary file, renamed when verified). */
  getFile(key: string, path: string, options?: store.FileOptions): Promise<store.ReadResult> {
    return files.getFile(this, key, path, options);
  }

  /** A free slot; waits (FIFO) for a grant when none is free. No round trip when one is. */
  alloc(): Promise<Slot> {
    if (this.failure !== null) return Promise.reject(this.failed());
    const slot = this.slots.take();
    if (slot !== undefined) return Promise.resolve(slot);
    if (this.queue.length + this.slots.waiting >= this.maxQueued) {
      return Promise.reject(new ShmpipeError('SHMPIPE_E_QUEUE_FULL', `alloc: ${this.maxQueued} calls are already waiting (maxQueued)`));
    }
    this.watchdog.arm();
    return this.slots.wait();
  }

  /** A free slot, or null when none is granted right now. */
  tryAlloc(): Slot | null {
    if (this.failure !== null) throw this.failed();
    return this.slots.take() ?? null;
  }

  /**
   * Ends the session: every pending or waiting call rejects with SHMPIPE_E_CLOSED, the doorbell
   * watcher stops, the fds and the socket close (the sidecar reclaims the session's slots). The
   * mapping is released when the last reference to it (the client, or a Slot's buffer) is
   * garbage collected; Slot buffers must not be used after close. Resolves once the control
   * socket is closed.
   */
  async close(): Promise<void> {
    this.shutdown(new ShmpipeError('SHMPIPE_E_CLOSED', 'the client was closed'), undefined);
    await this.control.closed;
  }

  // ---- SlotOwner ----------------------------------------------------------------------------

  /** @internal */
  releaseSlot(slot: Slot): void {
    if (this.failure !== null) return;
    if (slot.busy > 0) {
      slot.releaseDeferred = true; // sent when its last in-flight request completes
      return;
    }
    this.submit(K_RELEASE, OP_SLOT_RELEASE, slot, 0, 0, 0, null).catch(noop);
  }

  // ---- submission ---------------------------------------------------------------------------

  private checkSlot(slot: Slot, op: string): ShmpipeError | null {
    if (this.failure !== null) return this.failed();
    if (!(slot instanceof Slot)) return new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `${op}: the first argument must be a Slot from alloc()`);
    if (slot.owner !== this) {
      return new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `${op}: slot ${slot.id} was released or belongs to another client`);
    }
    return null;
  }

  private submit<T>(kind: number, opcode: number, slot: Slot | null, offset: number, length: number, arg0: number, raw: Uint8Array | null): Promise<T> {
    if (this.failure !== null) return Promise.reject(this.failed());
    return new Promise<T>((resolve, reject) => {
      this.enqueue(new Request(kind, opcode, slot, offset, length, arg0, raw, resolve as (v: never) => void, reject));
    });
  }

  /**
   * @internal Submits an object-store or backup-engine request (built and validated by store.ts
   * and backup/ops.ts). Resolves with the final completion's numbers; stream chunks go to
   * `q.stream` as they arrive.
   */
  submitStore(q: StoreRequest): Promise<StoreCompletion> {
    if (this.failure !== null) return Promise.reject(this.failed());
    return new Promise<StoreCompletion>((resolve, reject) => {
      const r = new Request(q.kind, q.opcode, q.slot, q.offset, q.length, Number(q.args[0]), null, resolve as (v: never) => void, reject);
      r.arg1 = q.args[1];
      r.arg2 = q.args[2];
      r.weight = Math.max(1, Math.min(q.weight, this.requests.maxInFlight));
      r.consumes = q.consumes;
      r.stream = q.stream;
      this.enqueue(r);
    });
  }

  /** Whether calls are pending: in flight, waiting for ring space or budget, or for a slot. */
  private busy(): boolean {
    return this.requests.inFlight > 0 || this.queue.length > 0 || this.slots.waiting > 0;
  }

  /** Into the SQ now, or into the FIFO behind earlier calls (bounded by maxQueued). */
  private enqueue(r: Request): void {
    this.watchdog.arm();
    const slot = r.slot;
    if (slot !== null) slot.busy++;
    if (this.queue.length === 0 && this.tryPush(r)) return;
    if (this.failure !== null) {
      if (slot !== null) slot.busy--;
      r.reject(this.failed());
      return;
    }
    if (this.queue.length + this.slots.waiting >= this.maxQueued && r.kind !== K_RELEASE) {
      if (slot !== null) slot.busy--;
      r.reject(new ShmpipeError('SHMPIPE_E_QUEUE_FULL', `${this.maxQueued} calls are already waiting for ring space (maxQueued)`));
      return;
    }
    this.queue.push(r);
    this.armRetry();
  }

  /** Writes `r` into the SQ (unpublished) if ring space and in-flight budget allow. */
  private tryPush(r: Request): boolean {
    if (!this.requests.fits(r)) return false;
    let at: number;
    try {
      at = this.sq.reserve(); // may re-read the SQ head the sidecar wrote
    } catch (e) {
      this.fail(sessionError(e));
      return false;
    }
    if (at < 0) return false;
    const views = this.views as SegmentViews;
    this.requests.add(r);
    writeSubmission(views.u32, views.u8, at, r);
    // From here the sidecar may take the slot (and grant it again before we see the completion).
    if (r.slot !== null) {
      if (r.givesUpSlot) this.slots.giveUp(r.slot);
    } else if (r.rawSlot !== null) this.slots.giveUp(r.rawSlot);
    this.sq.commit();
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // A resolved-promise reaction rather than queueMicrotask, which allocates an AsyncResource.
      RESOLVED.then(this.flush);
    }
    return true;
  }

  /** Publishes the batch written this tick and rings the sidecar if it sleeps (SPEC §6 P1–P3). */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const views = this.views;
    if (views === null || this.failure !== null) return;
    // P1: Atomics.store is SeqCst, so it is also the P2 fence before the P3 load below.
    if (this.sq.publish() && Atomics.load(views.i32, this.sidecarWakeIndex) !== 0) {
      try {
        native.ring(this.sqFd);
      } catch (e) {
        this.fail(new ShmpipeError('SHMPIPE_E_DISCONNECTED', 'cannot ring the sq doorbell', { cause: e }));
      }
    }
  };

  /** Moves waiting calls into the SQ while space and budget allow. */
  private pumpQueue(): void {
    let r = this.queue.peek();
    while (r !== undefined && this.tryPush(r)) {
      this.queue.shift();
      r = this.queue.peek();
    }
    if (r !== undefined) this.armRetry();
  }

  /**
   * The SQ head advances without a doorbell, so calls blocked on a full SQ (not on the
   * in-flight budget, which completions release) re-check it on a short timer. It runs only
   * while such calls wait: never while idle.
   */
  private armRetry(): void {
    if (this.retryTimer !== null || this.failure !== null) return;
    const next = this.queue.peek();
    if (next === undefined || !this.requests.fits(next)) return; // completions will pump
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.failure === null) this.guard(() => this.pumpQueue());
    }, SQ_FULL_RETRY_MS);
  }

  // ---- completion ---------------------------------------------------------------------------

  private onDoorbell(err: Error | null): void {
    if (err !== null) {
      this.fail(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `cq doorbell failed: ${err.message}`, { cause: err }));
      return;
    }
    this.drain();
  }

  /** Runs `f`, turning a ring corruption or bad completion into the end of the session. */
  private guard(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.fail(sessionError(e));
    }
  }

  /** Consumes the CQ and GQ, then arms agent_need_wakeup and re-checks (SPEC §6 C1–C6). */
  private drain(): void {
    this.drainScheduled = false;
    if (this.views === null) return;
    this.guard(this.consumeAll);
    // An unref()'d client that has nothing pending any more must not hold the loop for the
    // watchdog's next check.
    if (!this.refed && !this.busy()) this.watchdog.stop();
  }

  private readonly consumeAll = (): void => {
    const i32 = (this.views as SegmentViews).i32;
    Atomics.store(i32, this.agentWakeIndex, 0); // C6: awake
    let budget = DRAIN_BUDGET;
    for (;;) {
      const n = this.cq.consume(this.onCompletion) + this.gq.consume(this.onGrant);
      if (this.queue.length > 0) this.pumpQueue();
      if (this.failure !== null) return;
      budget -= n;
      if (n > 0 && budget > 0) continue;
      if (n > 0) {
        // Long burst: let other I/O in, stay awake (flag 0) and come back right after.
        if (!this.drainScheduled) {
          this.drainScheduled = true;
          setImmediate(() => this.drain());
        }
        return;
      }
      // C1: SeqCst store (Atomics), which is also the C2 fence.
      Atomics.store(i32, this.agentWakeIndex, 1);
      // C3: re-check both tails; C4: work arrived meanwhile, so consume instead of sleeping.
      if (!this.cq.hasNew() && !this.gq.hasNew()) return; // C5: sleep in the event loop
      Atomics.store(i32, this.agentWakeIndex, 0);
    }
  };

  /** A CQ entry (SPEC §5.2) at byte offset `at`; false once the session has ended. */
  private readonly onCompletion = (at: number): boolean => {
    this.complete(at);
    return this.failure === null;
  };

  /** A GQ entry (SPEC §5.3) at byte offset `at`. */
  private readonly onGrant = (at: number): boolean => {
    const u32 = (this.views as SegmentViews).u32;
    const w = at >>> 2;
    this.slots.grant(u32[w]!, u32[w + 1]!);
    return true;
  };

  private complete(at: number): void {
    const views = this.views as SegmentViews;
    const u32 = views.u32;
    const w = at >>> 2;
    const id = u32[w]! + u32[w + 1]! * TWO_32;
    const status = views.i32[w + 2]!;
    const flags = u32[w + 3]!;
    if (u32[w + 14] !== 0 || u32[w + 15] !== 0 || (flags & ~(CQ_MORE | CQ_SLOT)) !== 0 || status > 0) {
      throw violation(`malformed completion for request ${id}`);
    }
    const r = this.requests.get(id);
    if (r === null) throw violation(`completion for unknown request ${id}`);
    const sid = u32[w + 4]!;
    if ((flags & CQ_SLOT) !== 0 && sid >= this.layout.slotCount) throw violation(`completion names slot ${sid} beyond slot_count`);
    if ((flags & CQ_MORE) !== 0) {
      // A stream chunk: a filled slot granted to us (SPEC §7.2 OPEN_READ).
      if (r.stream === null || (flags & CQ_SLOT) === 0 || status !== 0) throw violation(`request ${id} (${opName(r)}) got a completion with MORE that is not a stream chunk`);
      const chunk = this.slots.handOver(sid, u32[w + 5]!, 'stream chunk');
      r.stream.chunk(chunk, u32[w + 6]! + u32[w + 7]! * TWO_32, u32[w + 8]! + u32[w + 9]! * TWO_32, u32[w + 10]! + u32[w + 11]! * TWO_32);
      return;
    }
    // The slot first: a violation found there leaves `r` in the table, which rejects it.
    if (r.slot !== null) this.settleSlot(r, r.slot, flags, status, sid, u32[w + 5]!);
    else if (r.rawSlot !== null) this.settleRawSlot(r.rawSlot, flags, status, sid);
    else if ((flags & CQ_SLOT) !== 0 && r.kind !== K_RAW) throw violation(`completion of request ${id} (${opName(r)}) hands over slot ${sid}; the request named none`);
    this.requests.remove(r);
    settle(r, views, at);
  }

  /**
   * Who holds the request's slot after its final completion (SPEC §7, §7.2 "Consumed slots").
   * A completion with `SLOT` hands that very slot back. Without it: SLOT_RELEASE and consumed
   * slots are gone; a refusal that did not take the slot (steps 1–2: nothing changed) leaves it
   * the caller's, usable; a non-consuming op must not succeed without handing it back.
   */
  private settleSlot(r: Request, slot: Slot, flags: number, status: number, sid: number, sgen: number): void {
    slot.busy--;
    if ((flags & CQ_SLOT) !== 0) {
      if (sid !== slot.id || sgen !== slot.generation || r.kind === K_RELEASE) {
        throw violation(`completion of request ${r.id} (${opName(r)}) hands back slot ${sid} generation ${sgen}; it named slot ${slot.id} generation ${slot.generation}`);
      }
      if (r.givesUpSlot) this.slots.retake(slot);
    } else if (r.kind === K_RELEASE) {
      return; // back in the sidecar's pool (a refused release leaves it there for the session)
    } else if (r.givesUpSlot) {
      if (!untaken(status, slot.busy)) {
        this.slots.drop(slot);
        return;
      }
      this.slots.retake(slot);
    } else if (status === 0) {
      throw violation(`request ${r.id} (${opName(r)}) succeeded without handing back slot ${slot.id}`);
    } else if (status === STALE_SLOT || (status === INVALID_SLOT && slot.busy === 0)) {
      // The sidecar does not count the slot as ours (so it may grant it again): never use it.
      this.slots.drop(slot);
      return;
    }
    if (slot.busy === 0 && slot.releaseDeferred) {
      slot.releaseDeferred = false;
      this.submit(K_RELEASE, OP_SLOT_RELEASE, slot, 0, 0, 0, null).catch(noop);
    }
  }

  /** A raw request named a slot the client holds: it is gone if the request succeeded and kept it. */
  private settleRawSlot(slot: Slot, flags: number, status: number, sid: number): void {
    if ((flags & CQ_SLOT) !== 0 ? sid === slot.id : status !== 0) this.slots.retake(slot);
    else this.slots.drop(slot);
  }

  // ---- raw diagnostics ----------------------------------------------------------------------

  private makeRaw(): RawAccess {
    let segment: Buffer | null = null;
    const raw = {
      submit: (bytes56: Uint8Array): Promise<RawCompletion> => {
        if (!(bytes56 instanceof Uint8Array) || bytes56.byteLength !== ENTRY_SIZE - 8) {
          return Promise.reject(
            new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'raw.submit: expects a Uint8Array of exactly 56 bytes (entry bytes 8..64)'),
          );
        }
        if (this.failure !== null) return Promise.reject(this.failed());
        const bytes = Uint8Array.from(bytes56);
        const v = new DataView(bytes.buffer);
        // Entry bytes 12..20 (here 4..12): slot_id, slot_gen.
        const named = this.slots.find(v.getUint32(4, true), v.getUint32(8, true));
        return new Promise<RawCompletion>((resolve, reject) => {
          const r = new Request(K_RAW, -1, null, 0, 0, 0, bytes, resolve as (v: never) => void, reject);
          r.rawSlot = named;
          this.enqueue(r);
        });
      },
      ringDoorbell: (): void => {
        if (this.failure !== null) throw this.failed();
        native.ring(this.sqFd);
      },
    };
    Object.defineProperty(raw, 'segment', {
      enumerable: true,
      get: (): Buffer => {
        if (this.views === null) throw this.failed();
        segment ??= Buffer.from(this.views.buffer);
        return segment;
      },
    });
    return raw as RawAccess;
  }

  // ---- ending -------------------------------------------------------------------------------

  /** A fresh error with the code that ended the client, for calls made afterwards. */
  private failed(): ShmpipeError {
    const f = this.failure as ShmpipeError;
    return new ShmpipeError(f.code, f.message);
  }

  /** Ends the session because of `err` (disconnect, protocol violation). */
  private fail(err: ShmpipeError): void {
    this.shutdown(err, err);
  }

  private shutdown(err: ShmpipeError, closedValue: ShmpipeError | undefined): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.watchdog.stop();
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.watchHandle !== null) native.unwatch(this.watchHandle);
    this.watchHandle = null;
    closeAll([this.sqFd, this.cqFd]);
    this.control.destroy();
    const reject = (e: { reject: (x: ShmpipeError) => void }): void => e.reject(new ShmpipeError(err.code, err.message));
    for (const r of this.requests.drain()) reject(r);
    for (const r of this.queue.drain()) reject(r);
    // Drop this client's references to the mapping; the addon's finalizer munmaps it once no
    // Slot buffer references it either.
    this.slots.close(err);
    this.views = null;
    this.resolveClosed(closedValue);
  }
}
