/**
 * The backup pipeline (the agent half of `shmpipe backup`): walks the sources, reads every file
 * straight into slots and hands it to the sidecar's engine (FILE_PUT for a file that fits one
 * slot, else FILE_OPEN + FILE_WRITE per slot + FILE_FINISH), with many files in flight, and adds
 * the tree entries in walk order (ADD_ENTRIES, lines batched into a slot). Files finish out of
 * order, so entries wait in an ordered queue and the ready prefix is flushed.
 *
 * Incremental: with a parent snapshot (the latest one of the same host and paths, or a given
 * id), its entries are loaded into a map, and a file with the same kind, size, mtime and inode
 * (incremental.ts) is recorded with the parent's content reference, without being read.
 *
 * Sources are not trusted (source.ts): a file is opened without following a symlink or
 * blocking on a FIFO and checked against what the walk saw; what it became meanwhile is
 * recorded as what it is now, and a file that changed while it was read is kept as read —
 * both reported to `onWarning` (the CLI exits 3, as restic does). Change detection is
 * restic's: size, mtime, ctime and inode (incremental.ts); `force` reads everything again.
 * A file with more than one link whose device and inode were seen earlier in this backup is
 * recorded with the first one's content, not read again. Extended attributes (POSIX ACLs
 * included) are recorded unless `xattrs` is false; an unchanged file keeps its parent's
 * (changing an xattr moves ctime).
 *
 * A file that cannot be read (EACCES, vanished, I/O error) is reported to `onUnreadable` and
 * left out; the backup still commits. A failure of the sidecar or of an entry batch is fatal:
 * the backup is aborted (BACKUP_ABORT), nothing is committed, and the error propagates. So is
 * `signal` (SIGINT/SIGTERM in the CLI), with SHMPIPE_E_CANCELLED.
 */

import * as fs from 'node:fs';
import type { BigIntStats } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '../client';
import { ShmpipeError } from '../errors';
import { Fifo } from '../fifo';
import type { Slot } from '../slot';
import { classify, type Change } from './incremental';
import { addEntries, backupAbort, backupBegin, backupCommit, close, decodeParentEntry, encodeEntry, entryLines, fileFinish, fileOpen, filePut, fileWrite, snapshots, type CommitSummary, type FileContent, type Handle } from './ops';
import type { ProgressCounts } from './progress';
import { changedWhileRead, openSource, openSourceSync, readSparse, readSyncUpTo, readUpTo, readXattrs, Unreadable } from './source';
import { ParentCursor, WalkOrder, noParent } from './parent-cursor';
import { rootNames, walk, type Select, type SourceEntry, type WalkError } from './walk';

export interface BackupOptions {
  /** The roots, as given on the command line. */
  paths: string[];
  /** A parent snapshot id; undefined: the latest of this host and these paths; null: none. */
  parent?: string | null | undefined;
  host?: string;
  tags?: string[];
  /** A path that could not be read or listed (left out of the snapshot). */
  onUnreadable?: (e: WalkError) => void;
  /** A path that changed while it was backed up (recorded as it was read, or as it is now). */
  onWarning?: (e: WalkError) => void;
  /** Read every file, also those the parent says are unchanged (restic's --force). */
  force?: boolean;
  /** Record extended attributes and POSIX ACLs (default true). */
  xattrs?: boolean;
  /** Tests only: called just before a file is opened for reading, and after it was read
   * (before the final check), to change the source at a known point. */
  testHooks?: { beforeOpen?: (e: SourceEntry) => void; afterRead?: (e: SourceEntry) => void };
  /** Called often; throttle on the receiving side (progress.ts). */
  onProgress?: (c: ProgressCounts) => void;
  signal?: AbortSignal;
  /** What to leave out (select.ts). */
  select?: Select;
  /** zstd level of new blobs (0 off) and pack size for this backup: the repository's if unset. */
  compressionLevel?: number;
  packSizeMiB?: number;
  /** Files read at once (at most; the slots bound it too). */
  readConcurrency?: number;
}

export interface BackupResult {
  commit: CommitSummary;
  /** The parent the backup compared against, or null. */
  parent: string | null;
  /** Entries left out because they could not be read. */
  unreadable: number;
  /** Entries that changed while they were backed up. */
  warnings: number;
  /** Bytes this agent read from files. */
  bytesRead: number;
  /** Wall time of the whole backup (parent lookup, walk, upload, commit). */
  durationMs: number;
}

/** An entry waiting to be added: its line once known (null: left out). */
interface Pending {
  line: string | null;
  ready: boolean;
}

/**
 * Files up to this size are read with synchronous calls: a few µs on the event loop for a
 * page-cached file instead of several thread-pool round trips (as store.ts putFile does).
 */
const SYNC_READ_MAX = 256 << 10;
/** Files streamed (FILE_OPEN/WRITE/FINISH) at once: enough to keep the sidecar's workers busy. */
const MAX_STREAMED_FILES = 4;
/** Entries queued behind an unfinished file before the walk waits for the queue to drain. */
const MAX_QUEUED_ENTRIES = 100_000;

/** The snapshot paths of a backup: the roots made absolute (what a parent must match). */
export function snapshotPaths(roots: readonly string[]): string[] {
  return roots.map((r) => path.resolve(r));
}

/** The latest snapshot of `host` with exactly `paths`, or null. */
export async function findParent(c: Client, repo: Handle, host: string, paths: readonly string[]): Promise<string | null> {
  const want = [...paths].sort().join('\0');
  const list = await snapshots(c, repo);
  for (let i = list.length - 1; i >= 0; i--) {
    const s = list[i]!;
    if (s.host === host && [...s.paths].sort().join('\0') === want) return s.id;
  }
  return null;
}

/**
 * The parent's entries, streamed in step with the walk (parent-cursor.ts): memory does not grow
 * with the parent's size. Lines are decoded lean (`decodeParentEntry`).
 */
export async function openParent(c: Client, repo: Handle, id: string | null, roots: readonly string[]): Promise<ParentCursor> {
  const order = new WalkOrder(rootNames(roots));
  return id === null ? noParent(order) : new ParentCursor(await entryLines(c, repo, id, decodeParentEntry), order);
}

export async function runBackup(c: Client, repo: Handle, o: BackupOptions): Promise<BackupResult> {
  const started = process.hrtime.bigint();
  const host = o.host ?? os.hostname();
  const paths = snapshotPaths(o.paths);
  const parent = o.parent === undefined ? await findParent(c, repo, host, paths) : o.parent;
  const parentEntries = await openParent(c, repo, parent, o.paths);
  try {
    return await backupWith(c, repo, o, started, host, paths, parent, parentEntries);
  } finally {
    await parentEntries.close().catch(() => {});
  }
}

async function backupWith(c: Client, repo: Handle, o: BackupOptions, started: bigint, host: string, paths: string[], parent: string | null, parentEntries: ParentCursor): Promise<BackupResult> {

  const backup = await backupBegin(c, repo, {
    host,
    paths,
    ...(o.tags?.length ? { tags: o.tags } : {}),
    ...(parent !== null ? { parent } : {}),
    ...(o.compressionLevel !== undefined ? { compression_level: o.compressionLevel } : {}),
    ...(o.packSizeMiB !== undefined ? { pack_size_mib: o.packSizeMiB } : {}),
  });
  const slotSize = c.layout.slotSize;
  // Slots: a file in flight holds at most two (one being read, one being written); the sidecar
  // keeps a streamed file's written slots until its chunker has cut them (less than a maximum
  // chunk stays: at most two slots, three to be safe); one more for an entry batch. Were the
  // agent to wait for a slot that only its own next write would free, the backup would hang.
  const maxStreamed = Math.max(1, Math.min(MAX_STREAMED_FILES, o.readConcurrency ?? MAX_STREAMED_FILES, Math.floor((c.layout.grantWindow - 3) / 5)));
  // One slot more is kept free for the parent's next page of entries (ENTRIES_NEXT, asked for
  // by the walk while files are in flight).
  const maxFiles = Math.max(1, Math.min(o.readConcurrency ?? 64, Math.floor((c.layout.grantWindow - 2 - 3 * maxStreamed) / 2)));

  const counts: ProgressCounts = { files: 0, filesTotal: 0, bytes: 0, bytesTotal: 0, totalKnown: false, errors: 0 };
  const progress = (): void => o.onProgress?.(counts);
  let fatal: unknown = null;
  const fail = (e: unknown): void => {
    fatal ??= e;
  };
  const cancelled = (): boolean => fatal !== null || o.signal?.aborted === true;

  // ---- entries, in walk order -----------------------------------------------------------
  const queue = new Fifo<Pending>();
  let batch: string[] = [];
  let batchBytes = 0;
  let adding: Promise<void> = Promise.resolve();
  let drained: (() => void) | null = null;

  const sendBatch = (): void => {
    if (batch.length === 0) return;
    const lines = batch;
    batch = [];
    batchBytes = 0;
    // One ADD_ENTRIES at a time: the order they are added in is the snapshot's order.
    adding = adding.then(async () => {
      if (fatal !== null) return;
      const slot = await c.alloc();
      try {
        let at = 0;
        for (const l of lines) {
          at += slot.buffer.write(l, at, 'utf8');
          slot.buffer[at++] = 0x0a;
        }
        await addEntries(c, backup, slot, at);
      } finally {
        slot.release();
      }
    });
    adding.catch(fail);
  };
  const flush = (): void => {
    for (let head = queue.peek(); head !== undefined && head.ready; head = queue.peek()) {
      queue.shift();
      if (head.line === null) continue;
      const n = Buffer.byteLength(head.line, 'utf8') + 1;
      if (n > slotSize) {
        fail(new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `an entry of ${n} bytes does not fit a slot of ${slotSize}`));
        continue;
      }
      if (batchBytes + n > slotSize) sendBatch();
      batch.push(head.line);
      batchBytes += n;
    }
    if (drained !== null && queue.length < MAX_QUEUED_ENTRIES / 2) {
      drained();
      drained = null;
    }
  };

  const unreadable = (e: WalkError): void => {
    counts.errors++;
    o.onUnreadable?.(e);
  };
  let warnings = 0;
  const warn = (e: SourceEntry, message: string): void => {
    warnings++;
    o.onWarning?.({ path: e.path, op: 'read', code: undefined, message });
  };
  const withXattrs = o.xattrs !== false;
  /** `e` with its xattrs read from `from` (a warning, not a failure, if they cannot be). */
  const xattrsOf = (e: SourceEntry, from: number | Buffer): SourceEntry => {
    if (!withXattrs) return e;
    try {
      const x = readXattrs(from);
      return x === undefined ? e : { ...e, xattrs: x };
    } catch (err) {
      warn(e, `its extended attributes could not be read: ${(err as Error).message}`);
      return e;
    }
  };

  // ---- file contents --------------------------------------------------------------------
  /** What a file job produced: its content and entry as read, or what the path is now. */
  type Read = { content: FileContent | null; entry: SourceEntry };

  /** Opens `e` (source.ts: checked against the walk), or gives what it is now instead. */
  const opened = async (e: SourceEntry, sync: boolean): Promise<{ fd: number; st: BigIntStats; entry: SourceEntry } | Read> => {
    o.testHooks?.beforeOpen?.(e);
    const r = sync ? await openSourceSync(e) : await openSource(e);
    if (r.warning !== null) warn(e, r.warning);
    if (r.fd < 0) {
      return { content: null, entry: xattrsOf(r.entry, r.entry.abs) };
    }
    const ok = r as { fd: number; st: BigIntStats; entry: SourceEntry };
    return { fd: ok.fd, st: ok.st, entry: xattrsOf(ok.entry, ok.fd) };
  };

  /** After the read: the final check (did it change while read?). */
  const checkAfter = (e: SourceEntry, fd: number, st: BigIntStats, got: number): void => {
    o.testHooks?.afterRead?.(e);
    const why = changedWhileRead(fd, st, got);
    if (why !== null) warn(e, why);
  };

  /** A file that fits one slot: read it in, FILE_PUT, the slot comes back with the reference. */
  const putSmall = async (e: SourceEntry): Promise<Read> => {
    const sync = Number(e.size) <= SYNC_READ_MAX;
    const f = await opened(e, sync);
    if (!('fd' in f)) return f;
    const size = Number(f.st.size);
    let slot: Slot | null = null;
    let n: number;
    try {
      if (size > slotSize) throw new Unreadable('read', new Error('it grew past a slot since the walk'), 'EAGAIN');
      slot = await c.alloc();
      try {
        n = sync && size <= SYNC_READ_MAX ? readSyncUpTo(f.fd, slot.buffer, size) : await readUpTo(f.fd, slot.buffer, size, 0);
      } catch (err) {
        throw new Unreadable('read', err);
      }
      checkAfter(e, f.fd, f.st, n);
    } catch (err) {
      slot?.release();
      throw err;
    } finally {
      fs.close(f.fd, () => {});
    }
    try {
      counts.bytes += n;
      return { content: await filePut(c, backup, slot, n), entry: f.entry };
    } finally {
      slot.release();
    }
  };

  /** A larger file: slot-sized reads, the next one running while the previous one is written. */
  const putLarge = async (e: SourceEntry): Promise<Read | null> => {
    const f = await opened(e, false);
    if (!('fd' in f)) return f;
    const { fd, st } = f;
    const size = Number(st.size);
    const holes = f.entry.sparse === true;
    const readAt = async (pos: number): Promise<{ slot: Slot; n: number }> => {
      const slot = await c.alloc();
      try {
        const len = Math.min(slotSize, size - pos);
        return { slot, n: holes ? await readSparse(fd, slot.buffer, len, pos, size) : await readUpTo(fd, slot.buffer, len, pos) };
      } catch (err) {
        slot.release();
        throw new Unreadable('read', err);
      }
    };
    let next: Promise<{ slot: Slot; n: number }> | null = null;
    let file: Handle = 0;
    try {
      file = await fileOpen(c, backup);
      let pos = 0;
      next = readAt(0);
      while (next !== null) {
        const { slot, n } = await next;
        next = null;
        if (cancelled()) {
          slot.release();
          return null;
        }
        pos += n;
        // A short read means the file shrank: it ends here.
        if (n === slotSize && pos < size) next = readAt(pos);
        counts.bytes += n;
        await fileWrite(c, file, slot, n);
        progress();
      }
      checkAfter(e, fd, st, pos);
      const content = await fileFinish(c, file);
      file = 0;
      return { content, entry: f.entry };
    } finally {
      // After a failure a read may still run: wait for it (the fd closes next), return its slot.
      if (next !== null) await next.then((r) => r.slot.release(), () => {});
      if (file !== 0) await close(c, file).catch(() => {});
      fs.close(fd, () => {});
    }
  };

  /** The first file of each (device, inode) with more than one link: later ones share its content. */
  const linked = new Map<string, Promise<Read | null>>();

  let active = 0;
  let streamed = 0;
  let slotFree: (() => void) | null = null;
  const jobs = new Set<Promise<void>>();
  const startFile = (e: SourceEntry, item: Pending, change: Change, first?: Promise<Read | null>): Promise<Read | null> => {
    const size = Number(e.size);
    const large = size > slotSize;
    active++;
    if (large) streamed++;
    let result: Read | null = null;
    const read = async (): Promise<Read | null> => {
      // A hard link to a file read earlier in this backup: its content, unless that failed.
      const shared = first === undefined ? null : await first;
      if (shared?.content != null && shared.entry.kind === 'file') return { content: shared.content, entry: { ...e, xattrs: shared.entry.xattrs } };
      return large ? putLarge(e) : putSmall(e);
    };
    const job = (async () => {
      try {
        result = await read();
        if (result === null) return;
        const r = result.entry;
        if (result.content !== null) item.line = encodeEntry({ ...r, size: BigInt(result.content.size), content: result.content.content }, change);
        else item.line = encodeEntry(r);
      } catch (err) {
        if (!(err instanceof Unreadable)) throw err;
        unreadable({ path: e.path, op: err.op, code: typeof err.code === 'string' ? err.code : undefined, message: err.message });
      }
    })()
      .catch(fail)
      .finally(() => {
        item.ready = true;
        counts.files++;
        active--;
        if (large) streamed--;
        jobs.delete(job);
        const w = slotFree;
        slotFree = null;
        w?.();
        flush();
        progress();
      });
    jobs.add(job);
    return job.then(() => result, () => null);
  };

  try {
    for await (const e of walk(o.paths, unreadable, o.select)) {
      if (cancelled()) break;
      counts.filesTotal++;
      // Asked for every entry, in walk order: the cursor moves forward with the walk.
      const prev = await parentEntries.lookup(e.path);
      const change = e.kind === 'file' ? classify(e, prev, o.force === true) : 'new';
      const item: Pending = { line: null, ready: false };
      queue.push(item);
      if (e.kind === 'file' && change === 'unchanged' && prev?.content !== undefined) {
        item.line = encodeEntry({ ...e, content: prev.content, ...(withXattrs && prev.xattrs ? { xattrs: prev.xattrs } : {}) }, 'unchanged');
        item.ready = true;
        counts.files++;
      } else if (e.kind === 'file') {
        counts.bytesTotal += Number(e.size);
        const large = Number(e.size) > slotSize;
        while ((active >= maxFiles || (large && streamed >= maxStreamed)) && !cancelled()) await new Promise<void>((r) => (slotFree = r));
        if (cancelled()) break;
        const key = (e.links ?? 0) > 1 ? `${e.dev}:${e.inode}` : null;
        const first = key === null ? undefined : linked.get(key);
        const done = startFile(e, item, change, first);
        if (key !== null && first === undefined) linked.set(key, done);
      } else {
        item.line = encodeEntry(xattrsOf(e, e.abs));
        item.ready = true;
        counts.files++;
      }
      flush();
      if (queue.length >= MAX_QUEUED_ENTRIES) await new Promise<void>((r) => (drained = r));
    }
    counts.totalKnown = true;
    // Every root failed (missing, unreadable): an empty snapshot would only hide that.
    if (counts.filesTotal === 0 && !cancelled()) throw new ShmpipeError('SHMPIPE_E_IO', 'nothing to back up: none of the paths could be read');
    while (jobs.size > 0) await Promise.all([...jobs]);
    flush();
    sendBatch();
    await adding.catch(() => {});
    if (o.signal?.aborted) throw new ShmpipeError('SHMPIPE_E_CANCELLED', 'the backup was interrupted');
    if (fatal !== null) throw fatal;
    progress();
    const commit = await backupCommit(c, backup);
    return { commit, parent, unreadable: counts.errors, warnings, bytesRead: counts.bytes, durationMs: Number(process.hrtime.bigint() - started) / 1e6 };
  } catch (e) {
    fail(e);
    while (jobs.size > 0) await Promise.all([...jobs]);
    await adding.catch(() => {});
    // Nothing committed: the sidecar drops what was stored for it (REPOSITORY.md).
    await backupAbort(c, backup).catch(() => {});
    throw o.signal?.aborted ? new ShmpipeError('SHMPIPE_E_CANCELLED', 'the backup was interrupted') : e;
  }
}
