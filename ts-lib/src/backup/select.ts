/**
 * What a backup leaves out, and what `--files-from` puts in: restic's backup selection.
 *
 * - `--exclude`/`--iexclude` (and the `-file` variants: one pattern per line, `#` comments,
 *   `$VAR` expanded, `$$` a literal `$`) match the entry's absolute path (pattern.ts).
 * - `--exclude-if-present NAME[:HEADER]`: the contents of a directory that holds NAME (starting
 *   with HEADER, when given) are left out, except NAME itself; `--exclude-caches` is that with
 *   `CACHEDIR.TAG` and the Cache Directory Tagging Standard's signature.
 * - `--exclude-larger-than SIZE`: files (anything but directories) larger than SIZE.
 * - `--one-file-system`: entries on another device than their root, except mount points
 *   themselves (kept as empty directories, as restic does).
 * - `--files-from*` targets: only the targets, what is below them and the directories above
 *   them (up to the walked root) are kept (see `planTargets`).
 *
 * The roots named on the command line are never excluded (restic: "excludes do not apply to
 * backup sources that were explicitly passed"). The result is a `Select` for the walker's hook
 * (walk.ts): called for every entry below a root, in walk order, before it is yielded; an
 * excluded directory is not descended into.
 */

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { expandGlob, PatternList } from './pattern';
import type { Select, SourceEntry } from './walk';

/** The Cache Directory Tagging Standard (https://bford.info/cachedir/). */
export const CACHEDIR_TAG = 'CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55';

export interface SelectionOptions {
  exclude?: readonly string[];
  iexclude?: readonly string[];
  excludeFile?: readonly string[];
  iexcludeFile?: readonly string[];
  /** `NAME` or `NAME:HEADER`. */
  excludeIfPresent?: readonly string[];
  excludeCaches?: boolean;
  /** Bytes. */
  excludeLargerThan?: number;
  oneFileSystem?: boolean;
  /** `--files-from*` targets (absolute): keep only these, below and above them. */
  targets?: readonly string[];
}

/** A selection that cannot be set up (a bad pattern, an unreadable exclude file, …): a usage error. */
export class SelectionError extends Error {}

/** Text of a path for matching: UTF-8 when it is, else latin1 (each byte one character). */
export function pathText(abs: Buffer): string {
  const s = abs.toString('utf8');
  return s.includes('\uFFFD') && !Buffer.from(s, 'utf8').equals(abs) ? abs.toString('latin1') : s;
}

/** restic's sizes: a whole number of bytes, or with k/m/g/t (KiB … TiB), either case. */
export function parseSize(s: string): number {
  const m = /^([0-9]+)([kKmMgGtT]?)$/.exec(s.trim());
  if (!m) throw new SelectionError(`'${s}' is not a size: a number of bytes, optionally with k, m, g or t (KiB, MiB, GiB, TiB)`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw new SelectionError(`size '${s}' is too large`);
  return n;
}

/** UTF-8, or UTF-16 with a byte order mark (as restic's textfile.Read); a UTF-8 BOM is dropped. */
export function decodeText(b: Buffer): string {
  if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) return b.subarray(3).toString('utf8');
  if (b[0] === 0xff && b[1] === 0xfe) return b.subarray(2).toString('utf16le');
  if (b[0] === 0xfe && b[1] === 0xff) {
    const swapped = Buffer.from(b.subarray(2));
    swapped.swap16();
    return swapped.toString('utf16le');
  }
  return b.toString('utf8');
}

/** `$VAR` and `${VAR}` from the environment (unset: empty), `$$` a literal `$` (Go's os.Expand). */
export function expandEnv(line: string, env: NodeJS.ProcessEnv = process.env): string {
  return line.replace(/\$(\$|\{([^}]*)\}|[A-Za-z0-9_]+)/g, (_, name: string, braced: string | undefined) => (name === '$' ? '$' : (env[braced ?? name] ?? '')));
}

async function readInput(file: string, stdin: () => Promise<Buffer>): Promise<Buffer> {
  try {
    return file === '-' ? await stdin() : await fsp.readFile(file);
  } catch (e) {
    throw new SelectionError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** Reads standard input once (several `-` lists share it: the first gets it, as in restic). */
export function stdinOnce(): () => Promise<Buffer> {
  let read: Promise<Buffer> | null = null;
  return () => {
    if (read !== null) return Promise.resolve(Buffer.alloc(0));
    read = (async () => {
      const parts: Buffer[] = [];
      for await (const c of process.stdin) parts.push(c as Buffer);
      return Buffer.concat(parts);
    })();
    return read;
  };
}

/** Patterns of exclude files: trimmed lines, no blanks or `#` comments, environment expanded. */
export async function readPatternFiles(files: readonly string[], stdin = stdinOnce()): Promise<string[]> {
  const out: string[] = [];
  for (const f of files) {
    for (const raw of decodeText(await readInput(f, stdin)).split(/\r?\n/)) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      out.push(expandEnv(line));
    }
  }
  return out;
}

export interface FilesFrom {
  /** `--files-from`: glob lines (trimmed, `#` comments). */
  patterns?: readonly string[];
  /** `--files-from-verbatim`: one path per line, as is (empty lines skipped). */
  verbatim?: readonly string[];
  /** `--files-from-raw`: paths each ending in a NUL byte. */
  raw?: readonly string[];
}

/**
 * The targets the `--files-from*` lists name (absolute, in list order, duplicates dropped).
 * `warn` hears of globs that match nothing.
 */
export async function readFilesFrom(o: FilesFrom, warn: (message: string) => void, stdin = stdinOnce()): Promise<string[]> {
  const out: string[] = [];
  for (const f of o.patterns ?? []) {
    for (const raw of decodeText(await readInput(f, stdin)).split(/\r?\n/)) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      let found: string[];
      try {
        found = await expandGlob(line);
      } catch (e) {
        throw new SelectionError(`--files-from ${f}: ${(e as Error).message}`);
      }
      if (found.length === 0) warn(`pattern ${JSON.stringify(line)} in ${f} does not match any files, skipping`);
      out.push(...found);
    }
  }
  for (const f of o.verbatim ?? []) {
    for (const line of decodeText(await readInput(f, stdin)).split('\n')) if (line !== '') out.push(line);
  }
  for (const f of o.raw ?? []) {
    const b = await readInput(f, stdin);
    if (b.length === 0) continue;
    if (b[b.length - 1] !== 0) throw new SelectionError(`--files-from-raw ${f}: the last name does not end in a NUL byte`);
    // Names are bytes: split them as latin1 (one character a byte), then decode each.
    for (const name of b.subarray(0, -1).toString('latin1').split('\0')) {
      if (name === '') throw new SelectionError(`--files-from-raw ${f}: an empty name in the list`);
      out.push(pathText(Buffer.from(name, 'latin1')));
    }
  }
  return [...new Set(out.map((t) => path.resolve(t)))];
}

/**
 * Roots to walk for `--files-from*` targets (with any paths named too): the deepest directory
 * holding them all, so the snapshot keeps their places relative to each other (restic keeps
 * whole paths; shmpipe names a snapshot's roots by their last component). Targets whose common
 * directory is `/` are grouped under their first components. A single target is its own root,
 * as on the command line.
 */
export function planTargets(targets: readonly string[]): string[] {
  const split = targets.map((t) => path.resolve(t).split('/').filter((c) => c !== ''));
  if (split.length === 0) return [];
  let common = split[0]!;
  for (const s of split) {
    let i = 0;
    while (i < common.length && i < s.length && common[i] === s[i]) i++;
    common = common.slice(0, i);
  }
  if (common.length > 0) return ['/' + common.join('/')];
  return [...new Set(split.map((s) => '/' + (s[0] ?? '')))];
}

/** The tag check of one `--exclude-if-present` spec for a directory. */
async function dirHasTag(dir: string, name: string, header: string, warn: (m: string) => void): Promise<boolean> {
  const tag = path.join(dir, name);
  try {
    await fsp.lstat(tag);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && (e as NodeJS.ErrnoException).code !== 'ENOTDIR') warn(`cannot check exclusion tag file ${tag}: ${(e as Error).message}`);
    return false;
  }
  if (header === '') return true;
  const want = Buffer.from(header, 'utf8');
  let fh;
  try {
    fh = await fsp.open(tag, 'r');
  } catch (e) {
    warn(`cannot open exclusion tag file ${tag}: ${(e as Error).message}`);
    return false;
  }
  try {
    const got = Buffer.alloc(want.length);
    const { bytesRead } = await fh.read(got, 0, want.length, 0);
    if (bytesRead < want.length || !got.equals(want)) {
      warn(`exclusion tag file ${tag} does not start with the expected signature; the directory is backed up`);
      return false;
    }
    return true;
  } catch (e) {
    warn(`cannot read exclusion tag file ${tag}: ${(e as Error).message}`);
    return false;
  } finally {
    await fh.close();
  }
}

/**
 * The walker's hook for these options, or undefined when nothing is left out. `roots` are the
 * walked roots (their devices are read here for `--one-file-system`); `warn` hears of tag files
 * that could not be read or have the wrong signature.
 */
export async function buildSelect(o: SelectionOptions, roots: readonly string[], warn: (message: string) => void): Promise<Select | undefined> {
  const stdin = stdinOnce();
  let exclude: PatternList;
  let iexclude: PatternList;
  try {
    exclude = new PatternList([...(o.exclude ?? []), ...(await readPatternFiles(o.excludeFile ?? [], stdin))]);
    iexclude = new PatternList([...(o.iexclude ?? []), ...(await readPatternFiles(o.iexcludeFile ?? [], stdin))], true);
  } catch (e) {
    if (e instanceof SelectionError) throw e;
    throw new SelectionError((e as Error).message);
  }
  const tags = [...(o.excludeIfPresent ?? []), ...(o.excludeCaches ? [CACHEDIR_TAG] : [])].map((spec) => {
    const colon = spec.indexOf(':');
    const name = colon < 0 ? spec : spec.slice(0, colon);
    if (name === '' || name.includes('/')) throw new SelectionError(`--exclude-if-present needs a file name (NAME or NAME:HEADER), got '${spec}'`);
    return { name, header: colon < 0 ? '' : spec.slice(colon + 1) };
  });
  const maxSize = o.excludeLargerThan;
  const devices = new Map<string, bigint>();
  if (o.oneFileSystem) {
    for (const r of roots) {
      try {
        devices.set(path.resolve(r), (await fsp.lstat(path.resolve(r), { bigint: true })).dev);
      } catch {
        // A root that cannot be read is reported by the walk.
      }
    }
  }
  const targets = o.targets !== undefined ? new Set(o.targets.map((t) => path.resolve(t))) : null;
  const aboveTargets = new Set<string>();
  for (const t of targets ?? []) for (let d = path.dirname(t); d !== '/' && !aboveTargets.has(d); d = path.dirname(d)) aboveTargets.add(d);

  if (exclude.empty && iexclude.empty && tags.length === 0 && maxSize === undefined && !o.oneFileSystem && targets === null) return undefined;

  /** The root `abs` is below (the longest match). */
  const rootOf = (abs: string): string | undefined => {
    let best: string | undefined;
    for (const r of devices.keys()) if ((abs === r || abs.startsWith(r === '/' ? '/' : r + '/')) && (best === undefined || r.length > best.length)) best = r;
    return best;
  };
  // Children of one directory come together (walk.ts), so one cached answer per spec suffices.
  let tagDir = '';
  let tagged: boolean[] = [];

  const tagVerdict = (name: string): boolean => !tags.some((t, i) => tagged[i] && t.name !== name);

  // Synchronous but for the first child of a directory when tag files are looked for: the
  // walker awaits only what is a promise.
  return (e: SourceEntry, parent: SourceEntry): boolean | Promise<boolean> => {
    const abs = pathText(e.abs);
    if (targets !== null && !targets.has(abs) && !aboveTargets.has(abs)) {
      let below = false;
      for (let d = path.dirname(abs); d !== '/'; d = path.dirname(d)) {
        if (targets.has(d)) {
          below = true;
          break;
        }
      }
      if (!below) return false;
    }
    if (exclude.matches(abs) || iexclude.matches(abs)) return false;
    if (maxSize !== undefined && e.kind !== 'dir' && e.size > BigInt(maxSize)) return false;
    if (o.oneFileSystem) {
      const root = rootOf(abs);
      const dev = root === undefined ? undefined : devices.get(root);
      // A mount point stays (an empty directory): its parent is on the root's device.
      if (dev !== undefined && e.dev !== dev && !(e.kind === 'dir' && parent.dev === dev)) return false;
    }
    if (tags.length === 0) return true;
    const dir = pathText(parent.abs);
    if (dir === tagDir) return tagVerdict(path.basename(abs));
    return Promise.all(tags.map((t) => dirHasTag(dir, t.name, t.header, warn))).then((found) => {
      tagDir = dir;
      tagged = found;
      return tagVerdict(path.basename(abs));
    });
  };
}
