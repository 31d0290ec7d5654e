/**
 * The handshake (SPEC §10) as the agent runs it: the `hello` frame, the addon's connect (socket,
 * reply, SCM_RIGHTS fds, on the libuv pool), the checks of the welcome against this side's own
 * layout computation and against the header the sidecar wrote into the segment (step 3), the
 * mapping, and the ring halves over it. What it returns is everything a Client is made of.
 */

import { z } from 'zod';
import { encodeFrame } from './control';
import { ShmpipeError, type ErrorCode } from './errors';
import * as native from './native';
import type { ResolvedOptions } from './options';
import { computeLayout, decodeHeader, ENTRY_SIZE, GRANT_ENTRY_SIZE, HEADER, HEADER_SIZE, HeaderMismatch, STATE, VERSION, type Layout } from './protocol';
import { Consumer, Producer, SegmentViews } from './ring';

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

/** A session whose handshake succeeded: the Client owns all of it from here on. */
export interface Established {
  layout: ClientLayout;
  views: SegmentViews;
  rings: { sq: Producer; cq: Consumer; gq: Consumer };
  /** The control socket, for net.Socket to adopt. */
  sock: number;
  sqFd: number;
  cqFd: number;
}

/** The sidecar's default part size, for a welcome without limits.part_size. */
const DEFAULT_PART_SIZE = 8 << 20;

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

const REFUSAL_CODES: ReadonlySet<string> = new Set(['SHMPIPE_E_PERMISSION', 'SHMPIPE_E_VERSION', 'SHMPIPE_E_BUSY', 'SHMPIPE_E_HANDSHAKE']);

/** Connects to `o.socketPath` and runs the handshake up to (not including) the `mapped` frame. */
export async function handshake(o: ResolvedOptions): Promise<Established> {
  const hello = {
    type: 'hello',
    version: VERSION,
    slot_count: o.slotCount,
    slot_size: o.slotSize,
    sq_capacity: o.sqCapacity,
    cq_capacity: o.cqCapacity,
    client: o.clientName ?? `node-${process.pid}`,
  };
  const { sock, reply, fds } = await native.connect(o.socketPath, encodeFrame(hello), o.connectTimeoutMs);
  // Until a Client owns them, every failure closes what the handshake handed us.
  try {
    return { ...establish(reply, fds), sock };
  } catch (e) {
    closeAll([sock, ...fds]);
    throw e;
  }
}

/** Closes every fd ≥ 0 in `fds`, best effort (the caller is already failing). */
export function closeAll(fds: number[]): void {
  for (const fd of fds) {
    if (fd < 0) continue;
    try {
      native.close(fd);
    } catch {
      // already failing; the first error is the one to report
    }
  }
}

function handshakeError(code: ErrorCode, message: string, cause?: unknown): ShmpipeError {
  return new ShmpipeError(code, `handshake: ${message}`, { cause });
}

/** Checks the reply and the segment (SPEC §10 step 3); maps it. Closes the segment fd (fds[0] = -1). */
function establish(reply: string, fds: number[]): Omit<Established, 'sock'> {
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
  // The header and rings are faulted in now (the hot path); each slot's pages when first used.
  const segment = native.map(segFd, w.segment_size, expected.slot_offset);
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

  const readReserve = Math.min(w.limits.read_reserve ?? 0, expected.slot_count);
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
    readReserve,
    grantWindow: expected.slot_count - readReserve,
    partSize: w.limits.part_size ?? DEFAULT_PART_SIZE,
  });
  let rings: Established['rings'];
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
