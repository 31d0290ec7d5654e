/**
 * How the browsing commands (ls, find, diff) show a snapshot's entries: paths as `/root/a/b`
 * (the snapshot's own namespace: what `restore` puts under its target), types and `ls -l`
 * permissions from `st_mode`, restic's node JSON fields, and the long listing line.
 */

import { unescapeName } from '../backup/names';
import type { TreeEntry } from '../backup/ops';

/** A repository path for people: unescaped when the name is UTF-8 (else the escaped text). */
export function displayPath(p: string): string {
  if (!p.includes('\\')) return `/${p}`;
  try {
    const b = unescapeName(p);
    const s = b.toString('utf8');
    return Buffer.from(s, 'utf8').equals(b) ? `/${s}` : `/${p}`;
  } catch {
    return `/${p}`;
  }
}

/** A path argument (`/docs/a`, `docs/a/`) as a repository path (`docs/a`); '' is the top. */
export function snapshotPathArg(arg: string): string {
  return arg
    .split('/')
    .filter((c) => c !== '' && c !== '.')
    .join('/');
}

/** RFC 3339 with nanoseconds, UTC. */
export function rfc3339(timeNs: string): string {
  const ns = BigInt(timeNs);
  const ms = ns / 1_000_000n;
  const frac = (((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n).toString().padStart(9, '0');
  return new Date(Number(ms)).toISOString().replace(/\.\d{3}Z$/, `.${frac}Z`);
}

const S_IFMT = 0o170000;
const TYPES: Record<number, string> = { 0o100000: 'file', 0o040000: 'dir', 0o120000: 'symlink', 0o060000: 'dev', 0o020000: 'chardev', 0o010000: 'fifo', 0o140000: 'socket' };
const LETTERS: Record<string, string> = { file: '-', dir: 'd', symlink: 'l', dev: 'b', chardev: 'c', fifo: 'p', socket: 's', irregular: '?' };

/** restic's node types: file, dir, symlink, dev, chardev, fifo, socket, irregular. */
export function nodeType(e: Pick<TreeEntry, 'kind' | 'mode'>): string {
  if (e.kind === 'file' || e.kind === 'dir' || e.kind === 'symlink') return e.kind;
  return TYPES[e.mode & S_IFMT] ?? 'irregular';
}

/** `drwxr-xr-x`, `-rwsr-xr-x`, as `ls -l` writes them. */
export function permissions(e: Pick<TreeEntry, 'kind' | 'mode'>): string {
  const m = e.mode;
  const rwx = (shift: number, special: number, ch: string): string => {
    const x = (m >> shift) & 1;
    const s = (m & special) !== 0;
    return `${(m >> (shift + 2)) & 1 ? 'r' : '-'}${(m >> (shift + 1)) & 1 ? 'w' : '-'}${s ? (x ? ch : ch.toUpperCase()) : x ? 'x' : '-'}`;
  };
  return LETTERS[nodeType(e)]! + rwx(6, 0o4000, 's') + rwx(3, 0o2000, 's') + rwx(0, 0o1000, 't');
}

const base = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

/** restic's `ls --json` / `find --json` node (st_mode as `mode`, not Go's FileMode). */
export function nodeJson(e: TreeEntry): Record<string, unknown> {
  const shown = displayPath(e.path);
  return {
    name: base(shown),
    type: nodeType(e),
    path: shown,
    uid: e.uid,
    gid: e.gid,
    size: Number(e.size),
    mode: e.mode,
    permissions: permissions(e),
    mtime: rfc3339(e.mtimeNs.toString()),
    inode: Number(e.inode),
    device_id: Number(e.dev),
    ...(e.target !== undefined ? { linktarget: e.target } : {}),
    struct_type: 'node',
    message_type: 'node',
  };
}

/** `2006-01-02 15:04:05` in UTC. */
export function shortTime(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '');
}

/** The `--long` line: permissions, uid, gid, size, mtime, path (and a symlink's target). */
export function longLine(e: TreeEntry): string {
  const link = e.kind === 'symlink' && e.target !== undefined ? ` -> ${e.target}` : '';
  return `${permissions(e)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(11)} ${shortTime(e.mtimeNs)} ${displayPath(e.path)}${link}`;
}
