/**
 * The object-store calls of the Client (SPEC §7.2) that move one object or name: put, stat,
 * delete, list, and openWrite → Writer. Read streams are in read-stream.ts, whole files
 * (putFile/getFile) in files.ts, the argument checks in store-args.ts.
 *
 * Slot ownership: put() and Writer.write() consume the slot they are given (it is released, and
 * must not be touched again — the sidecar may still be uploading its bytes); when the sidecar
 * refused the op without taking the slot (SPEC §7.2 steps 1–3) it stays the caller's, usable
 * (`slot.released` says which).
 */

import { z } from 'zod';
import type { Client } from './client';
import { ShmpipeError } from './errors';
import { OP_ABORT, OP_COMMIT, OP_DELETE, OP_LIST, OP_OPEN_WRITE, OP_PUT, OP_STAT, OP_WRITE } from './protocol';
import type { Slot } from './slot';
import { checkRange, checkSlot, guard, keyBytes, payloadSlot, prefixBytes, invalid, type ListEntry, type ObjectInfo, type PutResult } from './store-args';
import { K_ABORT, K_COMMIT, K_DELETE, K_LIST, K_OPEN_WRITE, K_PUT, K_STAT, K_WRITE, type StoreCompletion } from './store-request';

// What the backup-engine ops (backup/ops.ts) and the package's exports take from here.
export { checkRange, checkSlot, guard, invalid, payloadSlot } from './store-args';
export type { ListEntry, ObjectInfo, PutResult, ReadChunk, ReadResult } from './store-args';
export { ReadStream, startStream, type ReadOptions } from './read-stream';
export type { FileOptions } from './files';

function infoOf(key: string, c: StoreCompletion): ObjectInfo {
  return { key, size: c.result, checksum: c.aux0 >>> 0, mtimeMs: c.aux1 };
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
export async function putOwnSlot(c: Client, key: string, slot: Slot, length: number): Promise<PutResult> {
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
