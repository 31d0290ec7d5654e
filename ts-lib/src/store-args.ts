/**
 * What the object-store calls (SPEC §7.2) share: their result types and the checks of their
 * arguments, run before any ring work. Failures are ShmpipeErrors with SHMPIPE_E_INVALID_ARGUMENT.
 * Keys follow the sidecar's rules (UTF-8, 1..=1024 bytes, `/`-separated non-empty segments, no
 * `.`/`..`, no control characters, no leading/trailing `/`, last segment not ending in
 * `#<digits>`), so a bad key fails locally with a message that says why.
 */

import type { Client } from './client';
import { ShmpipeError } from './errors';
import { MAX_KEY_LEN } from './protocol';
import { Slot } from './slot';

/** What the store says about an object. */
export interface ObjectInfo {
  key: string;
  /** Data bytes. */
  size: number;
  /** CRC-32C of the data (u32). */
  checksum: number;
  /** Last modification, Unix milliseconds. */
  mtimeMs: number;
}

/** What an upload stored. */
export interface PutResult {
  size: number;
  /** CRC-32C of the data as the sidecar computed it (u32). */
  checksum: number;
}

/** One LIST entry. */
export interface ListEntry {
  key: string;
  size: number;
  mtimeMs: number;
}

/** One chunk of a read stream: `length` bytes at the start of `slot.buffer`, at `offset` in the object. */
export interface ReadChunk {
  slot: Slot;
  length: number;
  offset: number;
}

/** How a read stream ended. */
export interface ReadResult {
  /** Bytes delivered. */
  size: number;
  /** The whole object was read and its checksum matched (false for ranges). */
  verified: boolean;
}

/** @internal */
export const invalid = (message: string): ShmpipeError => new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', message);
const CONTROL = /[\x00-\x1f\x7f]/;
const STAGING = /#[0-9]+$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why `key` is not a valid object key, or null. */
export function keyProblem(key: unknown): string | null {
  if (typeof key !== 'string') return 'must be a string';
  const n = Buffer.byteLength(key, 'utf8');
  if (n === 0) return 'must not be empty';
  if (n > MAX_KEY_LEN) return `is ${n} bytes of UTF-8, more than ${MAX_KEY_LEN}`;
  if (key.startsWith('/') || key.endsWith('/')) return "must not start or end with '/'";
  if (CONTROL.test(key)) return 'must not contain control characters';
  if (LONE_SURROGATE.test(key)) return 'is not well-formed Unicode (lone surrogate)';
  const segments = key.split('/');
  for (const s of segments) {
    if (s === '') return "must not contain empty segments ('//')";
    if (s === '.' || s === '..') return "must not contain '.' or '..' segments";
  }
  if (STAGING.test(segments[segments.length - 1]!)) return "must not end in '#' followed by digits (reserved for uploads in progress)";
  return null;
}

export function keyBytes(key: unknown, op: string): Buffer {
  const bad = keyProblem(key);
  if (bad !== null) throw invalid(`${op}: key ${typeof key === 'string' ? JSON.stringify(key.slice(0, 80)) : ''} ${bad}`);
  return Buffer.from(key as string, 'utf8');
}

export function prefixBytes(prefix: unknown, op: string): string {
  if (typeof prefix !== 'string') throw invalid(`${op}: prefix must be a string`);
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (trimmed === '') return '';
  const bad = keyProblem(trimmed);
  if (bad !== null && !bad.startsWith("must not end in '#'")) throw invalid(`${op}: prefix ${JSON.stringify(prefix.slice(0, 80))} ${bad}`);
  return prefix;
}

/** @internal The slot, if it is one this client holds. */
export function checkSlot(c: Client, slot: unknown, op: string): Slot {
  if (!(slot instanceof Slot)) throw invalid(`${op}: slot must be a Slot from alloc()`);
  if (slot.owner !== c) throw invalid(`${op}: slot ${slot.id} was released, consumed, or belongs to another client`);
  return slot;
}

/** @internal `[offset, offset+length)` must lie inside the slot. */
export function checkRange(slot: Slot, length: unknown, offset: unknown, op: string): void {
  if (!Number.isInteger(length) || !Number.isInteger(offset) || (length as number) < 0 || (offset as number) < 0 || (offset as number) + (length as number) > slot.capacity) {
    throw invalid(`${op}: offset ${String(offset)} and length ${String(length)} must be integers with 0 ≤ offset, 0 ≤ length, offset + length ≤ ${slot.capacity}`);
  }
}

/** @internal Runs `f`, turning a synchronous ShmpipeError into a rejection. */
export function guard<T>(f: () => Promise<T>): Promise<T> {
  try {
    return f();
  } catch (e) {
    return Promise.reject(e);
  }
}

/** @internal A slot with `payload` at offset 0, for ops whose slot carries only a request (a key, JSON). */
export async function payloadSlot(c: Client, payload: Buffer): Promise<Slot> {
  const slot = await c.alloc();
  if (payload.length > slot.capacity) {
    slot.release();
    throw invalid(`a request of ${payload.length} bytes does not fit a slot of ${slot.capacity}`);
  }
  payload.copy(slot.buffer, 0);
  return slot;
}
