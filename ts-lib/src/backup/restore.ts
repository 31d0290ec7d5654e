/**
 * The restore pipeline (the agent half of `shmpipe restore`): lists a snapshot's entries
 * (ENTRIES_OPEN/NEXT), creates them under the target with RestoreTarget (restore-fs.ts), and
 * streams each file's content from the sidecar (CONTENT_READ) straight from the slots into the
 * file at each chunk's offset, several files at once. Directory metadata is applied last.
 * Entries of kind `other` (devices, FIFOs, sockets) are counted as skipped.
 *
 * A failure of one file does not stop the others (it is reported and counted); a failure of the
 * listing or the session is fatal. `signal` stops the listing: files already started finish
 * (or fail and are removed), then the restore rejects with SHMPIPE_E_CANCELLED.
 */

import type { Client } from '../client';
import { ShmpipeError } from '../errors';
import { entries, contentRead, type Handle, type TreeEntry } from './ops';
import type { ProgressCounts } from './progress';
import { includeFilter, RestoreTarget, type SyncFileSink } from './restore-fs';

export interface RestoreOptions {
  snapshot: string;
  target: string;
  include?: string[];
  /** Files restored at once (each a stream of up to `readAhead` slots). */
  filesInFlight?: number;
  readAhead?: number;
  onProgress?: (c: ProgressCounts) => void;
  /** A path that could not be restored. */
  onFailed?: (path: string, e: unknown) => void;
  signal?: AbortSignal;
}

export interface RestoreResult {
  snapshot: string;
  files: number;
  dirs: number;
  symlinks: number;
  skipped: number;
  failed: number;
  bytes: number;
  durationMs: number;
}

export async function runRestore(c: Client, repo: Handle, o: RestoreOptions): Promise<RestoreResult> {
  const started = process.hrtime.bigint();
  const listing = await entries(c, repo, o.snapshot);
  const target = new RestoreTarget(o.target);
  await target.prepare();
  const wanted = includeFilter(o.include ?? []);
  const readAhead = o.readAhead ?? 4;
  // Streams take their slots from the sidecar's read reserve: more files than it can feed
  // would only wait.
  // Budget in slots: a large file's stream holds up to `readAhead`, a small file's one (its
  // stream asks for one slot), so many more small files can be in flight.
  const budget = o.filesInFlight !== undefined ? o.filesInFlight * readAhead : Math.max(2 * readAhead, Math.min(64, c.layout.readReserve));
  const counts: ProgressCounts = { files: 0, filesTotal: 0, bytes: 0, bytesTotal: 0, totalKnown: false, errors: 0 };
  const r: RestoreResult = { snapshot: listing.id, files: 0, dirs: 0, symlinks: 0, skipped: 0, failed: 0, bytes: 0, durationMs: 0 };
  const progress = (): void => o.onProgress?.(counts);
  const failed = (p: string, e: unknown): void => {
    r.failed++;
    counts.errors++;
    o.onFailed?.(p, e);
  };

  // Files up to a slot's size are written with synchronous calls straight from the slots (no
  // thread-pool round trip per syscall: open, write, fchmod, futimens, close, rename); larger
  // ones stream through async writes. Files up to a chunk or so (most small files: one chunk)
  // use a stream of one slot, so many of them fit in the read reserve at once.
  const smallMax = BigInt(c.layout.slotSize);
  const oneSlot = BigInt(Math.min(c.layout.slotSize, 1 << 20));
  const restoreSmall = async (e: TreeEntry): Promise<void> => {
    let f: SyncFileSink | null = null;
    try {
      let got = 0;
      if (e.size > 0n) {
        for await (const ch of contentRead(c, repo, e.content as string, { readAhead: e.size <= oneSlot ? 1 : readAhead })) {
          f ??= target.syncFile(e);
          f.write(ch.slot.buffer, ch.length, ch.offset);
          got += ch.length;
          counts.bytes += ch.length;
        }
      }
      if (BigInt(got) !== e.size) throw new Error(`the content has ${got} bytes, the entry says ${e.size}`);
      // Only a stream that ended well is renamed into place.
      f ??= target.syncFile(e);
      f.finish();
    } catch (err) {
      f?.abort();
      throw err;
    }
    r.bytes += Number(e.size);
    r.files++;
    progress();
  };

  const restoreFile = async (e: TreeEntry): Promise<void> => {
    if (e.size <= smallMax) return restoreSmall(e);
    const sink = await target.file(e);
    try {
      if (e.size > 0n) {
        let got = 0;
        for await (const chunk of contentRead(c, repo, e.content as string, { readAhead })) {
          await sink.write(chunk.slot.buffer, chunk.length, chunk.offset);
          got += chunk.length;
          counts.bytes += chunk.length;
          progress();
        }
        if (BigInt(got) !== e.size) throw new Error(`the content has ${got} bytes, the entry says ${e.size}`);
      }
      await sink.finish();
      r.bytes += Number(e.size);
      r.files++;
    } catch (err) {
      await sink.abort().catch(() => {});
      throw err;
    }
  };

  let active = 0;
  let slotFree: (() => void) | null = null;
  const jobs = new Set<Promise<void>>();
  let fatal: unknown = null;
  try {
    for await (const e of listing) {
      if (o.signal?.aborted || fatal !== null) break;
      if (!wanted(e.path)) continue;
      counts.filesTotal++;
      if (e.kind === 'dir') {
        await target.dir(e).then(() => r.dirs++, (err: unknown) => failed(e.path, err));
        counts.files++;
      } else if (e.kind === 'symlink') {
        await target.symlink(e).then(() => r.symlinks++, (err: unknown) => failed(e.path, err));
        counts.files++;
      } else if (e.kind === 'other') {
        target.other(e);
        r.skipped++;
        counts.files++;
      } else {
        counts.bytesTotal += Number(e.size);
        const cost = e.size <= oneSlot ? 1 : readAhead;
        while (active + cost > budget && active > 0) await new Promise<void>((res) => (slotFree = res));
        active += cost;
        const job = restoreFile(e)
          .catch((err: unknown) => {
            // A session failure ends everything; a file's own failure is reported.
            if ((err as { code?: string })?.code === 'SHMPIPE_E_DISCONNECTED' || (err as { code?: string })?.code === 'SHMPIPE_E_CLOSED') fatal ??= err;
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
      }
    }
  } finally {
    // Also when the listing fails: no file job may outlive the restore (their session closes next).
    counts.totalKnown = true;
    while (jobs.size > 0) await Promise.all([...jobs]);
  }
  if (fatal !== null) throw fatal;
  if (o.signal?.aborted) throw new ShmpipeError('SHMPIPE_E_CANCELLED', 'the restore was interrupted');
  await target.finishDirs();
  progress();
  r.durationMs = Number(process.hrtime.bigint() - started) / 1e6;
  return r;
}
