/**
 * The filesystem side of restore: creates what a snapshot's entries describe under a target
 * directory and gives each entry its metadata back. Where the bytes come from (slots filled by
 * the sidecar) is not its concern: a file is a sink that takes positional writes straight from
 * a slot's buffer and is finished or aborted.
 *
 * The target is hostile ground (other users may plant symlinks in it, before or during the
 * restore), so every operation is relative to a directory fd opened with O_DIRECTORY|O_NOFOLLOW
 * (fsops.ts: openat, mkdirat, symlinkat, mknodat, linkat, renameat, unlinkat, fstatat, fchownat
 * and utimensat with AT_SYMLINK_NOFOLLOW, fchmod/futimens on fds): no path is ever resolved
 * through something restore did not create, and an existing symlink is never followed — it is
 * replaced, or kept, as the overwrite policy says. The target root itself must not be a
 * symlink (its last component is opened with O_NOFOLLOW; the components above it are the
 * user's own choice).
 *
 * - Directories are created 0700 and get their owner, xattrs, mode and times at the end,
 *   deepest first (`finishDirs`), as tar and restic do: nobody else can enter one while its
 *   contents are written, and a read-only directory is made read-only only once it is full.
 * - Files, symlinks and special files are made under a temporary name in their directory and
 *   renamed over the final name when complete: an interrupted restore never leaves a truncated
 *   file under a real name, and a symlink that is in the way is replaced, not followed.
 * - An entry's own metadata: owner (only as root), xattrs, then mode (after chown, which clears
 *   set-id bits), then times to the nanosecond.
 * - Open directory fds are cached (LRU, `DirFds`), so a directory of small files costs one
 *   openat, not one path walk per file; fds in use across awaits are pinned.
 * - Overwrite policy (restic's): `always` replaces what is there; `if-changed` keeps a file of
 *   the same type, size and mtime (its metadata is set again); `if-newer` replaces only when the
 *   snapshot's mtime is newer; `never` keeps whatever is there. Inside a directory this restore
 *   created, nothing can be in the way (it is 0700), so nothing is looked up.
 */

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ShmpipeError } from '../errors';
import * as fsops from './fsops';
import { escapeName, pathNames, targetBytes, unescapeName } from './names';
import type { EntryKind } from './walk';

export type Overwrite = 'always' | 'if-changed' | 'if-newer' | 'never';
export const OVERWRITE_MODES: readonly Overwrite[] = ['always', 'if-changed', 'if-newer', 'never'];

/** One extended attribute: its name escaped like a file name, its value. */
export interface Xattr {
  name: string;
  value: Buffer;
}

/** What restore needs of a snapshot entry. */
export interface RestoreEntry {
  path: string;
  kind: EntryKind;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  size: bigint;
  target?: string | undefined;
  rdev?: bigint | undefined;
  xattrs?: Xattr[] | undefined;
  sparse?: boolean | undefined;
}

/** What restore did with an entry (restic's verbose actions). */
export type Action = 'restored' | 'updated' | 'unchanged' | 'skipped';

export interface TargetOptions {
  /** Set owners (default: when running as root). */
  chown?: boolean;
  overwrite?: Overwrite;
  /** Restore extended attributes (default true). */
  xattrs?: boolean;
  /** Leave runs of zeros in every file as holes (files marked sparse at backup always are). */
  sparse?: boolean;
  /** Decide and report, change nothing. */
  dryRun?: boolean;
  /** An attribute or directory metadata that could not be set (the entry itself is there). */
  onMetadataError?: (path: string, e: unknown) => void;
}

/** A file being restored asynchronously (large files). */
export interface FileSink {
  write(data: Buffer, length: number, position: number): Promise<void>;
  /** Applies metadata and renames the file into place. */
  finish(): Promise<void>;
  /** Closes and removes the temporary file. */
  abort(): Promise<void>;
}

/** A file restored with synchronous calls (small files). */
export interface SyncFileSink {
  write(data: Buffer, length: number, position: number): void;
  finish(): void;
  abort(): void;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const isDir = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR;

const TYPE_OF_KIND: Record<string, number> = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK };

/** Sparse writes skip all-zero blocks of this size, aligned in the file. */
const BLOCK = 4096;
const ZERO = Buffer.alloc(BLOCK);

/** The [start, end) ranges of `data[0..length)` to write for a sparse file at `position`:
 * everything but the whole aligned blocks that are all zeros. */
function dataRuns(data: Buffer, length: number, position: number): [number, number][] {
  const runs: [number, number][] = [];
  let runStart = -1;
  let at = 0;
  while (at < length) {
    const end = Math.min(length, at + (BLOCK - ((position + at) % BLOCK)));
    const zero = end - at === BLOCK && data.compare(ZERO, 0, BLOCK, at, end) === 0;
    if (zero && runStart >= 0) {
      runs.push([runStart, at]);
      runStart = -1;
    } else if (!zero && runStart < 0) runStart = at;
    at = end;
  }
  if (runStart >= 0) runs.push([runStart, length]);
  return runs;
}

function writeAllSync(fd: number, data: Buffer, start: number, end: number, position: number, what: string): void {
  for (let done = start; done < end; ) {
    const n = fs.writeSync(fd, data, done, end - done, position + (done - start));
    if (n === 0) throw new Error(`short write restoring ${what}`);
    done += n;
  }
}

const fsWrite = (fd: number, data: Buffer, off: number, len: number, pos: number): Promise<number> =>
  new Promise((resolve, reject) => fs.write(fd, data, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));

async function writeAll(fd: number, data: Buffer, start: number, end: number, position: number, what: string): Promise<void> {
  for (let done = start; done < end; ) {
    const n = await fsWrite(fd, data, done, end - done, position + (done - start));
    if (n === 0) throw new Error(`short write restoring ${what}`);
    done += n;
  }
}

/** Open directory fds by repository path, least recently used closed first; pinned ones stay. */
class DirFds {
  private readonly open = new Map<string, { fd: number; pins: number }>();

  constructor(
    private readonly rootFd: number,
    private readonly max = 128,
  ) {}

  /** The fd of directory `dir` (`names`: its decoded names), opened from the nearest open
   * ancestor one name at a time, never following a symlink. Valid until the next call unless
   * pinned. */
  get(dir: string, names: readonly Buffer[]): number {
    if (dir === '') return this.rootFd;
    const hit = this.open.get(dir);
    if (hit !== undefined) {
      this.open.delete(dir);
      this.open.set(dir, hit);
      return hit.fd;
    }
    // The nearest open ancestor: cut names off the end until one is open.
    let depth = names.length - 1;
    let prefix = dir;
    let fd = this.rootFd;
    while (depth > 0) {
      prefix = prefix.slice(0, prefix.lastIndexOf('/'));
      const a = this.open.get(prefix);
      if (a !== undefined) {
        fd = a.fd;
        break;
      }
      depth--;
    }
    for (let i = depth; i < names.length; i++) {
      prefix = i === 0 ? escapeName(names[0]!) : `${prefix}/${escapeName(names[i]!)}`;
      fd = fsops.openat(fd, names[i]!, DIR_FLAGS());
      this.put(i === names.length - 1 ? dir : prefix, fd);
    }
    return fd;
  }

  put(dir: string, fd: number): void {
    const old = this.open.get(dir);
    if (old !== undefined && old.fd !== fd) {
      this.open.delete(dir);
      if (old.pins === 0) fs.closeSync(old.fd);
    }
    this.open.set(dir, { fd, pins: old?.pins ?? 0 });
    if (this.open.size <= this.max) return;
    for (const [k, v] of this.open) {
      if (this.open.size <= this.max) break;
      if (v.pins > 0 || k === dir) continue;
      this.open.delete(k);
      fs.closeSync(v.fd);
    }
  }

  pin(dir: string, names: readonly Buffer[]): number {
    const fd = this.get(dir, names);
    if (dir !== '') this.open.get(dir)!.pins++;
    return fd;
  }

  unpin(dir: string): void {
    const e = this.open.get(dir);
    if (e !== undefined && e.pins > 0) e.pins--;
  }

  closeAll(): void {
    for (const v of this.open.values()) fs.closeSync(v.fd);
    this.open.clear();
  }
}

let dirFlags = 0;
function DIR_FLAGS(): number {
  if (dirFlags === 0) {
    const c = fsops.constants();
    dirFlags = c.O_RDONLY | c.O_DIRECTORY | c.O_NOFOLLOW;
  }
  return dirFlags;
}

/** A directory of the snapshot, as restore knows it. */
interface DirState {
  e: RestoreEntry;
  names: Buffer[];
  /** Created by this restore (so nothing else is in it), or planned as such in a dry run. */
  fresh: boolean;
  /** Exists (created, or was there); false: planned only (lazy, or a dry run). */
  made: boolean;
  /** Its metadata is set at the end. */
  apply: boolean;
}

/** Where an entry goes: its directory's fd (-1 in a dry run below a planned directory). */
interface Place {
  dir: string;
  dirFd: number;
  fresh: boolean;
  name: Buffer;
  names: Buffer[];
}

type Decision = { action: 'create' | 'replace' | 'skip' | 'keep'; st: fsops.Stat | null };

export class RestoreTarget {
  readonly root: Buffer;
  readonly overwrite: Overwrite;
  private readonly chown: boolean;
  private readonly xattrs: boolean;
  private readonly sparse: boolean;
  private readonly dryRun: boolean;
  private readonly onMetadataError: (path: string, e: unknown) => void;
  private rootFd = -1;
  private rootFresh = false;
  private fds: DirFds | null = null;
  /** Every directory entry seen, in listing order (metadata is applied in reverse). */
  private readonly dirs = new Map<string, DirState>();
  private tmpSeq = 0;
  private readonly tmpPrefix = `.shmpipe-restore-${process.pid}-`;
  private readonly uid = process.getuid?.() ?? -1;
  private gid = process.getgid?.() ?? -1;

  constructor(root: string, o: TargetOptions = {}) {
    this.root = Buffer.from(path.resolve(root), 'utf8');
    this.chown = o.chown ?? process.getuid?.() === 0;
    this.overwrite = o.overwrite ?? 'if-changed';
    this.xattrs = o.xattrs ?? true;
    this.sparse = o.sparse ?? false;
    this.dryRun = o.dryRun ?? false;
    this.onMetadataError = o.onMetadataError ?? (() => {});
  }

  /** Opens the target root (creating it 0700 if it does not exist). Its last component must
   * not be a symlink. */
  async prepare(): Promise<void> {
    const c = fsops.constants();
    const existed = fsops.lstatat(c.AT_FDCWD, this.root) !== null;
    if (!existed && this.dryRun) {
      this.rootFresh = true;
      return;
    }
    if (!existed) fs.mkdirSync(this.root, { recursive: true, mode: 0o700 });
    try {
      this.rootFd = fsops.openat(c.AT_FDCWD, this.root, DIR_FLAGS());
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR') {
        const st = fsops.lstatat(c.AT_FDCWD, this.root);
        const what = st !== null && (st.mode & S_IFMT) === S_IFLNK ? 'a symlink (restore does not follow one; name the directory it points to)' : 'not a directory';
        throw new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `the restore target ${this.root.toString()} is ${what}`);
      }
      throw e;
    }
    this.rootFresh = !existed;
    this.fds = new DirFds(this.rootFd);
    // New files take their group from a set-group-id directory: then always chown.
    if ((fsops.fstat(this.rootFd).mode & 0o2000) !== 0) this.gid = -1;
  }

  /** Closes every fd; call once done (also after a failure). */
  close(): void {
    this.fds?.closeAll();
    this.fds = null;
    if (this.rootFd >= 0) fs.closeSync(this.rootFd);
    this.rootFd = -1;
  }

  // ---- places -------------------------------------------------------------------------------

  /** Where `e` goes: its parent directory must be one this restore has seen (restore-plan.ts
   * made sure it came first); a planned (lazy) parent is created now. */
  private place(e: RestoreEntry, names: Buffer[] | undefined): Place {
    const n = names ?? pathNames(e.path);
    const slash = e.path.lastIndexOf('/');
    const dir = slash < 0 ? '' : e.path.slice(0, slash);
    const name = n[n.length - 1]!;
    if (dir === '') return { dir, dirFd: this.rootFd, fresh: this.rootFresh, name, names: n };
    const d = this.dirs.get(dir);
    if (d === undefined) throw new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `refusing entry ${JSON.stringify(e.path)}: its directory was not restored`);
    if (!d.made) this.makeDir(dir);
    if (this.dryRun && (d.fresh || this.fds === null)) return { dir, dirFd: -1, fresh: true, name, names: n };
    return { dir, dirFd: this.fds!.get(dir, d.names), fresh: d.fresh, name, names: n };
  }

  /** What is at `p` and what the overwrite policy says about it. */
  private decide(e: RestoreEntry, p: Place): Decision {
    if (p.fresh || p.dirFd < 0) return { action: 'create', st: null };
    const st = fsops.lstatat(p.dirFd, p.name);
    if (st === null) return { action: 'create', st };
    switch (this.overwrite) {
      case 'never':
        return { action: 'skip', st };
      case 'if-newer':
        return { action: e.mtimeNs > st.mtimeNs ? 'replace' : 'skip', st };
      case 'if-changed':
        return { action: this.same(e, st) ? 'keep' : 'replace', st };
      default:
        return { action: 'replace', st };
    }
  }

  private same(e: RestoreEntry, st: fsops.Stat): boolean {
    const type = e.kind === 'other' ? e.mode & S_IFMT : TYPE_OF_KIND[e.kind];
    if ((st.mode & S_IFMT) !== type || st.mtimeNs !== e.mtimeNs) return false;
    if (e.kind === 'file' || e.kind === 'symlink') return st.size === (e.kind === 'file' ? e.size : BigInt(targetBytes(e.path, e.target).length));
    if (e.kind === 'other') return st.rdev === (e.rdev ?? 0n) || (type !== S_IFCHR && type !== S_IFBLK);
    return true;
  }

  /** Runs `make(name)` with a fresh temporary name in the directory (another is tried if one
   * is taken); returns the name. */
  private temp(dirFd: number, make: (name: Buffer) => void): Buffer {
    for (let attempt = 0; ; attempt++) {
      const name = Buffer.from(`${this.tmpPrefix}${++this.tmpSeq}.tmp`);
      try {
        make(name);
        return name;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 16) throw e;
      }
    }
  }

  /** Moves the finished temporary `tmp` over the entry's name (what was there goes: a
   * directory in the way is removed first, the overwrite policy having said so). */
  private putInPlace(p: Place, tmp: Buffer, d: Decision): void {
    if (d.st !== null && isDir(d.st.mode)) this.removeTree(p.dirFd, p.name);
    fsops.renameat(p.dirFd, tmp, p.dirFd, p.name);
  }

  private result(d: Decision): Action {
    return d.action === 'create' ? 'restored' : d.action === 'replace' ? 'updated' : d.action === 'keep' ? 'unchanged' : 'skipped';
  }

  /** Sets the metadata of what is at `name` in `dirFd` without following it (if-changed and
   * an unchanged entry: owner, mode, times as in the snapshot). */
  private metadataByName(e: RestoreEntry, dirFd: number, name: Buffer): void {
    if (this.chown) fsops.lchownat(dirFd, name, e.uid, e.gid);
    if (e.kind !== 'symlink') fsops.lchmodat(dirFd, name, e.mode & 0o7777);
    fsops.setTimesAt(dirFd, name, e.mtimeNs);
  }

  /** Sets `e`'s xattrs on an fd, or by path (symlinks, special files: /proc/self/fd/DIR/NAME,
   * so no component of the path is followed). A failure is reported, not fatal. */
  private setXattrs(e: RestoreEntry, on: number | { dirFd: number; name: Buffer }): void {
    if (!this.xattrs || e.xattrs === undefined || e.xattrs.length === 0) return;
    const t = typeof on === 'number' ? on : Buffer.concat([Buffer.from(`/proc/self/fd/${on.dirFd}/`), on.name]);
    for (const x of e.xattrs) {
      try {
        const name = unescapeName(x.name);
        if (name.length === 0 || name.includes(0)) throw new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `xattr name ${JSON.stringify(x.name)} is not one`);
        fsops.setxattr(t, name, x.value);
      } catch (err) {
        this.onMetadataError(e.path, new ShmpipeError('SHMPIPE_E_IO', `cannot set extended attribute ${x.name}: ${(err as Error).message}`, { cause: err }));
      }
    }
  }

  // ---- directories ---------------------------------------------------------------------------

  /**
   * A directory entry. `lazy`: only planned (an include pattern may select something below it);
   * it is created when the first entry inside it is restored.
   */
  dir(e: RestoreEntry, names?: Buffer[], lazy = false): Action {
    const n = names ?? pathNames(e.path);
    const state: DirState = { e, names: n, fresh: false, made: false, apply: false };
    this.dirs.set(e.path, state);
    if (lazy) return 'skipped';
    try {
      return this.makeDir(e.path);
    } catch (err) {
      this.dirs.delete(e.path);
      throw err;
    }
  }

  /** Creates (or adopts) the directory `dir` and any planned directory above it. */
  private makeDir(dir: string): Action {
    const chain: string[] = [];
    for (let d = dir; d !== ''; d = d.slice(0, Math.max(0, d.lastIndexOf('/')))) {
      const s = this.dirs.get(d);
      if (s === undefined) throw new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `refusing entry ${JSON.stringify(dir)}: its directory was not restored`);
      if (s.made) break;
      chain.push(d);
    }
    let action: Action = 'unchanged';
    for (let i = chain.length - 1; i >= 0; i--) action = this.makeOne(this.dirs.get(chain[i]!)!);
    return action;
  }

  private makeOne(s: DirState): Action {
    const p = this.place(s.e, s.names);
    const d = this.decide(s.e, p);
    if (d.st !== null && isDir(d.st.mode)) {
      // An existing directory is used as it is (its metadata set at the end, unless `never`).
      s.made = true;
      s.apply = this.overwrite !== 'never' && !this.dryRun;
      if (!this.dryRun) this.fds!.get(s.e.path, s.names);
      return 'unchanged';
    }
    if (d.st !== null && this.overwrite === 'never') {
      throw new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `cannot restore directory ${JSON.stringify(s.e.path)}: something that is not a directory is in its place (kept: --overwrite never)`);
    }
    s.made = true;
    s.fresh = true;
    if (this.dryRun) return d.st === null ? 'restored' : 'updated';
    if (d.st !== null) fsops.unlinkat(p.dirFd, p.name, false);
    fsops.mkdirat(p.dirFd, p.name, 0o700);
    const fd = fsops.openat(p.dirFd, p.name, DIR_FLAGS());
    this.fds!.put(s.e.path, fd);
    s.apply = true;
    return d.st === null ? 'restored' : 'updated';
  }

  /** Applies directory metadata, deepest first (reverse listing order: a directory is listed
   * before its contents); call once every entry is restored. Failures are reported. */
  finishDirs(): void {
    if (this.dryRun) return;
    const all = [...this.dirs.values()];
    this.dirs.clear();
    for (let i = all.length - 1; i >= 0; i--) {
      const s = all[i]!;
      if (!s.apply) continue;
      try {
        const fd = this.fds!.get(s.e.path, s.names);
        if (this.chown) fs.fchownSync(fd, s.e.uid, s.e.gid);
        this.setXattrs(s.e, fd);
        fs.fchmodSync(fd, s.e.mode & 0o7777);
        fsops.setTimesAt(fd, Buffer.alloc(0), s.e.mtimeNs);
      } catch (err) {
        this.onMetadataError(s.e.path, err);
      }
    }
  }

  // ---- symlinks, special files, hard links -------------------------------------------------

  symlink(e: RestoreEntry, names?: Buffer[]): Action {
    const target = targetBytes(e.path, e.target);
    const p = this.place(e, names);
    const d = this.decide(e, p);
    if (this.dryRun || d.action === 'skip') return this.result(d);
    if (d.action === 'keep') {
      this.metadataByName(e, p.dirFd, p.name);
      return 'unchanged';
    }
    const tmp = this.temp(p.dirFd, (t) => fsops.symlinkat(target, p.dirFd, t));
    try {
      if (this.chown) fsops.lchownat(p.dirFd, tmp, e.uid, e.gid);
      this.setXattrs(e, { dirFd: p.dirFd, name: tmp });
      fsops.setTimesAt(p.dirFd, tmp, e.mtimeNs);
      this.putInPlace(p, tmp, d);
    } catch (err) {
      this.unlinkQuietly(p.dirFd, tmp);
      throw err;
    }
    return this.result(d);
  }

  /**
   * A FIFO, socket or device node (the type is in `mode`). Devices only as root (skipped
   * otherwise: returns 'skipped').
   */
  special(e: RestoreEntry, names?: Buffer[]): Action {
    const type = e.mode & S_IFMT;
    if (type !== S_IFIFO && type !== S_IFSOCK && type !== S_IFCHR && type !== S_IFBLK) {
      throw new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `refusing entry ${JSON.stringify(e.path)}: mode ${e.mode.toString(8)} is not a FIFO, socket or device`);
    }
    const device = type === S_IFCHR || type === S_IFBLK;
    if (device && this.uid !== 0) return 'skipped';
    const p = this.place(e, names);
    const d = this.decide(e, p);
    if (this.dryRun || d.action === 'skip') return this.result(d);
    if (d.action === 'keep') {
      this.metadataByName(e, p.dirFd, p.name);
      return 'unchanged';
    }
    const tmp = this.temp(p.dirFd, (t) => fsops.mknodat(p.dirFd, t, type | 0o600, device ? (e.rdev ?? 0n) : 0n));
    try {
      if (this.chown) fsops.lchownat(p.dirFd, tmp, e.uid, e.gid);
      this.setXattrs(e, { dirFd: p.dirFd, name: tmp });
      fsops.lchmodat(p.dirFd, tmp, e.mode & 0o7777);
      fsops.setTimesAt(p.dirFd, tmp, e.mtimeNs);
      this.putInPlace(p, tmp, d);
    } catch (err) {
      this.unlinkQuietly(p.dirFd, tmp);
      throw err;
    }
    return this.result(d);
  }

  /** `e` as a hard link to the file restored earlier at `first` (same device and inode at
   * backup). linkat never follows a symlink. */
  link(e: RestoreEntry, names: Buffer[] | undefined, first: { path: string; names: Buffer[] }): Action {
    const p = this.place(e, names);
    const d = this.decide(e, p);
    if (this.dryRun || d.action === 'skip' || d.action === 'keep') return this.result(d);
    const slash = first.path.lastIndexOf('/');
    const firstDir = slash < 0 ? '' : first.path.slice(0, slash);
    const firstDirState = firstDir === '' ? undefined : this.dirs.get(firstDir);
    if (firstDir !== '' && firstDirState === undefined) throw new Error(`the first link ${first.path} is not in a restored directory`);
    const srcFd = this.fds!.pin(firstDir, firstDirState?.names ?? []);
    try {
      const dirFd = this.fds!.get(p.dir, p.names.length > 1 ? this.dirs.get(p.dir)!.names : []);
      const here = { ...p, dirFd };
      const tmp = this.temp(dirFd, (t) => fsops.linkat(srcFd, first.names[first.names.length - 1]!, dirFd, t));
      try {
        this.putInPlace(here, tmp, d);
      } catch (err) {
        this.unlinkQuietly(dirFd, tmp);
        throw err;
      }
    } finally {
      this.fds!.unpin(firstDir);
    }
    return this.result(d);
  }

  // ---- files ----------------------------------------------------------------------------------

  /**
   * Whether a file is to be written: 'write' (a sink follows), or what was done instead
   * ('skipped', or 'unchanged' with its metadata set again). A dry run never writes: it says
   * 'restored' or 'updated'.
   */
  fileDecision(e: RestoreEntry, names?: Buffer[]): { write: boolean; action: Action } {
    const p = this.place(e, names);
    const d = this.decide(e, p);
    if (d.action === 'skip') return { write: false, action: 'skipped' };
    if (d.action === 'keep') {
      if (!this.dryRun) this.metadataByName(e, p.dirFd, p.name);
      return { write: false, action: 'unchanged' };
    }
    return { write: !this.dryRun, action: this.result(d) };
  }

  /** Opens the temporary file of `e` in its directory (pinned until finish/abort). */
  private openTemp(e: RestoreEntry, names?: Buffer[]): { p: Place; fd: number; tmp: Buffer; unpin: () => void } {
    const p = this.place(e, names);
    const c = fsops.constants();
    const dirFd = this.fds!.pin(p.dir, p.dir === '' ? [] : this.dirs.get(p.dir)!.names);
    let fd = -1;
    try {
      const tmp = this.temp(dirFd, (t) => (fd = fsops.openat(dirFd, t, c.O_WRONLY | c.O_CREAT | c.O_EXCL | c.O_NOFOLLOW, 0o600)));
      return { p: { ...p, dirFd }, fd, tmp, unpin: () => this.fds?.unpin(p.dir) };
    } catch (err) {
      this.fds!.unpin(p.dir);
      throw err;
    }
  }

  /** Metadata on the open temporary file, then close and rename into place. */
  private finishFile(e: RestoreEntry, t: { p: Place; fd: number; tmp: Buffer }, end: number): void {
    if (BigInt(end) !== e.size) fs.ftruncateSync(t.fd, Number(e.size));
    // chown clears set-id bits: before chmod.
    // In a directory this restore made, a new file has our owner and group (the root's group
    // when it is set-group-id: then gid is -1 and this always runs).
    if (this.chown && (!t.p.fresh || e.uid !== this.uid || e.gid !== this.gid)) fs.fchownSync(t.fd, e.uid, e.gid);
    this.setXattrs(e, t.fd);
    fs.fchmodSync(t.fd, e.mode & 0o7777);
    fsops.setTimesAt(t.fd, Buffer.alloc(0), e.mtimeNs);
    const fd = t.fd;
    t.fd = -1;
    fs.closeSync(fd);
    // What is in the way now (a directory, or a symlink planted meanwhile) is looked at again.
    const st = t.p.fresh ? null : fsops.lstatat(t.p.dirFd, t.p.name);
    this.putInPlace(t.p, t.tmp, { action: 'replace', st });
  }

  private unlinkQuietly(dirFd: number, name: Buffer): void {
    try {
      fsops.unlinkat(dirFd, name, false);
    } catch {
      /* already failing */
    }
  }

  /** Whether `e` is written with holes: marked sparse at backup, or --sparse. */
  private holes(e: RestoreEntry): boolean {
    return this.sparse || e.sparse === true;
  }

  /**
   * Opens a small file for restore with synchronous calls (a handful of syscalls cost less
   * than as many thread-pool round trips): writes go straight from the slots; `finish()` sets
   * the size only when the writes did not cover it, then owner (only when it changes
   * something), xattrs, mode and times, closes and renames the temporary file into place.
   */
  syncFile(e: RestoreEntry, names?: Buffer[]): SyncFileSink {
    const t = this.openTemp(e, names);
    const sparse = this.holes(e);
    let end = 0;
    const abort = (): void => {
      if (t.fd >= 0) {
        try {
          fs.closeSync(t.fd);
        } catch {
          /* already failing */
        }
        t.fd = -1;
      }
      this.unlinkQuietly(t.p.dirFd, t.tmp);
      t.unpin();
    };
    return {
      write: (data, length, position) => {
        try {
          if (sparse) for (const [s, x] of dataRuns(data, length, position)) writeAllSync(t.fd, data, s, x, position + s, e.path);
          else writeAllSync(t.fd, data, 0, length, position, e.path);
          end = Math.max(end, position + length);
        } catch (err) {
          abort();
          throw err;
        }
      },
      finish: () => {
        try {
          this.finishFile(e, t, sparse ? -1 : end);
        } catch (err) {
          abort();
          throw err;
        }
        t.unpin();
      },
      abort,
    };
  }

  /** Opens a large file for restore (asynchronous writes). */
  async file(e: RestoreEntry, names?: Buffer[]): Promise<FileSink> {
    const t = this.openTemp(e, names);
    const sparse = this.holes(e);
    let end = 0;
    let closed = false;
    const abort = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      if (t.fd >= 0) {
        const fd = t.fd;
        t.fd = -1;
        await new Promise<void>((r) => fs.close(fd, () => r()));
      }
      this.unlinkQuietly(t.p.dirFd, t.tmp);
      t.unpin();
    };
    return {
      async write(data, length, position) {
        if (sparse) for (const [s, x] of dataRuns(data, length, position)) await writeAll(t.fd, data, s, x, position + s, e.path);
        else await writeAll(t.fd, data, 0, length, position, e.path);
        end = Math.max(end, position + length);
      },
      finish: async () => {
        if (closed) throw new Error(`restoring ${e.path}: the file was aborted`);
        try {
          this.finishFile(e, t, sparse ? -1 : end);
        } catch (err) {
          await abort();
          throw err;
        }
        closed = true;
        t.unpin();
      },
      abort,
    };
  }

  /**
   * Reads a restored file back (never following a symlink) and returns its SHA-256, for
   * --verify.
   */
  async readBack(e: RestoreEntry, names?: Buffer[]): Promise<{ size: number; sha256: string }> {
    const p = this.place(e, names);
    const c = fsops.constants();
    const fd = fsops.openat(p.dirFd, p.name, c.O_RDONLY | c.O_NOFOLLOW | c.O_NONBLOCK);
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(1 << 20);
    let size = 0;
    try {
      for (;;) {
        const n = await new Promise<number>((resolve, reject) => fs.read(fd, buf, 0, buf.length, size, (err, k) => (err ? reject(err) : resolve(k))));
        if (n === 0) break;
        h.update(buf.subarray(0, n));
        size += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    return { size, sha256: h.digest('hex') };
  }

  // ---- removing ---------------------------------------------------------------------------

  /** Removes `name` in `dirFd` and, if it is a directory, everything in it — one name at a
   * time through fds, never following a symlink. */
  private removeTree(dirFd: number, name: Buffer): void {
    const st = fsops.lstatat(dirFd, name);
    if (st === null) return;
    if (!isDir(st.mode)) {
      fsops.unlinkat(dirFd, name, false);
      return;
    }
    const stack: { parent: number; name: Buffer; fd: number; children: Buffer[] | null }[] = [];
    stack.push({ parent: dirFd, name, fd: fsops.openat(dirFd, name, DIR_FLAGS()), children: null });
    try {
      while (stack.length > 0) {
        const top = stack[stack.length - 1]!;
        top.children ??= fsops.readdir(top.fd);
        const child = top.children.pop();
        if (child === undefined) {
          stack.pop();
          fs.closeSync(top.fd);
          fsops.unlinkat(top.parent, top.name, true);
          continue;
        }
        const cst = fsops.lstatat(top.fd, child);
        if (cst === null) continue;
        if (isDir(cst.mode)) stack.push({ parent: top.fd, name: child, fd: fsops.openat(top.fd, child, DIR_FLAGS()), children: null });
        else fsops.unlinkat(top.fd, child, false);
      }
    } catch (err) {
      for (const s of stack) fs.closeSync(s.fd);
      throw err;
    }
  }

  /**
   * --delete: removes what directory `dir` holds and the snapshot does not (`keep`: the names
   * of its entries in the snapshot). `selected(path)`: only what the include/exclude patterns
   * would have restored is removed. Calls `deleted` for each (also in a dry run, which removes
   * nothing). A directory this restore did not restore is left alone.
   */
  deleteExtra(dir: string, keep: ReadonlySet<string>, selected: (path: string, isDir: boolean) => boolean, deleted: (path: string) => void): void {
    let fd: number;
    if (dir === '') {
      if (this.rootFd < 0) return;
      fd = this.rootFd;
    } else {
      const s = this.dirs.get(dir);
      if (s === undefined || !s.made || (this.dryRun && s.fresh)) return;
      fd = this.fds!.get(dir, s.names);
    }
    for (const child of fsops.readdir(fd)) {
      const text = escapeName(child);
      if (keep.has(text) || text.startsWith(this.tmpPrefix)) continue;
      const p = dir === '' ? text : `${dir}/${text}`;
      const st = fsops.lstatat(fd, child);
      if (st === null || !selected(p, isDir(st.mode))) continue;
      if (!this.dryRun) this.removeTree(fd, child);
      deleted(p);
    }
  }
}
