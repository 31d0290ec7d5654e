/**
 * Read streams (SPEC §7.2 OPEN_READ, and the backup engine's CONTENT_READ, §7.3): the low-level
 * startStream that both ops share (chunks in slots granted with MORE | SLOT, ABORT of the handle
 * to cancel), and ReadStream, the async iterable over the chunks that openRead() returns. A
 * stream's chunks are released when the iteration moves on.
 */

import { z } from 'zod';
import type { Client } from './client';
import { OP_ABORT, OP_OPEN_READ, RANGE_TO_END } from './protocol';
import { invalid, keyBytes, payloadSlot, type ReadChunk, type ReadResult } from './store-args';
import { K_ABORT, K_OPEN_READ, type StreamSink } from './store-request';

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

export function startRead(c: Client, key: string, options: ReadOptions | undefined, op: string, onChunk: (chunk: ReadChunk) => void): RawStream {
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
