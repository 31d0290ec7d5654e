/**
 * Copying snapshots between repositories (`shmpipe copy`), as restic does without
 * `--copy-chunker-params`: each snapshot becomes a new backup in the destination with the
 * original's time, host, paths and tags, whose files are read from the source (CONTENT_READ,
 * verified) and written into the destination (FILE_OPEN/WRITE/FINISH) — so the data is chunked
 * and deduplicated by the destination's own chunker and keys, whatever the source's were, and
 * the repositories may have different passwords. Two sessions, two sidecars: the bytes go
 * from a source slot to a destination slot (one copy), a slot at a time per file.
 *
 * A file whose source content was already copied in this run (a duplicate, or an unchanged
 * file of the next snapshot) reuses the destination's content reference without reading it
 * again. A failure aborts the destination backup in progress (nothing committed for that
 * snapshot); snapshots copied before it stay.
 */

import type { Client } from '../client';
import { ShmpipeError } from '../errors';
import { addEntries, backupAbort, backupBegin, backupCommit, close, contentRead, encodeEntry, entries, fileFinish, fileOpen, fileWrite, type CommitSummary, type Handle, type SnapshotInfo } from './ops';

export interface RepoRef {
  client: Client;
  repo: Handle;
}

export interface CopyOptions {
  compressionLevel?: number;
  packSizeMiB?: number;
  signal?: AbortSignal;
  /** Bytes copied so far (of file contents), called as they go. */
  onBytes?: (n: number) => void;
}

/** Whether `a` (in the destination) is a copy of `b`: same time, host, paths and tags. */
export function sameSnapshot(a: SnapshotInfo, b: SnapshotInfo): boolean {
  const key = (s: SnapshotInfo): string => JSON.stringify([s.time_ns, s.host, [...s.paths].sort(), [...s.tags].sort()]);
  return key(a) === key(b);
}

/** Source content reference → destination content reference, across the snapshots of one run. */
export type ContentMap = Map<string, string>;

async function copyContent(src: RepoRef, dst: RepoRef, backup: Handle, content: string, o: CopyOptions): Promise<string> {
  const file = await fileOpen(dst.client, backup);
  let open = true;
  try {
    for await (const ch of contentRead(src.client, src.repo, content)) {
      if (o.signal?.aborted) throw new ShmpipeError('SHMPIPE_E_CANCELLED', 'the copy was interrupted');
      const slot = await dst.client.alloc();
      try {
        if (ch.length > slot.capacity) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `a source chunk of ${ch.length} bytes does not fit a destination slot of ${slot.capacity}`);
        ch.slot.buffer.copy(slot.buffer, 0, 0, ch.length);
      } catch (e) {
        slot.release();
        throw e;
      }
      await fileWrite(dst.client, file, slot, ch.length);
      o.onBytes?.(ch.length);
    }
    const r = await fileFinish(dst.client, file);
    open = false;
    return r.content;
  } finally {
    if (open) await close(dst.client, file).catch(() => {});
  }
}

/** Copies one snapshot; resolves with the destination's commit. */
export async function copySnapshot(src: RepoRef, dst: RepoRef, s: SnapshotInfo, copied: ContentMap, o: CopyOptions = {}): Promise<CommitSummary> {
  const backup = await backupBegin(dst.client, dst.repo, {
    host: s.host,
    paths: s.paths,
    time_ns: s.time_ns,
    ...(s.tags.length ? { tags: s.tags } : {}),
    ...(o.compressionLevel !== undefined ? { compression_level: o.compressionLevel } : {}),
    ...(o.packSizeMiB !== undefined ? { pack_size_mib: o.packSizeMiB } : {}),
  });
  const slotSize = dst.client.layout.slotSize;
  let batch: string[] = [];
  let batchBytes = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const slot = await dst.client.alloc();
    try {
      let at = 0;
      for (const l of batch) at += slot.buffer.write(`${l}\n`, at, 'utf8');
      await addEntries(dst.client, backup, slot, at);
    } finally {
      slot.release();
    }
    batch = [];
    batchBytes = 0;
  };
  try {
    for await (const e of await entries(src.client, src.repo, s.id)) {
      if (o.signal?.aborted) throw new ShmpipeError('SHMPIPE_E_CANCELLED', 'the copy was interrupted');
      let content: string | undefined;
      if (e.kind === 'file') {
        const from = e.content!;
        content = copied.get(from);
        if (content === undefined) {
          content = await copyContent(src, dst, backup, from, o);
          copied.set(from, content);
        }
      }
      const line = encodeEntry({ ...e, content });
      const n = Buffer.byteLength(line, 'utf8') + 1;
      if (batchBytes + n > slotSize) await flush();
      batch.push(line);
      batchBytes += n;
    }
    await flush();
    return await backupCommit(dst.client, backup);
  } catch (e) {
    await backupAbort(dst.client, backup).catch(() => {});
    throw e;
  }
}
