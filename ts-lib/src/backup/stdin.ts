/**
 * A backup of one stream (`backup --stdin`, `--stdin-from-command`): a snapshot holding one
 * file, named by `--stdin-filename` (with `/`s: under directories made for it). The stream is
 * copied into slots and written as it comes (FILE_OPEN, one FILE_WRITE per full slot, the next
 * slot filling while the previous one is written, FILE_FINISH), so its size need not be known
 * and memory stays a few slots. The snapshot is committed only when the stream ended cleanly
 * and `done` (e.g. the command's exit) resolves; otherwise the backup is aborted.
 */

import type { Readable } from 'node:stream';
import type { Client } from '../client';
import { ShmpipeError } from '../errors';
import type { Slot } from '../slot';
import { escapeName } from './names';
import { addEntries, backupAbort, backupBegin, backupCommit, close, encodeEntry, fileFinish, fileOpen, fileWrite, type CommitSummary, type Handle } from './ops';
import type { ProgressCounts } from './progress';

export interface StdinBackupOptions {
  /** The file's path in the snapshot: relative, `/`-separated (a leading `/` is dropped). */
  name: string;
  input: Readable;
  /** Resolves when the producer succeeded (rejects to abort: a command's non-zero exit). */
  done?: Promise<void>;
  host: string;
  tags?: string[];
  signal?: AbortSignal;
  onProgress?: (c: ProgressCounts) => void;
  compressionLevel?: number;
  packSizeMiB?: number;
}

export interface StdinBackupResult {
  commit: CommitSummary;
  bytesRead: number;
  durationMs: number;
}

/** The components of a `--stdin-filename`, checked: no empty, `.` or `..` component. */
export function stdinPath(name: string): string[] {
  const parts = name.replace(/^\/+/, '').split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `'${name}' cannot name the file: give a relative path without empty, . or .. components`);
  return parts;
}

export async function runStdinBackup(c: Client, repo: Handle, o: StdinBackupOptions): Promise<StdinBackupResult> {
  const started = process.hrtime.bigint();
  const parts = stdinPath(o.name).map((p) => escapeName(Buffer.from(p, 'utf8')));
  const backup = await backupBegin(c, repo, {
    host: o.host,
    paths: [`/${parts.join('/')}`],
    ...(o.tags?.length ? { tags: o.tags } : {}),
    ...(o.compressionLevel !== undefined ? { compression_level: o.compressionLevel } : {}),
    ...(o.packSizeMiB !== undefined ? { pack_size_mib: o.packSizeMiB } : {}),
  });
  const counts: ProgressCounts = { files: 0, filesTotal: 1, bytes: 0, bytesTotal: 0, totalKnown: false, errors: 0 };
  let file: Handle = 0;
  let slot: Slot | null = null;
  let writing: Promise<unknown> | null = null;
  // A stream that sends nothing would keep the loop below waiting: end it on a signal (the
  // loop then fails with a premature close, reported as the interruption below).
  const stop = (): void => void o.input.destroy();
  o.signal?.addEventListener('abort', stop);
  try {
    file = await fileOpen(c, backup);
    const flush = async (s: Slot, n: number): Promise<void> => {
      // One FILE_WRITE per file at a time: wait for the previous one, then start this one.
      if (writing !== null) await writing;
      writing = fileWrite(c, file, s, n);
      // Its failure surfaces at the next await of `writing`; keep it from being unhandled.
      writing.catch(() => {});
    };
    slot = await c.alloc();
    let fill = 0;
    for await (const chunk of o.input as AsyncIterable<Buffer>) {
      if (o.signal?.aborted) throw new ShmpipeError('SHMPIPE_E_CANCELLED', 'the backup was interrupted');
      for (let at = 0; at < chunk.length; ) {
        const n = Math.min(chunk.length - at, slot.capacity - fill);
        chunk.copy(slot.buffer, fill, at, at + n);
        fill += n;
        at += n;
        if (fill === slot.capacity) {
          const full = slot;
          slot = null;
          await flush(full, fill);
          fill = 0;
          slot = await c.alloc();
        }
      }
      counts.bytes += chunk.length;
      o.onProgress?.(counts);
    }
    if (fill > 0) {
      const last = slot;
      slot = null;
      await flush(last, fill);
    }
    if (writing !== null) await writing;
    await o.done;
    if (o.signal?.aborted) throw new ShmpipeError('SHMPIPE_E_CANCELLED', 'the backup was interrupted');
    const content = await fileFinish(c, file);
    file = 0;
    counts.files = 1;
    counts.totalKnown = true;
    o.onProgress?.(counts);

    const now = BigInt(Date.now()) * 1_000_000n;
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const meta = { uid, gid, mtimeNs: now, inode: 0n, dev: 0n };
    const lines = parts.slice(0, -1).map((_, i) => encodeEntry({ ...meta, path: parts.slice(0, i + 1).join('/'), kind: 'dir', mode: 0o40755, size: 0n }));
    lines.push(encodeEntry({ ...meta, path: parts.join('/'), kind: 'file', mode: 0o100644, size: BigInt(content.size), content: content.content }));
    const batch = await c.alloc();
    try {
      let at = 0;
      for (const l of lines) {
        at += batch.buffer.write(`${l}\n`, at, 'utf8');
      }
      await addEntries(c, backup, batch, at);
    } finally {
      batch.release();
    }
    const commit = await backupCommit(c, backup);
    return { commit, bytesRead: counts.bytes, durationMs: Number(process.hrtime.bigint() - started) / 1e6 };
  } catch (e) {
    slot?.release();
    if (writing !== null) await (writing as Promise<unknown>).catch(() => {});
    if (file !== 0) await close(c, file).catch(() => {});
    await backupAbort(c, backup).catch(() => {});
    throw o.signal?.aborted ? new ShmpipeError('SHMPIPE_E_CANCELLED', 'the backup was interrupted') : e;
  } finally {
    o.signal?.removeEventListener('abort', stop);
  }
}
