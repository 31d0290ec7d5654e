/**
 * The incremental test: whether a file may be recorded by reference to its parent snapshot's
 * content instead of being read again. restic's rule: the same size, mtime, ctime (ns) and
 * inode as the parent's entry at the same path. ctime matters: a write that keeps the size and
 * puts the mtime back (`touch -m -d`, or tools that preserve mtimes) still moves ctime, and so
 * does a change of xattrs or ACLs (which are then taken from the parent too). A parent entry
 * without a ctime (written before shmpipe recorded it) counts as changed: read once more. The
 * device number is not compared: it is not stable across reboots or remounts of the same
 * filesystem. `force` (backup --force) reads every file again.
 */

import type { SourceEntry } from './walk';

/** What the parent snapshot says about a path (from its entries). */
export interface ParentFile {
  kind: string;
  size: bigint;
  mtimeNs: bigint;
  inode: bigint;
  ctimeNs?: bigint | undefined;
}

export type Change = 'new' | 'changed' | 'unchanged';

export function classify(e: Pick<SourceEntry, 'kind' | 'size' | 'mtimeNs' | 'inode' | 'ctimeNs'>, parent: ParentFile | undefined, force = false): Change {
  if (parent === undefined) return 'new';
  if (force || e.kind !== parent.kind) return 'changed';
  // Directories, symlinks and others have no content to read: their mtime tells a change.
  if (e.kind !== 'file') return e.mtimeNs === parent.mtimeNs ? 'unchanged' : 'changed';
  if (parent.ctimeNs === undefined) return 'changed';
  return e.size === parent.size && e.mtimeNs === parent.mtimeNs && e.ctimeNs === parent.ctimeNs && e.inode === parent.inode ? 'unchanged' : 'changed';
}
