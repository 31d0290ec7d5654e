/**
 * The Client's internal interface for object-store requests (SPEC §7.2): request kinds, what
 * store.ts hands the Client to submit, and what it gets back. Not exported from the package.
 */

import type { Slot } from './slot';

// Request kinds of the store ops (the Client's own kinds are 0..5).
/** @internal */
export const K_PUT = 6;
/** @internal */
export const K_OPEN_WRITE = 7;
/** @internal */
export const K_WRITE = 8;
/** @internal */
export const K_COMMIT = 9;
/** @internal */
export const K_ABORT = 10;
/** @internal */
export const K_OPEN_READ = 11;
/** @internal */
export const K_STAT = 12;
/** @internal */
export const K_LIST = 13;
/** @internal */
export const K_DELETE = 14;
/** @internal The backup-engine ops (SPEC §7.3): one kind, told apart by opcode. */
export const K_ENGINE = 15;
export const K_FIRST_STORE = K_PUT;

/** @internal Receives the chunks of an OPEN_READ stream (completions with MORE). */
export interface StreamSink {
  chunk(slot: Slot, length: number, offset: number, handle: number): void;
}

/** @internal An object-store (SPEC §7.2) or backup-engine (§7.3) request. */
export interface StoreRequest {
  kind: number;
  opcode: number;
  slot: Slot | null;
  offset: number;
  length: number;
  args: [number | bigint, number | bigint, number];
  /** In-flight units (a stream: 1 + read-ahead). */
  weight: number;
  /** PUT/WRITE/OPEN_READ/FILE_WRITE/CONTENT_READ: the slot is gone unless the completion hands it back. */
  consumes: boolean;
  stream: StreamSink | null;
}

/** @internal What a store completion carries: result and aux as numbers (< 2^53). */
export interface StoreCompletion {
  result: number;
  aux0: number;
  aux1: number;
}

