/**
 * The restore pipeline (the agent half of `shmpipe restore`): lists a snapshot's entries
 * (ENTRIES_OPEN/NEXT), checks each against the listing's order and names (restore-plan.ts: the
 * repository is not trusted), selects with the include/exclude patterns (restore-select.ts), creates
 * it under the target with RestoreTarget (restore-fs.ts: directory-fd relative, never following
 * a symlink), and streams each file's content from the sidecar (CONTENT_READ) straight from the
 * slots into the file at each chunk's offset, several files at once. Directory metadata is
 * applied last, deepest first.
 *
 * A refused or failed entry does not stop the others (it is reported and counted; below a
 * directory that failed, entries are counted and reported once with it); a failure of the
 * listing or the session is fatal. `signal` stops the listing: files already started finish
 * (or fail and are removed), then the restore rejects with SHMPIPE_E_CANCELLED. Nothing is
 * deleted (--delete) for a listing that did not complete.
 *
 * Hard links: a file with a link count above 1 whose device and inode were seen before in the
 * snapshot is linked to the first one restored (when that one was restored; else it is
 * restored on its own). --verify reads every written file back and compares its SHA-256 with
 * the bytes the repository delivered (themselves authenticated by the sidecar).
 */

import { createHash, type Hash } from 'node:crypto';
import type { Client } from '../client';
import { ShmpipeError } from '../errors';
import { contentRead, entries, type Handle, type TreeEntry } from './ops';
import { selector, type PatternOptions } from './restore-select';
import type { ProgressCounts } from './progress';
import { type Action, type Overwrite, RestoreTarget, type SyncFileSink } from './restore-fs';
import { RestorePlan } from './restore-plan';
import { subtree } from './subtree';

export interface RestoreOptions extends PatternOptions {
  snapshot: string;
  /** Restore only what is below this directory of the snapshot (a repository path such as
   * `home/me`), into the target's top (restic's `SNAPSHOT:SUBFOLDER`); '' or absent: all. */
  subfolder?: string;
  target: string;
  /** What to do with what is already in the target (default if-changed). */
  overwrite?: Overwrite;
  /** Remove what the target has and the snapshot does not (within the selection). */
  delete?: boolean;
  /** Read every restored file back and compare. */
  verify?: boolean;
  /** Decide and report, write nothing (no file content is read). */
  dryRun?: boolean;
  /** Leave runs of zeros as holes in every file. */
  sparse?: boolean;
  /** Restore extended attributes (default true). */
  xattrs?: boolean;
  /** Files restored at once (each a stream of up to `readAhead` slots). */
  filesInFlight?: number;
  readAhead?: number;
  onProgress?: (c: ProgressCounts) => void;
  /** A path that could not be restored (or a metadata part of it). */
  onFailed?: (path: string, e: unknown) => void;
  /** What was done with each entry (restic's verbose_status actions), and `deleted`. */
  onAction?: (path: string, action: Action | 'deleted', size: number) => void;
  signal?: AbortSignal;
}

export interface RestoreResult {
  snapshot: string;
  /** Files written (new or replaced), hard links included. */
  files: number;
  dirs: number;
  symlinks: number;
  /** FIFOs, sockets, devices created. */
  specials: number;
  /** Files written as a hard link to another. */
  hardlinks: number;
  /** Entries already there and the same (if-changed): only their metadata was set. */
  unchanged: number;
  /** Entries kept as they were by the overwrite policy, or devices when not root. */
  skipped: number;
  deleted: number;
  verified: number;
  failed: number;
  bytes: number;
  durationMs: number;
}

const sessionGone = (err: unknown): boolean => {
  const code = (err as { code?: string })?.code;
  return code === 'SHMPIPE_E_DISCONNECTED' || code === 'SHMPIPE_E_CLOSED';
};

export async function runRestore(c: Client, repo: Handle, o: RestoreOptions): Promise<RestoreResult> {
  const started = process.hrtime.bigint();
  const select = selector(o);
  const listing = await entries(c, repo, o.snapshot);
  const counts: ProgressCounts = { files: 0, filesTotal: 0, bytes: 0, bytesTotal: 0, totalKnown: false, errors: 0 };
  const r: RestoreResult = { snapshot: listing.id, files: 0, dirs: 0, symlinks: 0, specials: 0, hardlinks: 0, unchanged: 0, skipped: 0, deleted: 0, verified: 0, failed: 0, bytes: 0, durationMs: 0 };
  const progress = (): void => o.onProgress?.(counts);
  const failed = (p: string, e: unknown): void => {
    r.failed++;
    counts.errors++;
    o.onFailed?.(p, e);
  };
  const target = new RestoreTarget(o.target, { overwrite: o.overwrite, xattrs: o.xattrs, sparse: o.sparse, dryRun: o.dryRun, onMetadataError: failed });
  await target.prepare();
  try {
    await restoreEntries(c, repo, o, subtree(listing, o.subfolder ?? ''), target, select, r, counts, failed, progress);
  } finally {
    target.close();
  }
  r.durationMs = Number(process.hrtime.bigint() - started) / 1e6;
  return r;
}

async function restoreEntries(
  c: Client,
  repo: Handle,
  o: RestoreOptions,
  listing: AsyncIterable<TreeEntry>,
  target: RestoreTarget,
  select: ReturnType<typeof selector>,
  r: RestoreResult,
  counts: ProgressCounts,
  failed: (p: string, e: unknown) => void,
  progress: () => void,
): Promise<void> {
  const readAhead = o.readAhead ?? 4;
  // Streams take their slots from the sidecar's read reserve: more files than it can feed
  // would only wait. Budget in slots: a large file's stream holds up to `readAhead`, a small
  // file's one (its stream asks for one slot), so many more small files can be in flight.
  const budget = o.filesInFlight !== undefined ? o.filesInFlight * readAhead : Math.max(2 * readAhead, Math.min(64, c.layout.readReserve));
  const act = (p: string, a: Action | 'deleted', size = 0): void => o.onAction?.(p, a, size);
  const plan = new RestorePlan({
    onRunEnd: o.delete
      ? (dir, names) => {
          try {
            target.deleteExtra(dir, names, (p, isDir) => select(p, isDir).restore, (p) => {
              r.deleted++;
              act(p, 'deleted');
            });
          } catch (err) {
            failed(dir === '' ? '.' : dir, err);
          }
        }
      : undefined,
  });

  // Files up to a slot's size are written with synchronous calls straight from the slots (no
  // thread-pool round trip per syscall); larger ones stream through async writes. Files up to
  // a chunk or so (most small files: one chunk) use a stream of one slot, so many of them fit
  // in the read reserve at once.
  const smallMax = BigInt(c.layout.slotSize);
  const oneSlot = BigInt(Math.min(c.layout.slotSize, 1 << 20));

  /** The content of `e` into `write` in order; the SHA-256 of what was written (--verify). */
  const stream = async (e: TreeEntry, ahead: number, write: (buf: Buffer, len: number, off: number) => void | Promise<void>): Promise<Hash | null> => {
    const h = o.verify ? createHash('sha256') : null;
    let got = 0;
    if (e.size > 0n) {
      for await (const ch of contentRead(c, repo, e.content as string, { readAhead: ahead })) {
        if (ch.offset !== got) throw new ShmpipeError('SHMPIPE_E_PROTOCOL', `content of ${e.path}: a chunk at ${ch.offset}, expected ${got}`);
        if (BigInt(got + ch.length) > e.size) throw new ShmpipeError('SHMPIPE_E_INTEGRITY', `the content of ${e.path} is longer than the ${e.size} bytes its entry says`);
        await write(ch.slot.buffer, ch.length, ch.offset);
        h?.update(ch.slot.buffer.subarray(0, ch.length));
        got += ch.length;
        counts.bytes += ch.length;
      }
    }
    if (BigInt(got) !== e.size) throw new ShmpipeError('SHMPIPE_E_INTEGRITY', `the content of ${e.path} has ${got} bytes, its entry says ${e.size}`);
    return h;
  };

  const verify = async (e: TreeEntry, names: Buffer[], h: Hash | null): Promise<void> => {
    if (h === null) return;
    const want = h.digest('hex');
    const back = await target.readBack(e, names);
    if (BigInt(back.size) !== e.size || back.sha256 !== want) {
      throw new ShmpipeError('SHMPIPE_E_IO', `verification failed: ${e.path} reads back as ${back.size} bytes with another SHA-256 than what was restored`);
    }
    r.verified++;
  };

  const restoreSmall = async (e: TreeEntry, names: Buffer[]): Promise<void> => {
    let f: SyncFileSink | null = null;
    try {
      const h = await stream(e, e.size <= oneSlot ? 1 : readAhead, (buf, len, off) => {
        f ??= target.syncFile(e, names);
        f.write(buf, len, off);
      });
      // Only a stream that ended well is renamed into place.
      f ??= target.syncFile(e, names);
      f.finish();
      f = null;
      await verify(e, names, h);
    } catch (err) {
      (f as SyncFileSink | null)?.abort();
      throw err;
    }
  };

  const restoreLarge = async (e: TreeEntry, names: Buffer[]): Promise<void> => {
    const sink = await target.file(e, names);
    let h: Hash | null;
    try {
      h = await stream(e, readAhead, async (buf, len, off) => {
        await sink.write(buf, len, off);
        progress();
      });
      await sink.finish();
    } catch (err) {
      await sink.abort().catch(() => {});
      throw err;
    }
    await verify(e, names, h);
  };

  /** First restored file of each (device, inode) with more than one link. */
  const linked = new Map<string, { path: string; names: Buffer[]; done: Promise<boolean> }>();

  let active = 0;
  let slotFree: (() => void) | null = null;
  const jobs = new Set<Promise<void>>();
  let fatal: unknown = null;

  const startJob = (e: TreeEntry, cost: number, run: () => Promise<void>): Promise<boolean> => {
    active += cost;
    let ok = false;
    const job = run()
      .then(() => {
        ok = true;
      })
      .catch((err: unknown) => {
        // A session failure ends everything; a file's own failure is reported.
        if (sessionGone(err)) fatal ??= err;
        else failed(e.path, err);
      })
      .finally(() => {
        active -= cost;
        counts.files++;
        jobs.delete(job);
        const w = slotFree;
        slotFree = null;
        w?.();
        progress();
      });
    jobs.add(job);
    return job.then(() => ok);
  };

  const fileEntry = async (e: TreeEntry, names: Buffer[]): Promise<void> => {
    const key = (e.links ?? 0) > 1 ? `${e.dev}:${e.inode}` : null;
    const first = key === null ? undefined : linked.get(key);
    const decision = target.fileDecision(e, names);
    if (!decision.write) {
      count(decision.action, 'file', e);
      // A kept file (skipped) may differ from the snapshot's: no link to it.
      if (key !== null && first === undefined) linked.set(key, { path: e.path, names, done: Promise.resolve(decision.action !== 'skipped') });
      return;
    }
    counts.bytesTotal += Number(e.size);
    if (first !== undefined) {
      startJob(e, 0, async () => {
        if (await first.done) {
          const a = target.link(e, names, first);
          r.hardlinks++;
          count(a, 'file', e, false);
        } else await writeFile(e, names, decision.action);
      });
      return;
    }
    const cost = e.size <= oneSlot ? 1 : readAhead;
    while (active + cost > budget && active > 0) await new Promise<void>((res) => (slotFree = res));
    const done = startJob(e, cost, () => writeFile(e, names, decision.action));
    if (key !== null) linked.set(key, { path: e.path, names, done });
  };

  const writeFile = async (e: TreeEntry, names: Buffer[], action: Action): Promise<void> => {
    await (e.size <= smallMax ? restoreSmall(e, names) : restoreLarge(e, names));
    count(action, 'file', e);
  };

  const count = (a: Action, kind: string, e: TreeEntry, bytes = true): void => {
    if (a === 'skipped') r.skipped++;
    else if (a === 'unchanged') r.unchanged++;
    else if (kind === 'file') {
      r.files++;
      if (bytes) r.bytes += Number(e.size);
    } else if (kind === 'dir') r.dirs++;
    else if (kind === 'symlink') r.symlinks++;
    else r.specials++;
    act(e.path, a, kind === 'file' ? Number(e.size) : 0);
  };

  let complete = false;
  try {
    for await (const e of listing) {
      if (o.signal?.aborted || fatal !== null) break;
      const isDir = e.kind === 'dir';
      let names: Buffer[];
      try {
        const p = plan.accept(e.path, isDir);
        if (p === null) {
          r.failed++;
          counts.errors++;
          continue;
        }
        names = p.names;
      } catch (err) {
        failed(e.path, err);
        if (isDir) plan.failed(e.path);
        continue;
      }
      const sel = select(e.path, isDir);
      if (!sel.restore && !sel.descend) continue;
      counts.filesTotal++;
      try {
        if (isDir) {
          const a = target.dir(e, names, !sel.restore);
          if (sel.restore) count(a, 'dir', e);
          counts.files++;
        } else if (e.kind === 'symlink') {
          count(target.symlink(e, names), 'symlink', e);
          counts.files++;
        } else if (e.kind === 'other') {
          count(target.special(e, names), 'other', e);
          counts.files++;
        } else {
          await fileEntry(e, names);
        }
      } catch (err) {
        failed(e.path, err);
        if (isDir) plan.failed(e.path);
        counts.files++;
      }
    }
    complete = !(o.signal?.aborted || fatal !== null);
    if (complete) plan.finish();
  } finally {
    // Also when the listing fails: no file job may outlive the restore (their session closes next).
    counts.totalKnown = true;
    while (jobs.size > 0) await Promise.all([...jobs]);
  }
  for (const b of plan.belowFailed()) {
    o.onFailed?.(b.path, new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `${b.count} entries below it were not restored either`));
  }
  if (fatal !== null) throw fatal;
  if (o.signal?.aborted) throw new ShmpipeError('SHMPIPE_E_CANCELLED', 'the restore was interrupted');
  target.finishDirs();
  progress();
}
