/**
 * The backup walker: turns the paths given to `shmpipe backup` into a stream of source entries
 * with the metadata the repository keeps (type, mode, uid/gid, mtime in ns, size, inode/dev,
 * symlink targets). It only walks and `lstat`s; reading file bytes into slots is the reader's
 * job. Names are read as bytes (`readdir` with `encoding: 'buffer'`) so that names that are
 * not UTF-8 survive, and escaped for the repository by names.ts.
 *
 * Order is deterministic: each root as given, and within a directory the children in byte
 * order of their names, all of a directory's children before any grandchild (a stack of
 * directories still to list, so memory is one listing per level, not the whole tree). A
 * directory always comes before its contents, which restore relies on.
 *
 * Failures do not stop the walk: a root that cannot be `lstat`ed, a directory that cannot be
 * listed, or a child that vanished between listing and `lstat` is reported to `onError` and
 * skipped (the CLI lists them and exits 3 with the backup still committed).
 */

import * as fs from 'node:fs';
import { promises as fsp, type BigIntStats } from 'node:fs';
import path from 'node:path';
import { escapeName } from './names';
import type { Xattr } from './restore-fs';

export type EntryKind = 'file' | 'dir' | 'symlink' | 'other';

export interface SourceEntry {
  /** Repository path: relative, `/`-separated, each name escaped (names.ts). */
  path: string;
  /** The entry on disk, as bytes (names need not be UTF-8). */
  abs: Buffer;
  kind: EntryKind;
  /** Full `st_mode` (type and permission bits). */
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  /** `st_size`; for files the number of bytes to read. */
  size: bigint;
  inode: bigint;
  dev: bigint;
  /** Symlinks: the target, escaped like names. */
  target?: string;
  ctimeNs: bigint;
  /** Character and block devices: st_rdev. */
  rdev?: bigint;
  /** Files with more than one link: st_nlink (hard links are restored as such). */
  links?: number;
  /** Extended attributes (read by backup.ts, not the walk). */
  xattrs?: Xattr[];
  /** Files with fewer blocks allocated than their size: holes, kept at restore. */
  sparse?: boolean;
}

export interface WalkError {
  /** Repository path of what failed (the root's name for a root). */
  path: string;
  /** What failed, e.g. `lstat` or `opendir`. */
  op: string;
  /** The errno code, e.g. `EACCES`, when there is one. */
  code: string | undefined;
  message: string;
}

/**
 * The selection hook (select.ts builds it): called for each entry below a root, in walk order,
 * with its directory; false leaves the entry out (a directory with everything below it).
 */
export type Select = (e: SourceEntry, parent: SourceEntry) => boolean | Promise<boolean>;

/**
 * Entries walked between two turns of the event loop. The walk's `readdir` and `lstat` are
 * synchronous: on a page-cached tree ~4 µs each, where a thread-pool round trip through
 * `fs.promises` cost ~25 µs of the main thread's CPU (measured: 100,000 small files walked in
 * 0.4 s instead of 2.5 s, issue #15). On a cold cache a slow disk serialises them, which
 * restic's walk does too (one directory at a time).
 */
const YIELD_EVERY = 512;

function kindOf(st: BigIntStats): EntryKind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

/** `describe`, synchronously (the walk's hot path). */
export function describeSync(abs: Buffer, repoPath: string): SourceEntry {
  const st = fs.lstatSync(abs, { bigint: true });
  const e = entryOf(st, abs, repoPath);
  if (e.kind === 'symlink') e.target = escapeName(fs.readlinkSync(abs, { encoding: 'buffer' }));
  return e;
}

/** The entry at `abs` as it is now (`lstat`, never following it). */
export async function describe(abs: Buffer, repoPath: string): Promise<SourceEntry> {
  const st = await fsp.lstat(abs, { bigint: true });
  const e = entryOf(st, abs, repoPath);
  if (e.kind === 'symlink') e.target = escapeName(await fsp.readlink(abs, { encoding: 'buffer' }));
  return e;
}

/** An entry from `lstat`/`fstat` results (symlink targets are the caller's). */
export function entryOf(st: BigIntStats, abs: Buffer, repoPath: string): SourceEntry {
  const kind = kindOf(st);
  const e: SourceEntry = {
    path: repoPath,
    abs,
    kind,
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs,
    size: st.size,
    inode: st.ino,
    dev: st.dev,
    ctimeNs: st.ctimeNs,
  };
  if (st.isCharacterDevice() || st.isBlockDevice()) e.rdev = st.rdev;
  if (kind === 'file' && st.nlink > 1n) e.links = Number(st.nlink);
  if (kind === 'file' && st.blocks * 512n < st.size) e.sparse = true;
  return e;
}

function failure(repoPath: string, op: string, e: unknown): WalkError {
  const err = e as NodeJS.ErrnoException;
  return { path: repoPath, op, code: typeof err?.code === 'string' ? err.code : undefined, message: err?.message ?? String(e) };
}

/**
 * The repository name of each root: its last path component. Two roots with the same name
 * would collide in the snapshot, so that is refused up front (as is a root with no name, `/`).
 */
export function rootNames(roots: readonly string[]): string[] {
  const names = roots.map((r) => {
    const name = path.basename(path.resolve(r));
    if (name === '') throw new Error(`cannot back up '${r}': it has no name to store it under (name a directory below it)`);
    return escapeName(Buffer.from(name, 'utf8'));
  });
  const seen = new Set<string>();
  for (const [i, n] of names.entries()) {
    if (seen.has(n)) throw new Error(`two paths would be stored under the same name '${n}' (${roots[i]})`);
    seen.add(n);
  }
  return names;
}

/** Walks `roots` (see the module comment); errors go to `onError` and the walk goes on. */
export async function* walk(roots: readonly string[], onError: (e: WalkError) => void, select?: Select): AsyncGenerator<SourceEntry> {
  const names = rootNames(roots);
  for (const [i, root] of roots.entries()) {
    const rootPath = names[i]!;
    let top: SourceEntry;
    try {
      top = await describe(Buffer.from(path.resolve(root), 'utf8'), rootPath);
    } catch (e) {
      onError(failure(rootPath, 'lstat', e));
      continue;
    }
    yield top;
    if (top.kind !== 'dir') continue;
    const stack: SourceEntry[] = [top];
    let sinceYield = 0;
    while (stack.length > 0) {
      const dir = stack.pop()!;
      let children: Buffer[];
      try {
        children = fs.readdirSync(dir.abs, { encoding: 'buffer' });
      } catch (e) {
        onError(failure(dir.path, 'opendir', e));
        continue;
      }
      children.sort(Buffer.compare);
      const subdirs: SourceEntry[] = [];
      const sep = Buffer.from('/');
      for (const name of children) {
        const childPath = `${dir.path}/${escapeName(name)}`;
        let e: SourceEntry;
        try {
          e = describeSync(Buffer.concat([dir.abs, sep, name]), childPath);
        } catch (err) {
          onError(failure(childPath, 'lstat', err));
          continue;
        }
        const keep = select?.(e, dir) ?? true;
        if (keep === false || (keep !== true && !(await keep))) continue;
        yield e;
        if (e.kind === 'dir') subdirs.push(e);
        // Let completions and timers in now and then (the calls above never leave the thread).
        if (++sinceYield >= YIELD_EVERY) {
          sinceYield = 0;
          await new Promise<void>((r) => setImmediate(r));
        }
      }
      // Reversed so the first subdirectory is listed next.
      for (let j = subdirs.length - 1; j >= 0; j--) stack.push(subdirs[j]!);
    }
  }
}
