/**
 * The request table: one Request per call from the moment it is made until its last completion,
 * the ids the SQ carries (SPEC §5.1: never reused while in flight), the in-flight budget, and the
 * encoding of a Request into its 64-byte SQ entry.
 *
 * In-flight requests sit in an array indexed by `id & mask`, not a Map: a Map's old-space backing
 * store made every request survive scavenges (measured: half the CPU in GC, 1.1 M vs 2+ M
 * req/s). The array is twice the in-flight budget, so a free index is always near; ids count up
 * and skip an index still held by a long-running request.
 */

import type { ShmpipeError } from './errors';
import { NO_SLOT, OPCODES } from './protocol';
import type { Slot } from './slot';
import {
  K_ABORT,
  K_COMMIT,
  K_DELETE,
  K_FIRST_STORE,
  K_LIST,
  K_OPEN_READ,
  K_OPEN_WRITE,
  K_PUT,
  K_STAT,
  K_WRITE,
  K_ENGINE,
  type StreamSink,
} from './store-request';

// What to do with a request's completion (the store kinds are in store-request.ts).
export const K_NOP = 0;
export const K_ECHO = 1;
export const K_RELEASE = 2;
export const K_STATS = 3;
export const K_DELAY = 4;
export const K_RAW = 5;

export const TWO_32 = 4294967296;

/** One request: waiting in the FIFO, then in flight. */
export class Request {
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
  /** A raw submission naming a slot the client holds (the sidecar may take it away). */
  rawSlot: Slot | null = null;

  /** Whether the slot stops being the agent's once this is in the SQ (SLOT_RELEASE, consuming ops). */
  get givesUpSlot(): boolean {
    return this.consumes || this.kind === K_RELEASE;
  }
}

export class RequestTable {
  /** In-flight units (a request 1, a read stream 1 + read-ahead). */
  inFlight = 0;
  private readonly slots: (Request | null)[];
  private readonly mask: number;
  private nextId = 1;

  constructor(readonly maxInFlight: number) {
    const size = 2 ** Math.ceil(Math.log2(Math.max(2, maxInFlight) * 2));
    this.slots = new Array<Request | null>(size).fill(null);
    this.mask = size - 1;
  }

  /** Whether `r` fits the in-flight budget now. */
  fits(r: Request): boolean {
    return this.inFlight + r.weight <= this.maxInFlight;
  }

  /** Gives `r` a fresh id and counts it in flight. */
  add(r: Request): number {
    let id = this.nextId;
    while (this.slots[id & this.mask] !== null) id++;
    this.nextId = id + 1;
    r.id = id;
    this.slots[id & this.mask] = r;
    this.inFlight += r.weight;
    return id;
  }

  /** The request in flight with `id`, or null. */
  get(id: number): Request | null {
    const r = this.slots[id & this.mask];
    return r !== undefined && r !== null && r.id === id ? r : null;
  }

  /** Ends `r` (its last completion arrived). */
  remove(r: Request): void {
    this.slots[r.id & this.mask] = null;
    this.inFlight -= r.weight;
  }

  /** Removes and returns every request in flight, oldest first. */
  drain(): Request[] {
    const all = this.slots.filter((r): r is Request => r !== null).sort((a, b) => a.id - b.id);
    this.slots.fill(null);
    this.inFlight = 0;
    return all;
  }
}

/** Writes `r`'s SQ entry (SPEC §5.1) at byte offset `at`; `r.id` is already set. */
export function writeSubmission(u32: Uint32Array, u8: Uint8Array, at: number, r: Request): void {
  const w = at >>> 2;
  const id = r.id;
  u32[w] = id >>> 0;
  u32[w + 1] = (id / TWO_32) >>> 0;
  if (r.raw !== null) {
    u8.set(r.raw, at + 8);
    return;
  }
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

/** The op's name in error messages. */
export function opName(r: Request): string {
  return (r.kind === K_ENGINE ? ENGINE_OP_NAMES.get(r.opcode) : OP_NAMES[r.kind]) ?? 'request';
}
