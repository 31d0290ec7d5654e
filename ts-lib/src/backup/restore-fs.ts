/**
 * The filesystem side of restore: creates what a snapshot's entries describe under a target
 * directory and gives each restored entry its metadata back. Where the bytes come from (slots
 * filled by the sidecar) is not its concern: a file is a sink that takes positional writes
 * (`fs.write` straight from a slot's buffer, no copy) and is finished or aborted.
 *
 * - Files are written to a temporary name in their directory and renamed over the final name
 *   only when complete, so an interrupted restore never leaves a truncated file under a real
 *   name. Large files (async, `file`): the size is set with `ftruncate` first. Small files
 *   (`syncFile`: synchronous calls, cheaper than a thread-pool round trip each) are only
 *   truncated when their writes do not cover them, and chowned only when the owner differs.
 * - Directories are made once each (a set of the ones made; the listing gives a directory
 *   before its contents), not with a recursive mkdir per file.
 * - Metadata order: owner (only when running as root: `lchown` by others fails), then mode
 *   (after chown, which clears set-id bits), then times. Directory metadata is applied at the
 *   end, deepest first, because creating entries inside a directory changes its mtime.
 * - Times are set with nanoseconds (utimensat/futimens through the addon, native.ts): Node's
 *   `utimes` takes a double that libuv truncates to microseconds, and turns times before 1970
 *   into "now". Restored mtimes (and atimes, set to the same) are exact.
 * - Paths and targets are repository text (names.ts) turned back into bytes.
 */

import fs, { promises as fsp, constants as FS } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { setTimes } from '../native';
import { unescapeName } from './names';
import type { EntryKind } from './walk';

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
}

/** `--include <path>` (repeatable): an entry is restored when it is one of the paths, lies
 * below one, or is a directory above one (so the path has somewhere to go). No includes:
 * everything. */
export function includeFilter(includes: readonly string[]): (p: string) => boolean {
  const norm = includes.map((i) => i.replace(/^\/+|\/+$/g, '')).filter((i) => i !== '');
  if (norm.length === 0) return () => true;
  return (p) => norm.some((i) => p === i || p.startsWith(i + '/') || i.startsWith(p + '/'));
}

/** A file being restored. */
export interface FileSink {
  /** Writes `data[0..length)` at `position`; resolves when the kernel has it. */
  write(data: Uint8Array, length: number, position: number): Promise<void>;
  /** Applies metadata and renames the file into place. */
  finish(): Promise<void>;
  /** Closes and removes the temporary file. */
  abort(): Promise<void>;
}

/** A file restored with synchronous calls (RestoreTarget.syncFile). */
export interface SyncFileSink {
  write(data: Uint8Array, length: number, position: number): void;
  finish(): void;
  abort(): void;
}

export class RestoreTarget {
  readonly root: Buffer;
  private readonly chown: boolean;
  private readonly dirs: RestoreEntry[] = [];
  private tmpSeq = 0;
  /** Directories known to exist (latin1 keys of absolute paths): made once, not per file. */
  private readonly made = new Set<string>();
  private readonly uid = process.getuid?.() ?? -1;
  private gid = process.getgid?.() ?? -1;

  constructor(root: string, opts: { chown?: boolean } = {}) {
    this.root = Buffer.from(path.resolve(root), 'utf8');
    this.chown = opts.chown ?? process.getuid?.() === 0;
  }

  /** The target path of a repository path. Refuses `..` and empty names (a hostile or broken
   * snapshot must not write outside the target). */
  abs(repoPath: string): Buffer {
    const parts = repoPath.split('/');
    for (const p of parts) {
      if (p === '' || p === '.' || p === '..') throw new Error(`refusing to restore path ${JSON.stringify(repoPath)}`);
    }
    return Buffer.concat([this.root, ...parts.flatMap((p) => [Buffer.from('/'), unescapeName(p)])]);
  }

  /** Creates the target root itself. */
  async prepare(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true });
    this.made.add(this.root.toString('latin1'));
    // New files take their group from a set-group-id directory: then always chown.
    if ((fs.statSync(this.root).mode & 0o2000) !== 0) this.gid = -1;
  }

  /** Makes sure a directory exists: one mkdir the first time (directories come before their
   * contents in a listing, so the parent is usually known), nothing afterwards. Synchronous:
   * a mkdir is cheaper than a thread-pool round trip. */
  private ensureDir(dir: Buffer): void {
    const key = dir.toString('latin1');
    if (this.made.has(key)) return;
    const slash = dir.lastIndexOf(0x2f);
    const parentKnown = slash > 0 && this.made.has(dir.subarray(0, slash).toString('latin1'));
    if (parentKnown) {
      try {
        fs.mkdirSync(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (!fs.statSync(dir).isDirectory()) throw err;
      }
    } else {
      fs.mkdirSync(dir, { recursive: true });
    }
    this.made.add(key);
  }

  private parentOf(abs: Buffer): void {
    const slash = abs.lastIndexOf(0x2f);
    if (slash > 0) this.ensureDir(abs.subarray(0, slash));
  }

  async dir(e: RestoreEntry): Promise<void> {
    this.ensureDir(this.abs(e.path));
    this.dirs.push(e);
  }

  async symlink(e: RestoreEntry): Promise<void> {
    const abs = this.abs(e.path);
    this.parentOf(abs);
    const tmp = this.tempName(abs);
    fs.symlinkSync(unescapeName(e.target ?? ''), tmp);
    try {
      if (this.chown) fs.lchownSync(tmp, e.uid, e.gid);
      setTimes(tmp, e.mtimeNs, true);
      fs.renameSync(tmp, abs);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
  }

  private tempName(abs: Buffer): Buffer {
    const slash = abs.lastIndexOf(0x2f);
    const name = `.shmpipe-restore-${process.pid}-${++this.tmpSeq}.tmp`;
    return Buffer.concat([abs.subarray(0, slash + 1), Buffer.from(name)]);
  }

  /** Opens a small file for restore with synchronous calls (for a file of a few chunks a
   * handful of syscalls cost less than as many thread-pool round trips): writes go straight
   * from the slots; `finish()` sets the size only when the writes did not cover it, then owner
   * (only when it changes something), mode and times, closes and renames the temporary file
   * into place; `abort()` closes and removes it. */
  syncFile(e: RestoreEntry): SyncFileSink {
    const abs = this.abs(e.path);
    this.parentOf(abs);
    const tmp = this.tempName(abs);
    const fd = fs.openSync(tmp, FS.O_WRONLY | FS.O_CREAT | FS.O_EXCL, 0o600);
    let open = true;
    let end = 0;
    const abort = (): void => {
      if (open) {
        open = false;
        try {
          fs.closeSync(fd);
        } catch {
          /* already failing */
        }
      }
      fs.rmSync(tmp, { force: true });
    };
    return {
      write: (data, length, position) => {
        try {
          let done = 0;
          while (done < length) {
            const n = fs.writeSync(fd, data, done, length - done, position + done);
            if (n === 0) throw new Error(`short write restoring ${e.path}`);
            done += n;
          }
          end = Math.max(end, position + length);
        } catch (err) {
          abort();
          throw err;
        }
      },
      finish: () => {
        try {
          if (BigInt(end) !== e.size) fs.ftruncateSync(fd, Number(e.size));
          // chown clears set-id bits: before chmod.
          if (this.chown && (e.uid !== this.uid || e.gid !== this.gid)) fs.fchownSync(fd, e.uid, e.gid);
          fs.fchmodSync(fd, e.mode & 0o7777);
          setTimes(fd, e.mtimeNs);
          open = false;
          fs.closeSync(fd);
          fs.renameSync(tmp, abs);
        } catch (err) {
          abort();
          throw err;
        }
      },
      abort,
    };
  }

  /** Opens a file for restore (at its temporary name, already sized to `e.size`). */
  async file(e: RestoreEntry): Promise<FileSink> {
    const abs = this.abs(e.path);
    this.parentOf(abs);
    const tmp = this.tempName(abs);
    const fh: FileHandle = await fsp.open(tmp, FS.O_WRONLY | FS.O_CREAT | FS.O_EXCL, 0o600);
    const chown = this.chown;
    const uid = this.uid;
    const gid = this.gid;
    let closed = false;
    try {
      await fh.truncate(Number(e.size));
    } catch (err) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    return {
      async write(data, length, position) {
        let done = 0;
        while (done < length) {
          const { bytesWritten } = await fh.write(data, done, length - done, position + done);
          if (bytesWritten === 0) throw new Error(`short write restoring ${e.path}`);
          done += bytesWritten;
        }
      },
      async finish() {
        try {
          if (chown && (e.uid !== uid || e.gid !== gid)) fs.fchownSync(fh.fd, e.uid, e.gid);
          fs.fchmodSync(fh.fd, e.mode & 0o7777);
          setTimes(fh.fd, e.mtimeNs);
        } finally {
          closed = true;
          await fh.close();
        }
        fs.renameSync(tmp, abs);
      },
      async abort() {
        if (!closed) {
          closed = true;
          await fh.close().catch(() => undefined);
        }
        await fsp.rm(tmp, { force: true });
      },
    };
  }

  /** Other kinds (devices, FIFOs, sockets) are recorded for listing only; restore skips them
   * and says so. Returns false. */
  other(_e: RestoreEntry): boolean {
    return false;
  }

  /** Applies directory metadata, deepest first; call once every entry is restored. */
  async finishDirs(): Promise<void> {
    const dirs = this.dirs.splice(0).sort((a, b) => b.path.split('/').length - a.path.split('/').length);
    for (const d of dirs) {
      const abs = this.abs(d.path);
      if (this.chown) await fsp.lchown(abs, d.uid, d.gid);
      await fsp.chmod(abs, d.mode & 0o7777);
      setTimes(abs, d.mtimeNs);
    }
  }
}
