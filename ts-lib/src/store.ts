/**
 * The object-store API of the Client (SPEC §7.2): put, openWrite → Writer, openRead → ReadStream,
 * stat, list, delete, and putFile/getFile, which move files straight between the filesystem and
 * slots (fs.read into slot.buffer, positional fs.write out of it) with many requests in flight.
 *
 * Every argument is checked here, before any ring work; failures are ShmpipeErrors with
 * SHMPIPE_E_INVALID_ARGUMENT. Keys follow the sidecar's rules (UTF-8, 1..=1024 bytes, `/`-separated
 * non-empty segments, no `.`/`..`, no control characters, no leading/trailing `/`, last segment not
 * ending in `#<digits>`), so a bad key fails locally with a message that says why.
 *
 * Slot ownership: put() and Writer.write() consume the slot they are given (it is released, and
 * must not be touched again — the sidecar may still be uploading its bytes); when the sidecar
 * refused the op without taking the slot (SPEC §7.2 steps 1–3) it stays the caller's, usable
 * (`slot.released` says which). openRead() yields chunks in slots it releases itself when the
 * iteration moves on.
 */

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import type { Client } from './client';
import { K_ABORT, K_COMMIT, K_DELETE, K_LIST, K_OPEN_READ, K_OPEN_WRITE, K_PUT, K_STAT, K_WRITE, type StoreCompletion, type StreamSink } from './store-request';
import { ShmpipeError } from './errors';
import { MAX_KEY_LEN, OP_ABORT, OP_COMMIT, OP_DELETE, OP_LIST, OP_OPEN_READ, OP_OPEN_WRITE, OP_PUT, OP_STAT, OP_WRITE, RANGE_TO_END } from './protocol';
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

function keyBytes(key: unknown, op: string): Buffer {
  const bad = keyProblem(key);
  if (bad !== null) throw invalid(`${op}: key ${typeof key === 'string' ? JSON.stringify(key.slice(0, 80)) : ''} ${bad}`);
  return Buffer.from(key as string, 'utf8');
}

function prefixBytes(prefix: unknown, op: string): string {
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

function infoOf(key: string, c: StoreCompletion): ObjectInfo {
  return { key, size: c.result, checksum: c.aux0 >>> 0, mtimeMs: c.aux1 };
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

// ---- put, stat, delete ---------------------------------------------------------------------

export function put(c: Client, key: string, slot: Slot, length: number, offset = 0): Promise<PutResult> {
  return guard(async () => {
    const k = keyBytes(key, 'put');
    const s = checkSlot(c, slot, 'put');
    checkRange(s, length, offset, 'put');
    // The key travels in the same slot, after the data (or before it); else a one-WRITE upload.
    let keyAt = -1;
    if (offset + length + k.length <= s.capacity) keyAt = offset + length;
    else if (k.length <= offset) keyAt = 0;
    if (keyAt < 0) {
      const w = await openWrite(c, key);
      try {
        await w.write(s, length, offset);
      } catch (e) {
        await w.abort().catch(() => {});
        throw e;
      }
      return w.commit();
    }
    k.copy(s.buffer, keyAt);
    const r = await c.submitStore({
      kind: K_PUT,
      opcode: OP_PUT,
      slot: s,
      offset,
      length,
      args: [k.length, keyAt, 0],
      weight: 1,
      consumes: true,
      stream: null,
    });
    return { size: r.result, checksum: r.aux0 >>> 0 };
  });
}

/** put() of a slot this module allocated: released if the put fails without consuming it. */
async function putOwnSlot(c: Client, key: string, slot: Slot, length: number): Promise<PutResult> {
  try {
    return await put(c, key, slot, length);
  } finally {
    if (!slot.released) slot.release();
  }
}

/** Runs a key-only op (STAT, DELETE) in a fresh slot, released afterwards. */
async function keyOp(c: Client, kind: number, opcode: number, key: Buffer): Promise<StoreCompletion> {
  const slot = await payloadSlot(c, key);
  try {
    return await c.submitStore({ kind, opcode, slot, offset: 0, length: key.length, args: [0, 0, 0], weight: 1, consumes: false, stream: null });
  } finally {
    slot.release();
  }
}

export function stat(c: Client, key: string): Promise<ObjectInfo> {
  return guard(async () => infoOf(key, await keyOp(c, K_STAT, OP_STAT, keyBytes(key, 'stat'))));
}

export function del(c: Client, key: string): Promise<void> {
  return guard(async () => {
    await keyOp(c, K_DELETE, OP_DELETE, keyBytes(key, 'delete'));
  });
}

// ---- list ------------------------------------------------------------------------------------

const listOptions = z
  .object({
    pageSize: z.number().int().min(1).max(10_000).default(1000),
  })
  .strict();
export type ListOptions = z.input<typeof listOptions>;

const listOutput = z.object({
  entries: z.array(z.object({ key: z.string(), size: z.number().int().nonnegative(), mtime_ms: z.number().int().nonnegative() })),
  next: z.string().nullable(),
});

/** Lists the objects under `prefix` (whole segments), in key order, page by page. */
export function list(c: Client, prefix = '', options: ListOptions = {}): AsyncIterable<ListEntry> {
  const p = prefixBytes(prefix, 'list');
  const o = listOptions.safeParse(options ?? {});
  if (!o.success) throw invalid(`list: ${o.error.issues.map((i) => i.message).join('; ')}`);
  const pageSize = o.data.pageSize;
  return {
    async *[Symbol.asyncIterator]() {
      let token: string | null = null;
      let limit = pageSize;
      for (;;) {
        const slot = await c.alloc();
        let page: z.infer<typeof listOutput>;
        try {
          const req = Buffer.from(JSON.stringify({ prefix: p, token, limit }), 'utf8');
          if (req.length > slot.capacity) throw invalid('list: the request does not fit a slot');
          req.copy(slot.buffer, 0);
          let r: StoreCompletion;
          try {
            r = await c.submitStore({ kind: K_LIST, opcode: OP_LIST, slot, offset: 0, length: req.length, args: [0, 0, 0], weight: 1, consumes: false, stream: null });
          } catch (e) {
            // The page does not fit the slot: ask for fewer entries.
            if (e instanceof ShmpipeError && e.code === 'SHMPIPE_E_OUT_OF_RANGE' && limit > 1) {
              limit = Math.max(1, Math.floor(limit / 2));
              continue;
            }
            throw e;
          }
          page = listOutput.parse(JSON.parse(slot.buffer.toString('utf8', 0, r.result)));
        } catch (e) {
          if (e instanceof ShmpipeError) throw e;
          throw new ShmpipeError('SHMPIPE_E_PROTOCOL', `list: the sidecar returned an invalid page: ${(e as Error).message}`, { cause: e });
        } finally {
          slot.release();
        }
        for (const e of page.entries) yield { key: e.key, size: e.size, mtimeMs: e.mtime_ms };
        if (page.next === null) return;
        token = page.next;
      }
    },
  };
}

// ---- streaming writes ------------------------------------------------------------------------

/** A streaming upload: write() slots in order, then commit() (or abort()). */
export class Writer {
  private done = false;
  /** @internal */
  constructor(
    private readonly client: Client,
    readonly key: string,
    /** @internal The sidecar's writer handle. */
    readonly handle: number,
  ) {}

  /**
   * Appends `length` bytes at `offset` of `slot`. The slot is consumed (released) once the
   * request is accepted: do not touch its buffer afterwards. Writes are applied in call order;
   * several may be in flight. Resolves when the sidecar has taken the bytes.
   */
  write(slot: Slot, length: number, offset = 0): Promise<void> {
    return guard(async () => {
      if (this.done) throw invalid(`write: the writer for ${JSON.stringify(this.key)} was committed or aborted`);
      const s = checkSlot(this.client, slot, 'write');
      checkRange(s, length, offset, 'write');
      await this.client.submitStore({ kind: K_WRITE, opcode: OP_WRITE, slot: s, offset, length, args: [this.handle, 0, 0], weight: 1, consumes: true, stream: null });
    });
  }

  /** Makes the object visible; resolves with its size and CRC-32C. */
  commit(): Promise<PutResult> {
    return guard(async () => {
      if (this.done) throw invalid(`commit: the writer for ${JSON.stringify(this.key)} was committed or aborted`);
      this.done = true;
      const r = await this.client.submitStore({ kind: K_COMMIT, opcode: OP_COMMIT, slot: null, offset: 0, length: 0, args: [this.handle, 0, 0], weight: 1, consumes: false, stream: null });
      return { size: r.result, checksum: r.aux0 >>> 0 };
    });
  }

  /** Abandons the upload: nothing of it stays in the store. Idempotent after commit/abort. */
  abort(): Promise<void> {
    if (this.done) return Promise.resolve();
    this.done = true;
    return this.client.submitStore({ kind: K_ABORT, opcode: OP_ABORT, slot: null, offset: 0, length: 0, args: [this.handle, 0, 0], weight: 1, consumes: false, stream: null }).then(() => undefined);
  }
}

export function openWrite(c: Client, key: string): Promise<Writer> {
  return guard(async () => {
    const k = keyBytes(key, 'openWrite');
    const slot = await payloadSlot(c, k);
    try {
      const r = await c.submitStore({ kind: K_OPEN_WRITE, opcode: OP_OPEN_WRITE, slot, offset: 0, length: k.length, args: [0, 0, 0], weight: 1, consumes: false, stream: null });
      return new Writer(c, key, r.result);
    } finally {
      slot.release();
    }
  });
}

// ---- read streams ----------------------------------------------------------------------------

const readOptions = z
  .object({
    range: z
      .object({
        start: z.number().int().nonnegative().default(0),
        end: z.number().int().nonnegative().optional(),
      })
      .strict()
      .refine((r) => r.end === undefined || r.end >= r.start, { message: 'range.end must not be below range.start' })
      .optional(),
    readAhead: z.number().int().min(1).max(64).default(4),
  })
  .strict();
export type ReadOptions = z.input<typeof readOptions>;

/** @internal Low-level stream: chunks go to `onChunk` (which owns the slot); resolves at the end. */
export interface RawStream {
  /** Resolves with the result or rejects with the stream's error. */
  readonly done: Promise<ReadResult>;
  /** Asks the sidecar to stop (ABORT); later chunks are released unseen. */
  cancel(): void;
}

/** @internal What opens a stream (OPEN_READ, or the backup engine's CONTENT_READ): an op whose
 * slot carries `payload` at offset 0 and whose completions are a chunk stream (SPEC §7.2). */
export interface StreamOpen {
  kind: number;
  opcode: number;
  payload: Buffer;
  args: [number | bigint, number | bigint, number];
  readAhead: number;
}

/** @internal Starts a stream; both stream ops share this (ABORT of the handle cancels either). */
export function startStream(c: Client, open: StreamOpen, onChunk: (chunk: ReadChunk) => void): RawStream {
  let handle = 0;
  let cancelled = false;
  let finished = false;
  const abort = (): void => {
    c.submitStore({ kind: K_ABORT, opcode: OP_ABORT, slot: null, offset: 0, length: 0, args: [handle, 0, 0], weight: 1, consumes: false, stream: null }).catch(() => {});
  };
  const sink: StreamSink = {
    chunk(slot, length, offset, h) {
      if (handle === 0) {
        handle = h;
        if (cancelled && !finished) abort();
      }
      if (cancelled) slot.release();
      else onChunk({ slot, length, offset });
    },
  };
  const done = (async (): Promise<ReadResult> => {
    const slot = await payloadSlot(c, open.payload);
    try {
      const r = await c.submitStore({
        kind: open.kind,
        opcode: open.opcode,
        slot,
        offset: 0,
        length: open.payload.length,
        args: open.args,
        weight: 1 + open.readAhead,
        consumes: true,
        stream: sink,
      });
      return { size: r.result, verified: r.aux0 === 1 };
    } finally {
      finished = true;
      // Still ours when the stream could not be opened (the payload slot came back).
      slot.release();
    }
  })();
  return {
    done,
    cancel() {
      if (cancelled || finished) return;
      cancelled = true;
      if (handle !== 0) abort();
    },
  };
}

function startRead(c: Client, key: string, options: ReadOptions | undefined, op: string, onChunk: (chunk: ReadChunk) => void): RawStream {
  const k = keyBytes(key, op);
  const o = readOptions.safeParse(options ?? {});
  if (!o.success) throw invalid(`${op}: ${o.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { range, readAhead } = o.data;
  const start = range?.start ?? 0;
  const end: number | bigint = range?.end ?? RANGE_TO_END;
  return startStream(c, { kind: K_OPEN_READ, opcode: OP_OPEN_READ, payload: k, args: [start, end, readAhead], readAhead }, onChunk);
}

/**
 * An object's bytes as an async iterable of chunks (SPEC §7.2 OPEN_READ; also a file's content
 * from the backup engine, CONTENT_READ, §7.3). Each chunk's slot is released when the iteration
 * moves on (next chunk, `break`, an error); `result` says how the stream ended. A whole-object
 * read is verified: its last chunk arrives only after the checksum matched, and a mismatch fails
 * the iteration with SHMPIPE_E_INTEGRITY.
 */
export class ReadStream implements AsyncIterable<ReadChunk> {
  /** Resolves with the stream's result once it ended (rejects with its error). */
  readonly result: Promise<ReadResult>;
  private readonly raw: RawStream;
  private readonly queue: ReadChunk[] = [];
  private waiter: ((v: void) => void) | null = null;
  private current: ReadChunk | null = null;
  private ended = false;
  private error: unknown = null;
  private iterating = false;

  /** @internal `start` opens the stream with the sink this object queues chunks from. */
  constructor(start: (onChunk: (chunk: ReadChunk) => void) => RawStream) {
    this.raw = start((chunk) => {
      this.queue.push(chunk);
      this.wake();
    });
    this.result = this.raw.done;
    this.result.then(
      () => {
        this.ended = true;
        this.wake();
      },
      (e: unknown) => {
        this.ended = true;
        this.error = e;
        this.wake();
      },
    );
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private releaseCurrent(): void {
    this.current?.slot.release();
    this.current = null;
  }

  [Symbol.asyncIterator](): AsyncIterator<ReadChunk> {
    if (this.iterating) throw invalid('a ReadStream can be iterated once');
    this.iterating = true;
    return {
      next: async (): Promise<IteratorResult<ReadChunk>> => {
        this.releaseCurrent();
        for (;;) {
          const chunk = this.queue.shift();
          if (chunk !== undefined) {
            this.current = chunk;
            return { value: chunk, done: false };
          }
          if (this.ended) {
            if (this.error !== null) throw this.error;
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => {
            this.waiter = resolve;
          });
        }
      },
      return: async (): Promise<IteratorResult<ReadChunk>> => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }

  /** Stops the stream: releases every chunk it holds and cancels the rest. */
  close(): void {
    this.releaseCurrent();
    for (const ch of this.queue.splice(0)) ch.slot.release();
    if (!this.ended) {
      this.raw.cancel();
      // The stream now ends with SHMPIPE_E_CANCELLED, which nobody needs to see.
      this.result.catch(() => {});
    }
  }
}

export function openRead(c: Client, key: string, options?: ReadOptions): ReadStream {
  return new ReadStream((onChunk) => startRead(c, key, options, 'openRead', onChunk));
}

// ---- files -----------------------------------------------------------------------------------

const fileOptions = z
  .object({
    /** Streaming uploads: chunks read ahead and WRITEs in flight per file. */
    window: z.number().int().min(1).max(256).default(8),
    /** getFile: read-ahead of the stream. */
    readAhead: z.number().int().min(1).max(64).default(8),
    /** getFile: fsync the file before renaming it into place. */
    fsync: z.boolean().default(false),
    /**
     * Files (putFile) and objects arriving in one chunk (getFile) up to this many bytes are read
     * or written with synchronous calls: a few µs on the event loop for a page-cached file,
     * instead of four thread-pool round trips (measured: ~60 µs of CPU per small file). 0 turns
     * it off (slow or remote filesystems, where a synchronous call may block for long).
     */
    syncIoMax: z.number().int().min(0).default(256 << 10),
  })
  .strict();
export type FileOptions = z.input<typeof fileOptions>;

function parseFileOptions(options: unknown, op: string): z.output<typeof fileOptions> {
  const o = fileOptions.safeParse(options ?? {});
  if (!o.success) throw invalid(`${op}: ${o.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return o.data;
}

function checkPath(p: unknown, op: string): string {
  if (typeof p !== 'string' || p.length === 0 || p.includes('\0')) throw invalid(`${op}: path must be a non-empty string without NUL bytes`);
  return p;
}

const fsRead = (fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> =>
  new Promise((resolve, reject) => fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));

/** Reads exactly `len` bytes at `pos` into `buf` (a short read means the file shrank). */
async function readFully(fd: number, buf: Buffer, len: number, pos: number, file: string): Promise<void> {
  let got = 0;
  while (got < len) {
    const n = await fsRead(fd, buf, got, len - got, pos + got);
    if (n === 0) throw new ShmpipeError('SHMPIPE_E_IO', `putFile: ${file} shrank while it was read`);
    got += n;
  }
}

/** Chunks written per writev (IOV_MAX is 1024; a few suffice to catch up). */
const MAX_WRITEV = 64;

const fsWritev = (fd: number, bufs: Buffer[], pos: number): Promise<number> =>
  new Promise((resolve, reject) => fs.writev(fd, bufs, pos, (err, n) => (err ? reject(err) : resolve(n))));

function readSyncFully(fd: number, buf: Buffer, len: number, file: string): void {
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, got);
    if (n === 0) throw new ShmpipeError('SHMPIPE_E_IO', `putFile: ${file} shrank while it was read`);
    got += n;
  }
}

function writeSyncFully(fd: number, buf: Buffer, len: number, pos: number): void {
  let put = 0;
  while (put < len) put += fs.writeSync(fd, buf, put, len - put, pos + put);
}

/** Writes `bufs` back to back at `pos`, finishing any short write. */
async function writevFully(fd: number, bufs: Buffer[], pos: number): Promise<void> {
  let rest = bufs.filter((b) => b.length > 0);
  while (rest.length > 0) {
    let n = await fsWritev(fd, rest, pos);
    pos += n;
    while (rest.length > 0 && n >= rest[0]!.length) {
      n -= rest[0]!.length;
      rest = rest.slice(1);
    }
    if (n > 0) rest = [rest[0]!.subarray(n), ...rest.slice(1)];
  }
}

/** A local filesystem failure as SHMPIPE_E_IO (the errno name in the message, the error as cause). */
function fsError(e: unknown, op: string, file: string): ShmpipeError {
  if (e instanceof ShmpipeError) return e;
  const errno = (e as NodeJS.ErrnoException)?.code ?? 'EIO';
  return new ShmpipeError('SHMPIPE_E_IO', `${op}: ${file}: ${(e as Error)?.message ?? String(e)} (${errno})`, { cause: e });
}

const fsOpen = (file: string, flags: string, mode?: number): Promise<number> =>
  new Promise((resolve, reject) => fs.open(file, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
const fsClose = (fd: number): Promise<void> => new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));

/** Counts streaming uploads per client, so their partial parts never take every slot (SPEC §9). */
class UploadGate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(readonly limit: number) {}
  async enter(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  leave(): void {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.active--;
  }
}
const gates = new WeakMap<Client, UploadGate>();

/** Slots one streaming upload may pin indefinitely: its partial part (SPEC §9). */
function slotsPerPart(c: Client): number {
  return Math.ceil(c.layout.partSize / c.layout.slotSize);
}

function gateOf(c: Client): UploadGate {
  let g = gates.get(c);
  if (g === undefined) {
    g = new UploadGate(Math.max(1, Math.floor(c.layout.grantWindow / (slotsPerPart(c) + 1))));
    gates.set(c, g);
  }
  return g;
}

/**
 * Uploads the file at `file` as `key`. A file that fits one slot (with its key) is read into a
 * slot and PUT; a larger one is streamed: `window` slots are read concurrently at slot-aligned
 * offsets and written in order to a writer, then committed. Resolves with size and CRC-32C.
 */
export function putFile(c: Client, file: string, key: string, options?: FileOptions): Promise<PutResult> {
  return guard(async () => {
    const f = checkPath(file, 'putFile');
    const k = keyBytes(key, 'putFile');
    const o = parseFileOptions(options, 'putFile');
    // A small file is read synchronously (see `syncIoMax`): one slot, no thread-pool hops.
    let st0: fs.Stats;
    try {
      st0 = fs.statSync(f);
    } catch (e) {
      throw fsError(e, 'putFile', f);
    }
    if (!st0.isFile()) throw invalid(`putFile: ${f} is not a regular file`);
    if (st0.size <= o.syncIoMax && st0.size + k.length <= c.layout.slotSize) {
      const slot = await c.alloc();
      try {
        const sfd = fs.openSync(f, 'r');
        try {
          readSyncFully(sfd, slot.buffer, st0.size, f);
        } finally {
          fs.closeSync(sfd);
        }
      } catch (e) {
        slot.release();
        throw fsError(e, 'putFile', f);
      }
      return putOwnSlot(c, key, slot, st0.size);
    }
    let fd: number;
    let size: number;
    try {
      fd = await fsOpen(f, 'r');
    } catch (e) {
      throw fsError(e, 'putFile', f);
    }
    try {
      try {
        const st = await new Promise<fs.Stats>((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
        if (!st.isFile()) throw invalid(`putFile: ${f} is not a regular file`);
        size = st.size;
      } catch (e) {
        throw fsError(e, 'putFile', f);
      }
      const slotSize = c.layout.slotSize;
      if (size + k.length <= slotSize) {
        const slot = await c.alloc();
        try {
          await readFully(fd, slot.buffer, size, 0, f);
        } catch (e) {
          slot.release();
          throw fsError(e, 'putFile', f);
        }
        return await putOwnSlot(c, key, slot, size);
      }
      return await putStreaming(c, fd, f, key, size, o.window);
    } finally {
      fs.close(fd, () => {});
    }
  });
}

async function putStreaming(c: Client, fd: number, file: string, key: string, size: number, window: number): Promise<PutResult> {
  if (slotsPerPart(c) + 1 > c.layout.grantWindow) {
    throw invalid(
      `putFile: a streaming upload pins up to ${slotsPerPart(c)} slots (part size ${c.layout.partSize}) but this session can hold only ${c.layout.grantWindow}: connect with more or larger slots`,
    );
  }
  const gate = gateOf(c);
  await gate.enter();
  let writer: Writer | null = null;
  const slotSize = c.layout.slotSize;
  const chunks = Math.ceil(size / slotSize);
  // Reads run ahead (up to `window`), WRITEs go out strictly in file order.
  const reads: (Promise<Slot> | undefined)[] = new Array(chunks);
  try {
    writer = await openWrite(c, key);
    const w = writer;
    const writes: Promise<void>[] = [];
    let failed: unknown = null;
    const startRead = (i: number): void => {
      const pos = i * slotSize;
      const len = Math.min(slotSize, size - pos);
      reads[i] = c.alloc().then(async (slot) => {
        try {
          await readFully(fd, slot.buffer, len, pos, file);
          return slot;
        } catch (e) {
          slot.release();
          throw e;
        }
      });
      reads[i]!.catch(() => {}); // observed below, in order
    };
    let next = 0;
    for (; next < Math.min(window, chunks); next++) startRead(next);
    for (let i = 0; i < chunks; i++) {
      const slot = await reads[i]!;
      reads[i] = undefined;
      if (next < chunks) startRead(next++);
      const len = Math.min(slotSize, size - i * slotSize);
      const p = w.write(slot, len);
      p.catch((e: unknown) => {
        failed ??= e;
        if (!slot.released) slot.release(); // refused without taking the slot: it is still ours
      });
      writes.push(p);
      if (failed !== null) break;
      // Keep at most `window` WRITEs unanswered.
      if (writes.length > window) await writes[writes.length - 1 - window];
    }
    await Promise.all(writes);
    if (failed !== null) throw failed;
    const r = await w.commit();
    writer = null;
    return r;
  } catch (e) {
    if (writer !== null) await writer.abort().catch(() => {});
    throw fsError(e, 'putFile', file);
  } finally {
    // After a failure, reads may still be running: wait for them (the caller closes the fd
    // next) and give their slots back.
    await Promise.all(reads.map((r) => r?.then((slot) => slot.release(), () => {})));
    gate.leave();
  }
}

/**
 * Downloads `key` into the file `file`: chunks are written at their offsets as they arrive
 * (positional writes from the slot, several in flight) into a temporary file in the same
 * directory, which is renamed into place only after the whole object arrived and was verified.
 * A failure leaves no file behind (and does not touch an existing `file`).
 */
export function getFile(c: Client, key: string, file: string, options?: FileOptions): Promise<ReadResult> {
  return guard(async () => {
    const f = checkPath(file, 'getFile');
    keyBytes(key, 'getFile');
    const o = parseFileOptions(options, 'getFile');
    const tmp = path.join(path.dirname(f), `.${path.basename(f)}.shmpipe-${randomBytes(6).toString('hex')}.tmp`);
    // The temporary file is created when the first bytes arrive (a missing key creates
    // nothing). An object that arrives as one small chunk is written synchronously (see
    // `syncIoMax`). Otherwise: one write at a time per file (concurrent writes to one file
    // contend for its inode lock in the kernel, measured: ~4x the CPU), of every chunk that has
    // arrived meanwhile: chunks come in order and contiguous, so they go out with one writev.
    let fd = -1;
    let opening: Promise<void> | null = null;
    let small = false;
    const open = (): Promise<void> =>
      (opening ??= fsOpen(tmp, 'wx', 0o666).then((n) => {
        fd = n;
      }));
    const queue: ReadChunk[] = [];
    let writing: Promise<void> | null = null;
    let writeError: unknown = null;
    let stream: RawStream | null = null;
    let ok = false;
    const failWrite = (e: unknown): void => {
      writeError ??= e;
      stream?.cancel();
    };
    const pump = (): void => {
      if (writing !== null || queue.length === 0) return;
      const batch = queue.splice(0, MAX_WRITEV);
      const done = writeError !== null ? Promise.resolve() : open().then(() => writevFully(fd, batch.map((ch) => ch.slot.buffer.subarray(0, ch.length)), batch[0]!.offset));
      writing = done.catch(failWrite).finally(() => {
        for (const ch of batch) ch.slot.release();
        writing = null;
        pump();
      });
    };
    const onChunk = (chunk: ReadChunk): void => {
      const whole = opening === null && chunk.offset === 0 && chunk.length < chunk.slot.capacity;
      if (!whole || chunk.length > o.syncIoMax) {
        queue.push(chunk);
        pump();
        return;
      }
      // The whole object in one chunk (a chunk shorter than the slot is the last): small.
      small = true;
      opening = Promise.resolve();
      try {
        fd = fs.openSync(tmp, 'wx', 0o666);
        writeSyncFully(fd, chunk.slot.buffer, chunk.length, 0);
      } catch (e) {
        failWrite(e);
      } finally {
        chunk.slot.release();
      }
    };
    try {
      stream = startRead(c, key, { readAhead: o.readAhead }, 'getFile', onChunk);
      let result: ReadResult;
      try {
        result = await stream.done;
      } finally {
        while (writing !== null) await writing;
      }
      if (writeError !== null) throw writeError;
      if (opening === null) {
        // An empty object: nothing arrived, but the file must exist.
        small = true;
        fd = fs.openSync(tmp, 'wx', 0o666);
      }
      await opening;
      if (o.fsync) await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
      const closing = fd;
      fd = -1;
      if (small) {
        fs.closeSync(closing);
        fs.renameSync(tmp, f);
      } else {
        await fsClose(closing);
        await fs.promises.rename(tmp, f);
      }
      ok = true;
      return result;
    } catch (e) {
      // A failed file write cancels the stream: report the write, not the cancellation.
      throw fsError(writeError ?? e, 'getFile', f);
    } finally {
      if (fd >= 0) fs.close(fd, () => {});
      if (!ok && opening !== null) await fs.promises.rm(tmp, { force: true }).catch(() => {});
    }
  });
}
