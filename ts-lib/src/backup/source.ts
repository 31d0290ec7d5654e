/**
 * Reading a source file without trusting it (backup's half of the threat model: files change,
 * vanish, or turn into links or FIFOs while the backup reads them). The walk `lstat`ed a path;
 * by the time backup.ts reads it, anything may be there:
 *
 * - it is opened with O_NOFOLLOW | O_NONBLOCK, so a symlink swapped in is not followed (ELOOP)
 *   and a FIFO swapped in does not block the backup (a non-blocking open of a FIFO returns at
 *   once, a socket fails with ENXIO);
 * - the open fd is `fstat`ed and compared with the walk's `lstat` (type, device, inode):
 *   something that is no longer a regular file is recorded as what it is now (a symlink with
 *   its target, a FIFO/socket/device as `other`) and reported; a different regular file (the
 *   name was replaced) is read and recorded with its own metadata, and reported; a directory
 *   swapped in is reported and left out (its contents were never listed);
 * - after reading, the fd is `fstat`ed again: a size, mtime or ctime that moved means the file
 *   changed while it was read — the bytes are kept (as restic does) and a warning says so; the
 *   metadata recorded is from before the read, so the next backup reads the file again.
 *
 * Extended attributes (POSIX ACLs included) are read from the same fd for files, and by path
 * without following for the others. Files with holes are read with SEEK_DATA/SEEK_HOLE: holes
 * are zeros in the slot, not read from the disk.
 */

import fs, { type BigIntStats } from 'node:fs';
import * as fsops from './fsops';
import { escapeName } from './names';
import type { Xattr } from './restore-fs';
import { describe, entryOf, type SourceEntry } from './walk';

const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

/** A local read failure: reported per file, not fatal (the file is left out). */
export class Unreadable extends Error {
  constructor(
    readonly op: string,
    override readonly cause: unknown,
    readonly code: string | undefined = (cause as NodeJS.ErrnoException)?.code,
  ) {
    super((cause as Error)?.message ?? String(cause));
  }
}

/** A regular file, open and checked; or what the path is now instead. */
export type Opened =
  | {
      fd: number;
      /** `fstat` at open: what is recorded (and compared after the read). */
      st: BigIntStats;
      /** The entry as it is now (the walk's, refreshed from `st`). */
      entry: SourceEntry;
      /** Why it differs from what the walk saw, if it does. */
      warning: string | null;
    }
  | { fd: -1; entry: SourceEntry; warning: string };

const S_IFMT = 0o170000n;
const typeOf = (mode: bigint | number): bigint => BigInt(mode) & S_IFMT;

function checked(e: SourceEntry, fd: number): Opened {
  let st: BigIntStats;
  try {
    st = fs.fstatSync(fd, { bigint: true });
  } catch (err) {
    fs.closeSync(fd);
    throw new Unreadable('fstat', err);
  }
  if (!st.isFile()) {
    fs.closeSync(fd);
    const now = entryOf(st, e.abs, e.path);
    if (now.kind === 'dir') throw new Unreadable('open', new Error('it became a directory during the backup; left out (its contents were not listed)'), 'EISDIR');
    return { fd: -1, entry: now, warning: `it became a ${what(now)} during the backup; recorded as that` };
  }
  const entry = entryOf(st, e.abs, e.path);
  const swapped = st.ino !== e.inode || st.dev !== e.dev;
  return { fd, st, entry, warning: swapped ? 'it was replaced by another file during the backup; the new one was read' : null };
}

const what = (e: SourceEntry): string => {
  if (e.kind === 'symlink') return 'symlink';
  const t = typeOf(e.mode);
  return t === 0o010000n ? 'FIFO' : t === 0o140000n ? 'socket' : t === 0o020000n || t === 0o060000n ? 'device' : e.kind;
};

/** The open failed: if the path is something else now (a symlink: ELOOP; a socket: ENXIO),
 * that is what gets recorded; otherwise the file is unreadable. */
async function instead(e: SourceEntry, err: unknown): Promise<Opened> {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ELOOP' || code === 'ENXIO' || code === 'ENODEV' || code === 'EOPNOTSUPP') {
    let now: SourceEntry;
    try {
      now = await describe(e.abs, e.path);
    } catch (e2) {
      throw new Unreadable('lstat', e2);
    }
    if (now.kind !== 'file' && now.kind !== 'dir') return { fd: -1, entry: now, warning: `it became a ${what(now)} during the backup; recorded as that` };
  }
  throw new Unreadable('open', err);
}

/** Opens a walked file for reading with synchronous calls (small files). */
export async function openSourceSync(e: SourceEntry): Promise<Opened> {
  let fd: number;
  try {
    fd = fs.openSync(e.abs, OPEN_FLAGS);
  } catch (err) {
    return instead(e, err);
  }
  return checked(e, fd);
}

/** Opens a walked file for reading (thread pool: large files). */
export async function openSource(e: SourceEntry): Promise<Opened> {
  let fd: number;
  try {
    fd = await new Promise<number>((resolve, reject) => fs.open(e.abs, OPEN_FLAGS, (err, f) => (err ? reject(err) : resolve(f))));
  } catch (err) {
    return instead(e, err);
  }
  return checked(e, fd);
}

/** After the read: why the file changed while it was read (`got` bytes of `st.size`), or null. */
export function changedWhileRead(fd: number, st: BigIntStats, got: number): string | null {
  let after: BigIntStats;
  try {
    after = fs.fstatSync(fd, { bigint: true });
  } catch {
    return 'it could not be checked after reading';
  }
  const moved = [after.size !== st.size ? `size ${st.size} → ${after.size}` : '', after.mtimeNs !== st.mtimeNs ? 'mtime' : '', after.ctimeNs !== st.ctimeNs ? 'ctime' : ''].filter((x) => x !== '');
  if (BigInt(got) !== st.size) moved.push(`${got} of ${st.size} bytes read`);
  return moved.length === 0 ? null : `it changed while it was read (${moved.join(', ')}); what was read is kept, the next backup reads it again`;
}

const readAt = (fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> =>
  new Promise((resolve, reject) => fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));

/** Reads up to `len` bytes at `pos` into `buf` from 0; fewer only at end of file (it shrank). */
export async function readUpTo(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
  let got = 0;
  while (got < len) {
    const n = await readAt(fd, buf, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

export function readSyncUpTo(fd: number, buf: Buffer, len: number): number {
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/**
 * `readUpTo` for a file with holes: the holes in `[pos, pos + len)` are zero-filled in `buf`
 * without reading them (SEEK_DATA / SEEK_HOLE); the data between is read. Stops early only at
 * the end of the file.
 */
export async function readSparse(fd: number, buf: Buffer, len: number, pos: number, size: number): Promise<number> {
  const end = Math.min(pos + len, size);
  let at = pos;
  while (at < end) {
    const data = fsops.seek(fd, at, false);
    const dataAt = data < 0 ? end : Math.min(data, end);
    if (dataAt > at) {
      buf.fill(0, at - pos, dataAt - pos);
      at = dataAt;
      if (at >= end) break;
    }
    const hole = fsops.seek(fd, at, true);
    const want = (hole < 0 ? end : Math.min(hole, end)) - at;
    const n = await readUpTo(fd, buf.subarray(at - pos), want, at);
    at += n;
    if (n < want) break; // the file shrank
  }
  return at - pos;
}

/** The extended attributes of an fd, or of a path (not following it). */
export function readXattrs(target: number | Buffer): Xattr[] | undefined {
  const names = fsops.listxattr(target);
  if (names.length === 0) return undefined;
  const out: Xattr[] = [];
  for (const n of names.sort(Buffer.compare)) {
    const value = fsops.getxattr(target, n);
    if (value !== null) out.push({ name: escapeName(n), value });
  }
  return out.length > 0 ? out : undefined;
}
