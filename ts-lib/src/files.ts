/**
 * Whole files between the filesystem and the store, straight through slots: putFile (fs.read into
 * slot.buffer, then PUT, or WRITEs of a streaming upload) and getFile (a read stream's chunks
 * written from the slots with positional writes into a temporary file, renamed when verified),
 * with many requests in flight.
 */

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import type { Client } from './client';
import { ShmpipeError } from './errors';
import { startRead, type RawStream } from './read-stream';
import type { Slot } from './slot';
import { openWrite, put, putOwnSlot, type Writer } from './store';
import { guard, invalid, keyBytes, type PutResult, type ReadChunk, type ReadResult } from './store-args';

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
