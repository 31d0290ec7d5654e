/**
 * The shared-memory protocol as the agent sees it (SPEC.md §2–§7): constants, header and ring
 * offsets, layout arithmetic, and reference encoders/decoders for the header and the entries.
 *
 * These reference codecs use bigint fields and work on any byte array; they are checked byte for
 * byte against shm-protocol/vectors/vectors.json by test/vectors.test.js. The hot path in
 * ring.ts/client.ts writes the same offsets directly into typed-array views of the segment.
 */

import { WIRE_ERROR_CODES, type WireErrorCode } from './errors';

/** `"SHMPIPE\0"` read as a little-endian u64. */
export const MAGIC = 0x0045_5049_504d_4853n;
export const VERSION = 1;
export const HEADER_SIZE = 4096;
export const PAGE_SIZE = 4096;
export const CACHE_LINE = 128;
export const ENTRY_SIZE = 64;
export const GRANT_ENTRY_SIZE = 8;
export const RING_HEADER_SIZE = 256;
export const NO_SLOT = 0xffff_ffff;
export const MIN_RING_CAPACITY = 2;
export const MAX_RING_CAPACITY = 65_536;
export const MAX_SLOT_COUNT = 65_535;
export const MAX_SLOT_SIZE = 1 << 30;
/** DELAY's `arg0` bound (SPEC §7): 60 s in microseconds. */
export const MAX_DELAY_US = 60_000_000;
/** Control-socket frames carry at most this many JSON bytes (SPEC §10). */
export const MAX_FRAME = 64 * 1024;

/** Header field offsets (SPEC §3). */
export const HEADER = Object.freeze({
  magic: 0,
  version: 8,
  header_size: 12,
  segment_size: 16,
  generation: 24,
  entry_size: 32,
  grant_entry_size: 36,
  sq_offset: 40,
  sq_capacity: 48,
  cq_capacity: 52,
  cq_offset: 56,
  gq_offset: 64,
  gq_capacity: 72,
  slot_count: 76,
  slot_offset: 80,
  slot_size: 88,
  flags: 92,
  static_end: 96,
  state: 128,
  sidecar_heartbeat: 256,
  sidecar_need_wakeup: 384,
  agent_need_wakeup: 512,
});

/** Offsets inside a ring region (SPEC §4). */
export const RING = Object.freeze({ tail: 0, head: 128, entries: RING_HEADER_SIZE });

export const OPCODES = Object.freeze({
  NOP: 0,
  ECHO: 1,
  SLOT_RELEASE: 2,
  STATS: 3,
  DELAY: 4,
  PUT: 16,
  OPEN_WRITE: 17,
  WRITE: 18,
  COMMIT: 19,
  ABORT: 20,
  OPEN_READ: 21,
  STAT: 22,
  LIST: 23,
  DELETE: 24,
  // Backup-engine ops (SPEC §7.3).
  REPO_INIT: 64,
  REPO_OPEN: 65,
  BACKUP_BEGIN: 66,
  FILE_OPEN: 67,
  FILE_WRITE: 68,
  FILE_FINISH: 69,
  FILE_PUT: 70,
  ADD_ENTRIES: 71,
  BACKUP_COMMIT: 72,
  BACKUP_ABORT: 73,
  CLOSE: 74,
  SNAPSHOTS: 75,
  ENTRIES_OPEN: 76,
  ENTRIES_NEXT: 77,
  CONTENT_READ: 78,
  CHECK: 79,
  JOB_START: 80,
  JOB_NEXT: 81,
});
export const OP_NOP = 0;
export const OP_ECHO = 1;
export const OP_SLOT_RELEASE = 2;
export const OP_STATS = 3;
export const OP_DELAY = 4;
/** Object-store ops (SPEC §7.2). */
export const OP_PUT = 16;
export const OP_OPEN_WRITE = 17;
export const OP_WRITE = 18;
export const OP_COMMIT = 19;
export const OP_ABORT = 20;
export const OP_OPEN_READ = 21;
export const OP_STAT = 22;
export const OP_LIST = 23;
export const OP_DELETE = 24;
/** Backup-engine ops (SPEC §7.3). */
export const OP_REPO_INIT = 64;
export const OP_REPO_OPEN = 65;
export const OP_BACKUP_BEGIN = 66;
export const OP_FILE_OPEN = 67;
export const OP_FILE_WRITE = 68;
export const OP_FILE_FINISH = 69;
export const OP_FILE_PUT = 70;
export const OP_ADD_ENTRIES = 71;
export const OP_BACKUP_COMMIT = 72;
export const OP_BACKUP_ABORT = 73;
export const OP_CLOSE = 74;
export const OP_SNAPSHOTS = 75;
export const OP_ENTRIES_OPEN = 76;
export const OP_ENTRIES_NEXT = 77;
export const OP_CONTENT_READ = 78;
export const OP_CHECK = 79;
export const OP_JOB_START = 80;
export const OP_JOB_NEXT = 81;

/** Longest object key in UTF-8 bytes (SPEC §7.2). */
export const MAX_KEY_LEN = 1024;
/** OPEN_READ `arg1` for "to the end of the object" (u64::MAX). */
export const RANGE_TO_END = 0xffff_ffff_ffff_ffffn;

/** Submission flag bits (SPEC §5.1). */
export const SQ_RELEASE_SLOT = 1;
/** Completion flag bits (SPEC §5.2). */
export const CQ_MORE = 1;
export const CQ_SLOT = 2;

/** Header `state` values (SPEC §3). */
export const STATE = Object.freeze({ INIT: 0, READY: 1, DRAINING: 2, CLOSED: 3 });

export interface LayoutParams {
  sq_capacity: number;
  cq_capacity: number;
  slot_count: number;
  slot_size: number;
}

/** Region offsets derived from the parameters; identical on both sides (SPEC §1, §4). */
export interface Layout extends LayoutParams {
  sq_offset: number;
  cq_offset: number;
  gq_offset: number;
  gq_capacity: number;
  slot_offset: number;
  segment_size: number;
}

const isPow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
const roundUpPage = (n: number): number => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;

/** Bytes a ring region occupies: header lines plus entries, rounded up to a page. */
export function ringRegionSize(capacity: number, entrySize: number): number {
  return roundUpPage(RING_HEADER_SIZE + capacity * entrySize);
}

/** Why parameters or a header are unacceptable, or null. */
export function checkParams(p: LayoutParams): string | null {
  for (const k of ['sq_capacity', 'cq_capacity'] as const) {
    const c = p[k];
    if (!isPow2(c) || c < MIN_RING_CAPACITY || c > MAX_RING_CAPACITY) return `${k} ${c} is not a power of two in 2..=65536`;
  }
  if (!Number.isInteger(p.slot_count) || p.slot_count < 1 || p.slot_count > MAX_SLOT_COUNT) {
    return `slot_count ${p.slot_count} is not in 1..=65535`;
  }
  if (!Number.isInteger(p.slot_size) || p.slot_size < PAGE_SIZE || p.slot_size > MAX_SLOT_SIZE || p.slot_size % PAGE_SIZE !== 0) {
    return `slot_size ${p.slot_size} is not a multiple of 4096 in 4096..=1GiB`;
  }
  return null;
}

export function computeLayout(p: LayoutParams): Layout {
  const bad = checkParams(p);
  if (bad !== null) throw new RangeError(bad);
  const gq_capacity = Math.max(MIN_RING_CAPACITY, 2 ** Math.ceil(Math.log2(p.slot_count)));
  const sq_offset = HEADER_SIZE;
  const cq_offset = sq_offset + ringRegionSize(p.sq_capacity, ENTRY_SIZE);
  const gq_offset = cq_offset + ringRegionSize(p.cq_capacity, ENTRY_SIZE);
  const slot_offset = gq_offset + ringRegionSize(gq_capacity, GRANT_ENTRY_SIZE);
  const segment_size = slot_offset + p.slot_count * p.slot_size;
  return {
    sq_capacity: p.sq_capacity,
    cq_capacity: p.cq_capacity,
    slot_count: p.slot_count,
    slot_size: p.slot_size,
    sq_offset,
    cq_offset,
    gq_offset,
    gq_capacity,
    slot_offset,
    segment_size,
  };
}

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Writes the static header fields (SPEC §3); dynamic fields are left alone. */
export function encodeHeader(layout: Layout, generation: bigint, out: Uint8Array): void {
  const v = view(out);
  const h = HEADER;
  v.setBigUint64(h.magic, MAGIC, true);
  v.setUint32(h.version, VERSION, true);
  v.setUint32(h.header_size, HEADER_SIZE, true);
  v.setBigUint64(h.segment_size, BigInt(layout.segment_size), true);
  v.setBigUint64(h.generation, generation, true);
  v.setUint32(h.entry_size, ENTRY_SIZE, true);
  v.setUint32(h.grant_entry_size, GRANT_ENTRY_SIZE, true);
  v.setBigUint64(h.sq_offset, BigInt(layout.sq_offset), true);
  v.setUint32(h.sq_capacity, layout.sq_capacity, true);
  v.setUint32(h.cq_capacity, layout.cq_capacity, true);
  v.setBigUint64(h.cq_offset, BigInt(layout.cq_offset), true);
  v.setBigUint64(h.gq_offset, BigInt(layout.gq_offset), true);
  v.setUint32(h.gq_capacity, layout.gq_capacity, true);
  v.setUint32(h.slot_count, layout.slot_count, true);
  v.setBigUint64(h.slot_offset, BigInt(layout.slot_offset), true);
  v.setUint32(h.slot_size, layout.slot_size, true);
  v.setUint32(h.flags, 0, true);
}

export class HeaderMismatch extends Error {
  constructor(readonly field: string, detail: string) {
    super(`segment header field \`${field}\` ${detail}`);
  }
}

/**
 * Parses the static header and cross-checks it: every offset must equal what this side computes
 * from the header's own parameters. Throws HeaderMismatch naming the first bad field.
 */
export function decodeHeader(hdr: Uint8Array): { layout: Layout; generation: bigint } {
  if (hdr.byteLength < HEADER_SIZE) throw new HeaderMismatch('header_size', 'is cut short');
  const v = view(hdr);
  const h = HEADER;
  const u32 = (at: number): number => v.getUint32(at, true);
  const u64 = (at: number): number => Number(v.getBigUint64(at, true));
  const expect = (ok: boolean, field: string, detail = 'does not match the layout'): void => {
    if (!ok) throw new HeaderMismatch(field, detail);
  };
  expect(v.getBigUint64(h.magic, true) === MAGIC, 'magic', 'is not "SHMPIPE\\0"');
  expect(u32(h.version) === VERSION, 'version', `is ${u32(h.version)}, this client speaks ${VERSION}`);
  expect(u32(h.header_size) === HEADER_SIZE, 'header_size');
  expect(u32(h.entry_size) === ENTRY_SIZE, 'entry_size');
  expect(u32(h.grant_entry_size) === GRANT_ENTRY_SIZE, 'grant_entry_size');
  expect(u32(h.flags) === 0, 'flags');
  const params = {
    sq_capacity: u32(h.sq_capacity),
    cq_capacity: u32(h.cq_capacity),
    slot_count: u32(h.slot_count),
    slot_size: u32(h.slot_size),
  };
  const bad = checkParams(params);
  if (bad !== null) throw new HeaderMismatch('params', bad);
  const layout = computeLayout(params);
  expect(u64(h.segment_size) === layout.segment_size, 'segment_size');
  expect(u64(h.sq_offset) === layout.sq_offset, 'sq_offset');
  expect(u64(h.cq_offset) === layout.cq_offset, 'cq_offset');
  expect(u64(h.gq_offset) === layout.gq_offset, 'gq_offset');
  expect(u32(h.gq_capacity) === layout.gq_capacity, 'gq_capacity');
  expect(u64(h.slot_offset) === layout.slot_offset, 'slot_offset');
  const generation = v.getBigUint64(h.generation, true);
  expect(generation !== 0n, 'generation', 'is zero');
  return { layout, generation };
}

/** A submission exactly as on the wire (SPEC §5.1); nothing validated. */
export interface SubmissionFields {
  request_id: bigint;
  opcode: number;
  flags: number;
  reserved0: number;
  slot_id: number;
  slot_gen: number;
  offset: number;
  length: number;
  reserved1: number;
  args: [bigint, bigint, bigint, bigint];
}

/** A completion (SPEC §5.2). `reserved` is the last u64, which must be 0. */
export interface CompletionFields {
  request_id: bigint;
  status: number;
  flags: number;
  slot_id: number;
  slot_gen: number;
  result: bigint;
  aux: [bigint, bigint, bigint];
  reserved?: bigint;
}

export interface GrantFields {
  slot_id: number;
  slot_gen: number;
}

export function encodeSubmission(s: SubmissionFields, out: Uint8Array = new Uint8Array(ENTRY_SIZE), at = 0): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset + at, ENTRY_SIZE);
  v.setBigUint64(0, s.request_id, true);
  v.setUint8(8, s.opcode);
  v.setUint8(9, s.flags);
  v.setUint16(10, s.reserved0, true);
  v.setUint32(12, s.slot_id, true);
  v.setUint32(16, s.slot_gen, true);
  v.setUint32(20, s.offset, true);
  v.setUint32(24, s.length, true);
  v.setUint32(28, s.reserved1, true);
  for (let i = 0; i < 4; i++) v.setBigUint64(32 + 8 * i, s.args[i] as bigint, true);
  return out;
}

export function decodeSubmission(b: Uint8Array, at = 0): SubmissionFields {
  const v = new DataView(b.buffer, b.byteOffset + at, ENTRY_SIZE);
  return {
    request_id: v.getBigUint64(0, true),
    opcode: v.getUint8(8),
    flags: v.getUint8(9),
    reserved0: v.getUint16(10, true),
    slot_id: v.getUint32(12, true),
    slot_gen: v.getUint32(16, true),
    offset: v.getUint32(20, true),
    length: v.getUint32(24, true),
    reserved1: v.getUint32(28, true),
    args: [v.getBigUint64(32, true), v.getBigUint64(40, true), v.getBigUint64(48, true), v.getBigUint64(56, true)],
  };
}

const NEEDS_SLOT: ReadonlySet<number> = new Set([
  OP_ECHO,
  OP_SLOT_RELEASE,
  OP_STATS,
  OP_PUT,
  OP_OPEN_WRITE,
  OP_WRITE,
  OP_OPEN_READ,
  OP_STAT,
  OP_LIST,
  OP_DELETE,
  OP_REPO_INIT,
  OP_REPO_OPEN,
  OP_BACKUP_BEGIN,
  OP_FILE_WRITE,
  OP_FILE_FINISH,
  OP_FILE_PUT,
  OP_ADD_ENTRIES,
  OP_BACKUP_COMMIT,
  OP_SNAPSHOTS,
  OP_ENTRIES_OPEN,
  OP_ENTRIES_NEXT,
  OP_CONTENT_READ,
  OP_CHECK,
  OP_JOB_START,
  OP_JOB_NEXT,
]);
const KNOWN_OPS: ReadonlySet<number> = new Set(Object.values(OPCODES));

/**
 * The slot-independent checks of SPEC §9, in the sidecar's order: opcode, reserved fields and
 * flags, slot presence, op-specific arguments. Returns the wire code, or null when acceptable.
 */
export function validateSubmission(s: SubmissionFields): WireErrorCode | null {
  if (!KNOWN_OPS.has(s.opcode)) return 'SHMPIPE_E_UNKNOWN_OPCODE';
  if (s.reserved0 !== 0 || s.reserved1 !== 0 || (s.flags & ~SQ_RELEASE_SLOT) !== 0) return 'SHMPIPE_E_MALFORMED';
  if (NEEDS_SLOT.has(s.opcode)) {
    if (s.slot_id === NO_SLOT) return 'SHMPIPE_E_INVALID_SLOT';
  } else if (s.slot_id !== NO_SLOT || s.slot_gen !== 0 || s.offset !== 0 || s.length !== 0 || s.flags !== 0) {
    return 'SHMPIPE_E_MALFORMED';
  }
  if (s.opcode === OP_DELAY && s.args[0] > BigInt(MAX_DELAY_US)) return 'SHMPIPE_E_MALFORMED';
  return null;
}

export function encodeCompletion(c: CompletionFields, out: Uint8Array = new Uint8Array(ENTRY_SIZE), at = 0): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset + at, ENTRY_SIZE);
  v.setBigUint64(0, c.request_id, true);
  v.setInt32(8, c.status, true);
  v.setUint32(12, c.flags, true);
  v.setUint32(16, c.slot_id, true);
  v.setUint32(20, c.slot_gen, true);
  v.setBigUint64(24, c.result, true);
  for (let i = 0; i < 3; i++) v.setBigUint64(32 + 8 * i, c.aux[i] as bigint, true);
  v.setBigUint64(56, c.reserved ?? 0n, true);
  return out;
}

export function decodeCompletion(b: Uint8Array, at = 0): CompletionFields {
  const v = new DataView(b.buffer, b.byteOffset + at, ENTRY_SIZE);
  return {
    request_id: v.getBigUint64(0, true),
    status: v.getInt32(8, true),
    flags: v.getUint32(12, true),
    slot_id: v.getUint32(16, true),
    slot_gen: v.getUint32(20, true),
    result: v.getBigUint64(24, true),
    aux: [v.getBigUint64(32, true), v.getBigUint64(40, true), v.getBigUint64(48, true)],
    reserved: v.getBigUint64(56, true),
  };
}

/** The agent's check of a completion (SPEC §5.2, §9): reserved zero, known flags, status ≤ 0. */
export function completionProblem(c: CompletionFields): string | null {
  if ((c.reserved ?? 0n) !== 0n) return 'reserved word is not zero';
  if ((c.flags & ~(CQ_MORE | CQ_SLOT)) !== 0) return `unknown flag bits 0x${c.flags.toString(16)}`;
  if (c.status > 0) return `positive status ${c.status}`;
  return null;
}

export function encodeGrant(g: GrantFields, out: Uint8Array = new Uint8Array(GRANT_ENTRY_SIZE), at = 0): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset + at, GRANT_ENTRY_SIZE);
  v.setUint32(0, g.slot_id, true);
  v.setUint32(4, g.slot_gen, true);
  return out;
}

export function decodeGrant(b: Uint8Array, at = 0): GrantFields {
  const v = new DataView(b.buffer, b.byteOffset + at, GRANT_ENTRY_SIZE);
  return { slot_id: v.getUint32(0, true), slot_gen: v.getUint32(4, true) };
}

export { WIRE_ERROR_CODES };
