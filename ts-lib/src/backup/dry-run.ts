/**
 * `backup --dry-run`: what a backup would do, without doing it. Walks the sources with the
 * same selection and compares them with the parent snapshot exactly as the backup would
 * (incremental.ts), but reads no file and writes nothing to the repository (no BACKUP_BEGIN).
 */

import type { Client } from '../client';
import { findParent, openParent, snapshotPaths } from './backup';
import { classify, type Change } from './incremental';
import type { Handle } from './ops';
import type { ParentCursor } from './parent-cursor';
import { walk, type Select, type SourceEntry, type WalkError } from './walk';

export interface DryRunOptions {
  paths: string[];
  /** As runBackup's: undefined is the latest snapshot of this host and these paths. */
  parent?: string | null | undefined;
  host: string;
  select?: Select;
  onUnreadable?: (e: WalkError) => void;
  /** Every entry that would be in the snapshot, in walk order, with what the backup would do. */
  onEntry?: (e: SourceEntry, change: Change) => void;
}

export interface DryRunResult {
  parent: string | null;
  files_new: number;
  files_changed: number;
  files_unchanged: number;
  dirs: number;
  others: number;
  entries: number;
  unreadable: number;
  /** What the backup would read: the sizes of new and changed files. */
  bytes_to_read: number;
}

export async function dryRunBackup(c: Client, repo: Handle, o: DryRunOptions): Promise<DryRunResult> {
  const parent = o.parent === undefined ? await findParent(c, repo, o.host, snapshotPaths(o.paths)) : o.parent;
  const previous = await openParent(c, repo, parent, o.paths);
  try {
    return await dryRunWith(o, parent, previous);
  } finally {
    await previous.close().catch(() => {});
  }
}

async function dryRunWith(o: DryRunOptions, parent: string | null, previous: ParentCursor): Promise<DryRunResult> {
  const r: DryRunResult = { parent, files_new: 0, files_changed: 0, files_unchanged: 0, dirs: 0, others: 0, entries: 0, unreadable: 0, bytes_to_read: 0 };
  const unreadable = (e: WalkError): void => {
    r.unreadable++;
    o.onUnreadable?.(e);
  };
  for await (const e of walk(o.paths, unreadable, o.select)) {
    const change = classify(e, await previous.lookup(e.path));
    r.entries++;
    if (e.kind === 'file') {
      r[`files_${change}`]++;
      if (change !== 'unchanged') r.bytes_to_read += Number(e.size);
    } else if (e.kind === 'dir') {
      r.dirs++;
    } else {
      r.others++;
    }
    o.onEntry?.(e, change);
  }
  return r;
}
