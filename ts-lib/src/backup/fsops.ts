/**
 * The *at() file-system calls of restore and backup (addon: ts-lib/addon/fsops.cc), typed and
 * checked before the native call. Names are Buffers (file names need not be UTF-8) without NUL;
 * directory fds come from `openat` with O_DIRECTORY|O_NOFOLLOW (restore-fs.ts). Failures throw
 * errors shaped like node:fs's (`code` = errno name, `errno`, `syscall`), so callers treat them
 * like any other fs error. All synchronous: one syscall is cheaper than a thread-pool hop.
 */

import { ShmpipeError } from '../errors';
import { fsAddon } from '../native';

/** What `fstatat` reports (the fields restore and backup compare). */
export interface Stat {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: bigint;
  blocks: bigint;
  ino: bigint;
  dev: bigint;
  rdev: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

interface Native {
  openat(dirfd: number, name: Buffer, flags: number, mode: number): number;
  mkdirat(dirfd: number, name: Buffer, mode: number): void;
  symlinkat(target: Buffer, dirfd: number, name: Buffer): void;
  mknodat(dirfd: number, name: Buffer, mode: number, rdev: bigint): void;
  linkat(olddirfd: number, oldname: Buffer, newdirfd: number, newname: Buffer): void;
  renameat(olddirfd: number, oldname: Buffer, newdirfd: number, newname: Buffer): void;
  unlinkat(dirfd: number, name: Buffer, flags: number): void;
  fstatat(dirfd: number, name: Buffer, flags: number): Stat | null;
  fchownat(dirfd: number, name: Buffer, uid: number, gid: number, flags: number): void;
  fchmodat(dirfd: number, name: Buffer, mode: number, flags: number): void;
  utimensat(dirfd: number, name: Buffer, sec: number, nsec: number, flags: number): void;
  readdir(dirfd: number): Buffer[];
  listxattr(target: number | Buffer): Buffer[];
  getxattr(target: number | Buffer, name: Buffer): Buffer | null;
  setxattr(target: number | Buffer, name: Buffer, value: Buffer): void;
  seek(fd: number, position: number, hole: boolean): number;
  constants: Record<'AT_FDCWD' | 'AT_SYMLINK_NOFOLLOW' | 'AT_REMOVEDIR' | 'O_RDONLY' | 'O_WRONLY' | 'O_RDWR' | 'O_CREAT' | 'O_EXCL' | 'O_NOFOLLOW' | 'O_DIRECTORY' | 'O_NONBLOCK' | 'O_NOCTTY' | 'O_PATH', number>;
}

let native: Native | undefined;
function n(): Native {
  native ??= fsAddon() as Native;
  return native;
}

/** The addon's O_*, AT_* constants (Linux values). */
export function constants(): Native['constants'] {
  return n().constants;
}

const EMPTY = Buffer.alloc(0);

function bad(what: string): never {
  throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `fsops: ${what}`);
}

function dirfd(fd: number): number {
  if (!Number.isInteger(fd) || (fd < 0 && fd !== n().constants.AT_FDCWD)) bad(`${String(fd)} is not a directory fd`);
  return fd;
}

function name(b: Buffer, allowEmpty = false): Buffer {
  if (!Buffer.isBuffer(b) || (b.length === 0 && !allowEmpty) || b.includes(0)) bad('a name must be a non-empty Buffer without NUL');
  return b;
}

function int(v: number, what: string): number {
  if (!Number.isInteger(v)) bad(`${what} must be an integer, got ${String(v)}`);
  return v;
}

export const openat = (dir: number, nm: Buffer, flags: number, mode = 0): number => n().openat(dirfd(dir), name(nm), int(flags, 'flags'), int(mode, 'mode'));
export const mkdirat = (dir: number, nm: Buffer, mode: number): void => n().mkdirat(dirfd(dir), name(nm), int(mode, 'mode'));
export const symlinkat = (target: Buffer, dir: number, nm: Buffer): void => n().symlinkat(name(target), dirfd(dir), name(nm));
export function mknodat(dir: number, nm: Buffer, mode: number, rdev: bigint): void {
  if (typeof rdev !== 'bigint' || rdev < 0n || rdev >= 2n ** 64n) bad('rdev must be a u64 bigint');
  n().mknodat(dirfd(dir), name(nm), int(mode, 'mode'), rdev);
}
export const linkat = (od: number, on: Buffer, nd: number, nn: Buffer): void => n().linkat(dirfd(od), name(on), dirfd(nd), name(nn));
export const renameat = (od: number, on: Buffer, nd: number, nn: Buffer): void => n().renameat(dirfd(od), name(on), dirfd(nd), name(nn));
export const unlinkat = (dir: number, nm: Buffer, removeDir: boolean): void => n().unlinkat(dirfd(dir), name(nm), removeDir ? n().constants.AT_REMOVEDIR : 0);
/** lstat of `nm` in `dir` (never follows); null if there is nothing. */
export const lstatat = (dir: number, nm: Buffer): Stat | null => n().fstatat(dirfd(dir), name(nm), n().constants.AT_SYMLINK_NOFOLLOW);
/** fstat of an fd. */
export const fstat = (fd: number): Stat => n().fstatat(dirfd(fd), EMPTY, 0) as Stat;
/** lchown of `nm` in `dir`; an empty name: the fd `dir` itself. */
export const lchownat = (dir: number, nm: Buffer, uid: number, gid: number): void =>
  n().fchownat(dirfd(dir), name(nm, true), int(uid, 'uid'), int(gid, 'gid'), nm.length === 0 ? 0 : n().constants.AT_SYMLINK_NOFOLLOW);
/** chmod of `nm` in `dir` without following a symlink (EOPNOTSUPP on one). */
export const lchmodat = (dir: number, nm: Buffer, mode: number): void => n().fchmodat(dirfd(dir), name(nm), int(mode, 'mode'), n().constants.AT_SYMLINK_NOFOLLOW);
export const readdir = (dir: number): Buffer[] => n().readdir(dirfd(dir));

const NS = 1_000_000_000n;

/** Sets atime and mtime to `ns` (exactly; negative: before 1970) of `nm` in `dir` without
 * following a symlink; an empty name: of the fd `dir` (futimens). */
export function setTimesAt(dir: number, nm: Buffer, ns: bigint): void {
  if (typeof ns !== 'bigint' || ns < -(2n ** 63n) || ns >= 2n ** 63n) bad(`${String(ns)} is not an i64 of nanoseconds`);
  let sec = ns / NS;
  let nsec = ns % NS;
  if (nsec < 0n) {
    sec -= 1n;
    nsec += NS;
  }
  n().utimensat(dirfd(dir), name(nm, true), Number(sec), Number(nsec), n().constants.AT_SYMLINK_NOFOLLOW);
}

function xtarget(t: number | Buffer): number | Buffer {
  return typeof t === 'number' ? dirfd(t) : name(t);
}
/** Extended attribute names of an fd, or of a path without following its last component. */
export const listxattr = (t: number | Buffer): Buffer[] => n().listxattr(xtarget(t));
export const getxattr = (t: number | Buffer, nm: Buffer): Buffer | null => n().getxattr(xtarget(t), name(nm));
export function setxattr(t: number | Buffer, nm: Buffer, value: Buffer): void {
  if (!Buffer.isBuffer(value)) bad('an xattr value must be a Buffer');
  n().setxattr(xtarget(t), name(nm), value);
}
/** The next data (`hole` false) or hole at or after `position`; -1 past the end. */
export const seek = (fd: number, position: number, hole: boolean): number => n().seek(dirfd(fd), int(position, 'position'), hole === true);
