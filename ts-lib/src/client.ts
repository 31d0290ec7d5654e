/**
 * The Client: one session with the sidecar. connect() performs the handshake (SPEC §10) through
 * the addon, maps the segment and adopts the control socket; the Client then submits requests
 * into the SQ, completes them from the CQ and takes slot grants from the GQ.
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

import * as net from 'node:net';
import { z } from 'zod';
import { errorFromStatus, ShmpipeError, type ErrorCode } from './errors';
import { Fifo } from './fifo';
import * as native from './native';
import { parseOptions, type ConnectOptions, type ResolvedOptions } from './options';
import {
  computeLayout,
  CQ_MORE,
  CQ_SLOT,
  decodeCompletion,
  decodeHeader,
  ENTRY_SIZE,
  GRANT_ENTRY_SIZE,
  HEADER,
  HEADER_SIZE,
  HeaderMismatch,
  MAX_DELAY_US,
  MAX_FRAME,
  NO_SLOT,
  OPCODES,
  OP_DELAY,
  OP_ECHO,
  OP_NOP,
  OP_SLOT_RELEASE,
  OP_STATS,
  STATE,
  VERSION,
  type Layout,
} from './protocol';
import { Consumer, Producer, RingCorrupt, SegmentViews } from './ring';
import { Slot, type SlotOwner } from './slot';
import * as store from './store';
import {
  K_ABORT,
  K_COMMIT,
  K_DELETE,
  K_ENGINE,
  K_FIRST_STORE,
  K_LIST,
  K_OPEN_READ,
  K_OPEN_WRITE,
  K_PUT,
  K_STAT,
  K_WRITE,
  type StoreCompletion,
  type StoreRequest,
  type StreamSink,
} from './store-request';

/** The negotiated session layout (from the welcome, checked against the segment header). */
export interface ClientLayout {
  readonly session: number;
  readonly generation: string;
  readonly segment: string;
  readonly segmentSize: number;
  readonly sqOffset: number;
  readonly sqCapacity: number;
  readonly cqOffset: number;
  readonly cqCapacity: number;
  readonly gqOffset: number;
  readonly gqCapacity: number;
  readonly slotOffset: number;
  readonly slotCount: number;
  readonly slotSize: number;
  /** Requests this client keeps in flight at most: min(sidecar limit, cqCapacity). */
  readonly maxInFlight: number;
  /** Slots the sidecar keeps out of the GQ for read streams (SPEC §9). */
  readonly readReserve: number;
  /** Slots alloc() can get while no read stream runs: slotCount - readReserve. */
  readonly grantWindow: number;
  /** The store's multipart part size in bytes (what one streaming upload may pin). */
  readonly partSize: number;
}

export interface EchoResult {
  /** Bytes the sidecar checksummed. */
  length: number;
  /** CRC-32C (Castagnoli) of the bytes, as an unsigned 32-bit number. */
  checksum: number;
}

/** A completion exactly as the sidecar wrote it (raw diagnostics). */
export interface RawCompletion {
  requestId: bigint;
  status: number;
  /** The wire code name for a negative status, or null for 0 / unknown codes. */
  code: string | null;
  flags: number;
  slotId: number;
  slotGen: number;
  result: bigint;
  aux: [bigint, bigint, bigint];
}

export interface RawAccess {
  /** Submits entry bytes 8..64 verbatim; the client fills request_id. Resolves with the completion, whatever its status. */
  submit(bytes56: Uint8Array): Promise<RawCompletion>;
  /** The whole mapping (header, rings, slots). Throws SHMPIPE_E_CLOSED after close. */
  readonly segment: Buffer;
  /** Rings the sq doorbell without publishing anything. */
  ringDoorbell(): void;
}

type Counts = Record<string, number>;
export interface SessionStats {
  id: number;
  slot_count: number;
  slots_free: number;
  slots_granted: number;
  slots_in_flight: number;
  grants_total: number;
  returns_total: number;
  requests_total: number;
  requests_by_op: Counts;
  errors_by_code: Counts;
  in_flight_async: number;
}
export interface GlobalStats {
  clients: number;
  sessions_opened: number;
  sessions_closed: number;
  slots_reclaimed_total: number;
  segments_live: number;
  requests_total: number;
  requests_by_op: Counts;
  errors_by_code: Counts;
  protocol_violations: number;
}
export interface Stats {
  session: SessionStats;
  global: GlobalStats;
}

// What to do with a request's completion.
const K_NOP = 0;
const K_ECHO = 1;
const K_RELEASE = 2;
const K_STATS = 3;
const K_DELAY = 4;
const K_RAW = 5;
/** The sidecar's default part size, for a welcome without limits.part_size. */
const DEFAULT_PART_SIZE = 8 << 20;

const TWO_32 = 4294967296;
/** Completions handled in one doorbell callback before yielding to other I/O. */
const DRAIN_BUDGET = 65_536;
/** While calls wait because the SQ is full, re-check its head this often (ms). */
const SQ_FULL_RETRY_MS = 1;

const noop = (): void => {};
const RESOLVED = Promise.resolve();

/** One request: waiting in the FIFO, then in flight. */
class Request {
  /** The request id, assigned when it enters the SQ. */
  id = 0;
  constructor(
    readonly kind: number,
    readonly opcode: number,
    readonly slot: Slot | null,
    readonly offset: number,
    readonly length: number,
    readonly arg0: number,
    readonly raw: Uint8Array | null,
    readonly resolve: (v: never) => void,
    readonly reject: (e: ShmpipeError) => void,
  ) {}
  /** Store ops: arg1 (u64 as number or bigint) and arg2. */
  arg1: number | bigint = 0;
  arg2 = 0;
  /** In-flight units this request takes. */
  weight = 1;
  /** The op consumes its slot (SPEC §7.2). */
  consumes = false;
  stream: StreamSink | null = null;
}

interface AllocWaiter {
  resolve: (s: Slot) => void;
  reject: (e: ShmpipeError) => void;
}

const welcomeSchema = z.object({
  type: z.literal('welcome'),
  version: z.number().int(),
  session: z.number().int().nonnegative(),
  segment: z.string(),
  segment_size: z.number().int().positive(),
  generation: z.string().regex(/^[0-9]{1,20}$/),
  layout: z.object({
    sq_offset: z.number().int(),
    sq_capacity: z.number().int(),
    cq_offset: z.number().int(),
    cq_capacity: z.number().int(),
    gq_offset: z.number().int(),
    gq_capacity: z.number().int(),
    slot_offset: z.number().int(),
    slot_count: z.number().int(),
    slot_size: z.number().int(),
  }),
  limits: z.object({
    max_in_flight: z.number().int().positive(),
    read_reserve: z.number().int().nonnegative().optional(),
    part_size: z.number().int().positive().optional(),
  }),
});
type Welcome = z.infer<typeof welcomeSchema>;

const REFUSAL_CODES: ReadonlySet<string> = new Set([
  'SHMPIPE_E_PERMISSION',
  'SHMPIPE_E_VERSION',
  'SHMPIPE_E_BUSY',
  'SHMPIPE_E_HANDSHAKE',
]);

function frame(msg: object): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  if (body.length > MAX_FRAME) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'control frame too large');
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32LE(body.length, 0);
  body.copy(out, 4);
  return out;
}

/** Connects to the sidecar at `options.socketPath` and completes the handshake. */
export async function connect(options: ConnectOptions): Promise<Client> {
  const o = parseOptions(options);
  const hello = {
    type: 'hello',
    version: VERSION,
    slot_count: o.slotCount,
    slot_size: o.slotSize,
    sq_capacity: o.sqCapacity,
    cq_capacity: o.cqCapacity,
    client: o.clientName ?? `node-${process.pid}`,
  };
  const { sock, reply, fds } = await native.connect(o.socketPath, frame(hello), o.connectTimeoutMs);
  // Until the Client owns them, every failure closes what the handshake handed us.
  let session: Established;
  try {
    session = establish(reply, fds);
  } catch (e) {
    for (const fd of [sock, ...fds]) {
      if (fd < 0) continue;
      try {
        native.close(fd);
      } catch {
        // already failing; the first error is the one to report
      }
    }
    throw e;
  }
  return new Client(o, session.layout, session.views, session.rings, sock, session.sqFd, session.cqFd);
}

interface Established {
  layout: ClientLayout;
  views: SegmentViews;
  rings: { sq: Producer; cq: Consumer; gq: Consumer };
  sqFd: number;
  cqFd: number;
}

function handshakeError(code: ErrorCode, message: string, cause?: unknown): ShmpipeError {
  return new ShmpipeError(code, `handshake: ${message}`, { cause });
}

/** Checks the reply and the segment (SPEC §10 step 3); maps it. Closes the segment fd. */
function establish(reply: string, fds: number[]): Established {
  let msg: unknown;
  try {
    msg = JSON.parse(reply);
  } catch (e) {
    throw handshakeError('SHMPIPE_E_HANDSHAKE', 'the reply is not JSON', e);
  }
  const m = msg as { type?: unknown; code?: unknown; message?: unknown };
  if (m !== null && typeof m === 'object' && m.type === 'error') {
    const code = typeof m.code === 'string' && REFUSAL_CODES.has(m.code) ? (m.code as ErrorCode) : 'SHMPIPE_E_HANDSHAKE';
    throw new ShmpipeError(code, `the sidecar refused the connection: ${String(m.message ?? m.code)}`);
  }
  const parsed = welcomeSchema.safeParse(msg);
  if (!parsed.success) {
    throw handshakeError('SHMPIPE_E_HANDSHAKE', `unexpected reply: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  const w: Welcome = parsed.data;
  if (w.version !== VERSION) throw handshakeError('SHMPIPE_E_VERSION', `the sidecar speaks version ${w.version}, this client ${VERSION}`);
  if (fds.length !== 3) throw handshakeError('SHMPIPE_E_HANDSHAKE', `expected 3 file descriptors, got ${fds.length}`);
  const [segFd, sqFd, cqFd] = fds as [number, number, number];

  // The layout this side computes from the negotiated parameters must equal the welcome's ...
  let expected: Layout;
  try {
    expected = computeLayout(w.layout);
  } catch (e) {
    throw handshakeError('SHMPIPE_E_HANDSHAKE', `bad layout parameters: ${(e as Error).message}`, e);
  }
  const mismatch = (['sq_offset', 'cq_offset', 'gq_offset', 'gq_capacity', 'slot_offset'] as const).find((k) => expected[k] !== w.layout[k]);
  if (mismatch !== undefined || expected.segment_size !== w.segment_size) {
    throw handshakeError('SHMPIPE_E_HANDSHAKE', `welcome layout field ${mismatch ?? 'segment_size'} disagrees with SPEC §4`);
  }

  // ... and the header the sidecar wrote into the segment (SPEC §10 step 3).
  const segment = native.map(segFd, w.segment_size);
  native.close(segFd); // the mapping keeps the memory; the fd is no longer needed
  fds[0] = -1;
  const views = new SegmentViews(segment);
  // READY is stored last with Release; this SeqCst load acquires the whole layout (SPEC §3).
  const state = Atomics.load(views.u32, HEADER.state / 4);
  if (state !== STATE.READY) throw handshakeError('SHMPIPE_E_HANDSHAKE', `segment state is ${state}, not READY`);
  let header: { layout: Layout; generation: bigint };
  try {
    header = decodeHeader(new Uint8Array(segment, 0, HEADER_SIZE));
  } catch (e) {
    if (e instanceof HeaderMismatch) {
      throw handshakeError(e.field === 'version' ? 'SHMPIPE_E_VERSION' : 'SHMPIPE_E_HANDSHAKE', e.message, e);
    }
    throw e;
  }
  const bad = (Object.keys(expected) as (keyof Layout)[]).find((k) => header.layout[k] !== expected[k]);
  if (bad !== undefined) throw handshakeError('SHMPIPE_E_HANDSHAKE', `segment header ${bad} disagrees with the welcome`);
  if (header.generation !== BigInt(w.generation)) throw handshakeError('SHMPIPE_E_HANDSHAKE', 'segment generation disagrees with the welcome');

  const layout: ClientLayout = Object.freeze({
    session: w.session,
    generation: w.generation,
    segment: w.segment,
    segmentSize: expected.segment_size,
    sqOffset: expected.sq_offset,
    sqCapacity: expected.sq_capacity,
    cqOffset: expected.cq_offset,
    cqCapacity: expected.cq_capacity,
    gqOffset: expected.gq_offset,
    gqCapacity: expected.gq_capacity,
    slotOffset: expected.slot_offset,
    slotCount: expected.slot_count,
    slotSize: expected.slot_size,
    // Requests count one unit each, read streams 1 + read-ahead (their most completions at
    // once), so keeping at most cq_capacity units in flight means the CQ can never overflow: a
    // full CQ would park completions in the sidecar's overflow list, which it retries on a 1 ms
    // poll (measured: 3x lower throughput).
    maxInFlight: Math.min(w.limits.max_in_flight, expected.cq_capacity),
    readReserve: Math.min(w.limits.read_reserve ?? 0, expected.slot_count),
    grantWindow: expected.slot_count - Math.min(w.limits.read_reserve ?? 0, expected.slot_count),
    partSize: w.limits.part_size ?? DEFAULT_PART_SIZE,
  });
  let rings: { sq: Producer; cq: Consumer; gq: Consumer };
  try {
    rings = {
      sq: new Producer(views, 'SQ', layout.sqOffset, layout.sqCapacity, ENTRY_SIZE),
      cq: new Consumer(views, 'CQ', layout.cqOffset, layout.cqCapacity, ENTRY_SIZE),
      gq: new Consumer(views, 'GQ', layout.gqOffset, layout.gqCapacity, GRANT_ENTRY_SIZE),
    };
  } catch (e) {
    throw handshakeError('SHMPIPE_E_PROTOCOL', (e as Error).message, e);
  }
  return { layout, views, rings, sqFd, cqFd };
}

export class Client implements SlotOwner {
  readonly layout: ClientLayout;
  /** Resolves when the client stops: undefined after close(), else the error that ended it. */
  readonly closed: Promise<ShmpipeError | undefined>;
  readonly raw: RawAccess;

  private views: SegmentViews | null;
  private sq: Producer;
  private cq: Consumer;
  private gq: Consumer;
  private readonly socket: net.Socket;
  private readonly sqFd: number;
  private readonly cqFd: number;
  private watchHandle: native.WatchHandle | null = null;
  private readonly maxQueued: number;
  private readonly maxInFlight: number;
  private readonly sidecarWakeIndex: number;
  private readonly agentWakeIndex: number;

  /**
   * In-flight requests by `id & pendingMask`. An array, not a Map: a Map's old-space backing
   * store made every request survive scavenges (measured: half the CPU in GC, 1.1 M vs 2+ M
   * req/s). Twice the in-flight budget, so a free index is always near.
   */
  private readonly pending: (Request | null)[];
  private readonly pendingMask: number;
  private nextId = 1;
  private inFlight = 0;
  private readonly queue = new Fifo<Request>();
  private readonly allocWaiters = new Fifo<AllocWaiter>();
  private freeSlots: Slot[] = [];
  private readonly slotBuffers: (Buffer | undefined)[];
  private flushScheduled = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private drainScheduled = false;
  private failure: ShmpipeError | null = null;
  private resolveClosed!: (v: ShmpipeError | undefined) => void;
  private socketClosed: Promise<void>;
  private frameBuf: Buffer = Buffer.alloc(0);
  private drainingFlag = false;

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
    this.maxInFlight = layout.maxInFlight;
    this.sidecarWakeIndex = HEADER.sidecar_need_wakeup / 4;
    this.agentWakeIndex = HEADER.agent_need_wakeup / 4;
    this.slotBuffers = new Array<Buffer | undefined>(layout.slotCount);
    const tableSize = 2 ** Math.ceil(Math.log2(Math.max(2, layout.maxInFlight) * 2));
    this.pending = new Array<Request | null>(tableSize).fill(null);
    this.pendingMask = tableSize - 1;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });

    // Node adopts the control socket: it gives EOF detection and frame writes without more
    // native code. The socket is only used for the `mapped` frame, `draining`, and EOF.
    try {
      this.socket = new net.Socket({ fd: sock, readable: true, writable: true });
    } catch (e) {
      for (const fd of [sock, sqFd, cqFd]) native.close(fd);
      throw new ShmpipeError('SHMPIPE_E_HANDSHAKE', 'cannot adopt the control socket', { cause: e });
    }
    this.socketClosed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.on('data', (chunk: Buffer) => this.onFrameBytes(chunk));
    const gone = (why: string) => () =>
      this.fail(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `the sidecar is gone (${why} on the control socket)`));
    this.socket.on('end', gone('EOF'));
    this.socket.on('close', gone('close'));
    this.socket.on('error', (e: Error) =>
      this.fail(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `control socket error: ${e.message}`, { cause: e })),
    );
    this.socket.write(frame({ type: 'mapped' }));

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
  openRead(key: string, options?: store.ReadOptions): store.ReadStream {
    return store.openRead(this, key, options);
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
    return store.putFile(this, path, key, options);
  }

  /** Downloads `key` into the file at `path` (via a temporary file, renamed when verified). */
  getFile(key: string, path: string, options?: store.FileOptions): Promise<store.ReadResult> {
    return store.getFile(this, key, path, options);
  }

  /** A free slot; waits (FIFO) for a grant when none is free. No round trip when one is. */
  alloc(): Promise<Slot> {
    if (this.failure !== null) return Promise.reject(this.failed());
    const slot = this.freeSlots.pop();
    if (slot !== undefined) return Promise.resolve(slot);
    if (this.queue.length + this.allocWaiters.length >= this.maxQueued) {
      return Promise.reject(new ShmpipeError('SHMPIPE_E_QUEUE_FULL', `alloc: ${this.maxQueued} calls are already waiting (maxQueued)`));
    }
    return new Promise((resolve, reject) => this.allocWaiters.push({ resolve, reject }));
  }

  /** A free slot, or null when none is granted right now. */
  tryAlloc(): Slot | null {
    if (this.failure !== null) throw this.failed();
    return this.freeSlots.pop() ?? null;
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
    await this.socketClosed;
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
      r.weight = Math.max(1, Math.min(q.weight, this.maxInFlight));
      r.consumes = q.consumes;
      r.stream = q.stream;
      this.enqueue(r);
    });
  }

  /** Into the SQ now, or into the FIFO behind earlier calls (bounded by maxQueued). */
  private enqueue(r: Request): void {
    const slot = r.slot;
    if (slot !== null) slot.busy++;
    if (this.queue.length === 0 && this.tryPush(r)) return;
    if (this.queue.length + this.allocWaiters.length >= this.maxQueued && r.kind !== K_RELEASE) {
      if (slot !== null) slot.busy--;
      r.reject(new ShmpipeError('SHMPIPE_E_QUEUE_FULL', `${this.maxQueued} calls are already waiting for ring space (maxQueued)`));
      return;
    }
    this.queue.push(r);
    this.armRetry();
  }



  /** Writes `r` into the SQ (unpublished) if ring space and in-flight budget allow. */
  private tryPush(r: Request): boolean {
    if (this.inFlight + r.weight > this.maxInFlight) return false;
    const at = this.sq.reserve();
    if (at < 0) return false;
    const u32 = (this.views as SegmentViews).u32;
    // Ids count up; one whose table index is still held by a long-running request is skipped.
    let id = this.nextId;
    while (this.pending[id & this.pendingMask] !== null) id++;
    this.nextId = id + 1;
    r.id = id;
    const w = at >>> 2;
    u32[w] = id >>> 0;
    u32[w + 1] = (id / TWO_32) >>> 0;
    if (r.raw !== null) {
      (this.views as SegmentViews).u8.set(r.raw, at + 8);
    } else {
      const slot = r.slot;
      u32[w + 2] = r.opcode; // flags 0, reserved0 0
      u32[w + 3] = slot === null ? NO_SLOT : slot.id;
      u32[w + 4] = slot === null ? 0 : slot.generation;
      u32[w + 5] = r.offset;
      u32[w + 6] = r.length;
      u32[w + 7] = 0;
      u32[w + 8] = r.arg0 >>> 0;
      u32[w + 9] = (r.arg0 / TWO_32) >>> 0;
      if (r.kind < K_FIRST_STORE) {
        u32[w + 10] = 0;
        u32[w + 11] = 0;
        u32[w + 12] = 0;
        u32[w + 13] = 0;
      } else {
        const a1 = r.arg1;
        if (typeof a1 === 'bigint') {
          u32[w + 10] = Number(a1 & 0xffff_ffffn);
          u32[w + 11] = Number(a1 >> 32n);
        } else {
          u32[w + 10] = a1 >>> 0;
          u32[w + 11] = (a1 / TWO_32) >>> 0;
        }
        u32[w + 12] = r.arg2 >>> 0;
        u32[w + 13] = 0;
      }
      u32[w + 14] = 0;
      u32[w + 15] = 0;
    }
    this.sq.commit();
    this.pending[id & this.pendingMask] = r;
    this.inFlight += r.weight;
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
    if (this.inFlight + (this.queue.peek()?.weight ?? 1) > this.maxInFlight) return; // completions will pump
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
      if (e instanceof ShmpipeError) this.fail(e);
      else if (e instanceof RingCorrupt) this.fail(new ShmpipeError('SHMPIPE_E_PROTOCOL', e.message, { cause: e }));
      else throw e;
    }
  }

  /** Consumes the CQ and GQ, then arms agent_need_wakeup and re-checks (SPEC §6 C1–C6). */
  private drain(): void {
    this.drainScheduled = false;
    if (this.views === null) return;
    const i32 = this.views.i32;
    this.guard(() => {
      Atomics.store(i32, this.agentWakeIndex, 0); // C6: awake
      let budget = DRAIN_BUDGET;
      for (;;) {
        const n = this.drainCq() + this.drainGq();
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
    });
  }

  private drainCq(): number {
    const n = this.cq.available();
    if (n === 0) return 0;
    for (let i = 0; i < n && this.failure === null; i++) this.complete(this.cq.offsetAt(i));
    if (this.failure !== null) return 0;
    this.cq.advance(n);
    this.cq.release();
    return n;
  }

  private complete(at: number): void {
    const views = this.views as SegmentViews;
    const u32 = views.u32;
    const w = at >>> 2;
    const id = u32[w]! + u32[w + 1]! * TWO_32;
    const status = views.i32[w + 2]!;
    const flags = u32[w + 3]!;
    if (u32[w + 14] !== 0 || u32[w + 15] !== 0 || (flags & ~(CQ_MORE | CQ_SLOT)) !== 0 || status > 0) {
      throw new ShmpipeError('SHMPIPE_E_PROTOCOL', `malformed completion for request ${id}`);
    }
    const r = this.pending[id & this.pendingMask];
    if (r === null || r === undefined || r.id !== id) throw new ShmpipeError('SHMPIPE_E_PROTOCOL', `completion for unknown request ${id}`);
    if ((flags & CQ_SLOT) !== 0 && u32[w + 4]! >= this.layout.slotCount) {
      throw new ShmpipeError('SHMPIPE_E_PROTOCOL', `completion names slot ${u32[w + 4]} beyond slot_count`);
    }
    if ((flags & CQ_MORE) !== 0) {
      // A stream chunk: a filled slot granted to us (SPEC §7.2 OPEN_READ).
      if (r.stream !== null && (flags & CQ_SLOT) !== 0) {
        const sid = u32[w + 4]!;
        const chunk = new Slot(this, sid, u32[w + 5]!, this.slotBuffer(sid));
        r.stream.chunk(chunk, u32[w + 6]! + u32[w + 7]! * TWO_32, u32[w + 8]! + u32[w + 9]! * TWO_32, u32[w + 10]! + u32[w + 11]! * TWO_32);
      }
      return;
    }
    this.pending[id & this.pendingMask] = null;
    this.inFlight -= r.weight;
    const slot = r.slot;
    if (slot !== null) {
      slot.busy--;
      if (r.consumes && (flags & CQ_SLOT) === 0) {
        // Consumed (PUT, WRITE, an opened OPEN_READ): the slot is the sidecar's now.
        slot.owner = null;
        slot.releaseDeferred = false;
      } else if (slot.busy === 0 && slot.releaseDeferred) {
        slot.releaseDeferred = false;
        this.submit(K_RELEASE, OP_SLOT_RELEASE, slot, 0, 0, 0, null).catch(noop);
      }
    }
    if (r.kind === K_RAW) {
      const c = decodeCompletion(views.u8, at);
      const code = c.status < 0 ? errorFromStatus(c.status, 'raw').code : null;
      (r.resolve as (v: RawCompletion) => void)({
        requestId: c.request_id,
        status: c.status,
        code: code === 'SHMPIPE_E_PROTOCOL' ? null : code,
        flags: c.flags,
        slotId: c.slot_id,
        slotGen: c.slot_gen,
        result: c.result,
        aux: c.aux,
      });
      return;
    }
    if (status !== 0) {
      // Store failures whose slot came back carry the store's message in it (SPEC §7.2).
      let detail: string | undefined;
      const n = u32[w + 6]!;
      if (r.kind >= K_FIRST_STORE && slot !== null && (flags & CQ_SLOT) !== 0 && n > 0 && n <= slot.capacity && u32[w + 7] === 0) {
        detail = slot.buffer.toString('utf8', 0, n);
      }
      r.reject(errorFromStatus(status, (r.kind === K_ENGINE ? ENGINE_OP_NAMES.get(r.opcode) : OP_NAMES[r.kind]) ?? 'request', detail));
      return;
    }
    const result = u32[w + 6]! + u32[w + 7]! * TWO_32;
    switch (r.kind) {
      case K_ECHO:
        (r.resolve as (v: EchoResult) => void)({ length: result, checksum: u32[w + 8]! });
        return;
      case K_DELAY:
        (r.resolve as (v: number) => void)(result);
        return;
      case K_STATS:
        this.completeStats(r, result);
        return;
      case K_PUT:
      case K_OPEN_WRITE:
      case K_WRITE:
      case K_COMMIT:
      case K_ABORT:
      case K_OPEN_READ:
      case K_STAT:
      case K_LIST:
      case K_DELETE:
      case K_ENGINE:
        (r.resolve as (v: StoreCompletion) => void)({ result, aux0: u32[w + 8]! + u32[w + 9]! * TWO_32, aux1: u32[w + 10]! + u32[w + 11]! * TWO_32 });
        return;
      default:
        (r.resolve as (v: undefined) => void)(undefined);
    }
  }

  private completeStats(r: Request, length: number): void {
    const slot = r.slot as Slot;
    if (length > slot.capacity) {
      r.reject(new ShmpipeError('SHMPIPE_E_PROTOCOL', `STATS result ${length} exceeds the slot`));
      return;
    }
    try {
      (r.resolve as (v: Stats) => void)(JSON.parse(slot.buffer.toString('utf8', 0, length)) as Stats);
    } catch (e) {
      r.reject(new ShmpipeError('SHMPIPE_E_PROTOCOL', 'STATS returned invalid JSON', { cause: e }));
    }
  }

  private drainGq(): number {
    const n = this.gq.available();
    if (n === 0) return 0;
    const u32 = (this.views as SegmentViews).u32;
    for (let i = 0; i < n; i++) {
      const w = this.gq.offsetAt(i) >>> 2;
      const id = u32[w]!;
      const gen = u32[w + 1]!;
      if (id >= this.layout.slotCount) throw new ShmpipeError('SHMPIPE_E_PROTOCOL', `grant names slot ${id} beyond slot_count`);
      const slot = new Slot(this, id, gen, this.slotBuffer(id));
      const waiter = this.allocWaiters.shift();
      if (waiter !== undefined) waiter.resolve(slot);
      else this.freeSlots.push(slot);
    }
    this.gq.advance(n);
    this.gq.release();
    return n;
  }

  /** The Buffer viewing slot `id`, made once per slot and reused for every grant of it. */
  private slotBuffer(id: number): Buffer {
    let b = this.slotBuffers[id];
    if (b === undefined) {
      const views = this.views as SegmentViews;
      b = Buffer.from(views.buffer, this.layout.slotOffset + id * this.layout.slotSize, this.layout.slotSize);
      this.slotBuffers[id] = b;
    }
    return b;
  }

  // ---- control socket -----------------------------------------------------------------------

  private onFrameBytes(chunk: Buffer): void {
    this.frameBuf = this.frameBuf.length === 0 ? chunk : Buffer.concat([this.frameBuf, chunk]);
    while (this.frameBuf.length >= 4) {
      const len = this.frameBuf.readUInt32LE(0);
      if (len > MAX_FRAME) {
        this.fail(new ShmpipeError('SHMPIPE_E_PROTOCOL', `control frame of ${len} bytes exceeds ${MAX_FRAME}`));
        return;
      }
      if (this.frameBuf.length < 4 + len) return;
      const body = this.frameBuf.subarray(4, 4 + len).toString('utf8');
      this.frameBuf = this.frameBuf.subarray(4 + len);
      let msg: { type?: unknown; code?: unknown; message?: unknown };
      try {
        msg = JSON.parse(body) as typeof msg;
      } catch {
        this.fail(new ShmpipeError('SHMPIPE_E_PROTOCOL', 'control frame is not JSON'));
        return;
      }
      if (msg.type === 'draining') this.drainingFlag = true;
      else if (msg.type === 'error') {
        this.fail(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `the sidecar ended the session: ${String(msg.code)} ${String(msg.message ?? '')}`));
        return;
      }
      // Unknown frame types are ignored: later versions may add notices.
    }
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
        return this.submit<RawCompletion>(K_RAW, -1, null, 0, 0, 0, Uint8Array.from(bytes56));
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
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.watchHandle !== null) native.unwatch(this.watchHandle);
    this.watchHandle = null;
    for (const fd of [this.sqFd, this.cqFd]) {
      try {
        native.close(fd);
      } catch {
        // closing is best effort; nothing more can be done with the fd
      }
    }
    this.socket.destroy();
    const reject = (e: { reject: (x: ShmpipeError) => void }): void => e.reject(new ShmpipeError(err.code, err.message));
    const inFlight = this.pending.filter((r): r is Request => r !== null).sort((a, b) => a.id - b.id);
    this.pending.fill(null);
    this.inFlight = 0;
    for (const r of inFlight) reject(r);
    for (const r of this.queue.drain()) reject(r);
    for (const w of this.allocWaiters.drain()) reject(w);
    for (const s of this.freeSlots) s.owner = null;
    this.freeSlots = [];
    // Drop this client's references to the mapping; the addon's finalizer munmaps it once no
    // Slot buffer references it either.
    this.views = null;
    this.slotBuffers.fill(undefined);
    this.resolveClosed(closedValue);
  }
}

/** Backup-engine ops by opcode, for error messages: REPO_OPEN → "repo_open". */
const ENGINE_OP_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(OPCODES).map(([name, code]) => [code, name.toLowerCase()]));

const OP_NAMES: Record<number, string> = {
  [K_NOP]: 'nop',
  [K_ECHO]: 'echo',
  [K_RELEASE]: 'release',
  [K_STATS]: 'stats',
  [K_DELAY]: 'delay',
  [K_PUT]: 'put',
  [K_OPEN_WRITE]: 'openWrite',
  [K_WRITE]: 'write',
  [K_COMMIT]: 'commit',
  [K_ABORT]: 'abort',
  [K_OPEN_READ]: 'openRead',
  [K_STAT]: 'stat',
  [K_LIST]: 'list',
  [K_DELETE]: 'delete',
};
