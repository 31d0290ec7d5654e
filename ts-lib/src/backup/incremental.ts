/**
 * The incremental test: whether a file may be recorded by reference to its parent snapshot's
 * content instead of being read again. Same rule as restic's default: the same size, mtime (ns)
 * and inode as the parent's entry at the same path. The device number is not compared: it is
 * not stable across reboots or remounts of the same filesystem, and inode + mtime + size
 * already pin the file.
 */

import type { SourceEntry } from './walk';

/** What the parent snapshot says about a path (from its entries). */
export interface ParentFile {
  kind: string;
  size: bigint;
  mtimeNs: bigint;
  inode: bigint;
}

export type Change = 'new' | 'changed' | 'unchanged';

export function classify(e: SourceEntry, parent: ParentFile | undefined): Change {
  if (parent === undefined) return 'new';
  if (e.kind !== parent.kind) return 'changed';
  // Directories, symlinks and others have no content to read: their mtime tells a change.
  if (e.kind !== 'file') return e.mtimeNs === parent.mtimeNs ? 'unchanged' : 'changed';
  return e.size === parent.size && e.mtimeNs === parent.mtimeNs && e.inode === parent.inode ? 'unchanged' : 'changed';
}
