/**
 * The order check of restore: which entries of a snapshot listing may be restored where. The
 * listing comes from a repository restore does not trust, so before an entry touches the
 * target its path is decoded and checked (names.ts pathNames), and its place in the listing is
 * checked against what every shmpipe backup writes (walk.ts): a directory comes before its
 * contents, and a directory's entries come together, once each. So:
 *
 * - an entry whose parent is not a directory listed before it — a symlink (a symlink, then a
 *   file "through" it), a file, a refused entry, nothing — is refused;
 * - a second entry with the same path is refused (a duplicate, or a directory "replaced" by a
 *   file later on): the entries of a directory must come in one run, and a name once per run;
 * - below a directory that failed or was refused, entries are not tried one by one: they are
 *   counted, and reported once with the directory (`belowFailed`).
 *
 * Memory: the directories listed whose entries have not come yet (the walk's own stack, in
 * effect) and the names of the current run — not the whole tree. The names of each finished
 * run go to `onRunEnd` (restore --delete removes what a directory has and the snapshot does not).
 */

import { ShmpipeError } from '../errors';
import { pathNames } from './names';

export interface Planned {
  /** The decoded names of the path (names.ts). */
  names: Buffer[];
  /** The parent's repository path ('' at the top). */
  parent: string;
}

export interface PlanOptions {
  /** A directory's run ended: `names` are its entries' names (repository text). */
  onRunEnd?: (dir: string, names: ReadonlySet<string>) => void;
}

const refuse = (path: string, why: string): ShmpipeError => new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `refusing entry ${JSON.stringify(path)}: ${why}`);

export class RestorePlan {
  private readonly top = new Set<string>();
  private run: { dir: string; names: Set<string> } | null = null;
  /** Directories listed whose run has not started. */
  private readonly waiting = new Set<string>();
  /** Directories that failed, and how many entries below each were not tried. */
  private readonly failedDirs: { path: string; prefix: string; below: number }[] = [];

  constructor(private readonly o: PlanOptions = {}) {}

  /**
   * Checks the next entry of the listing. Returns where it goes, or null when it lies below a
   * failed directory (counted there, not reported by itself). Throws SHMPIPE_E_UNSAFE_ENTRY
   * naming the entry when it must not be restored.
   */
  accept(path: string, isDir: boolean): Planned | null {
    for (const f of this.failedDirs) {
      if (path.startsWith(f.prefix)) {
        f.below++;
        return null;
      }
    }
    const names = pathNames(path);
    const slash = path.lastIndexOf('/');
    const parent = slash < 0 ? '' : path.slice(0, slash);
    const name = path.slice(slash + 1);
    if (parent === '') {
      if (this.top.has(name)) throw refuse(path, 'it is listed twice');
      this.top.add(name);
    } else if (this.run?.dir === parent) {
      if (this.run.names.has(name)) throw refuse(path, 'it is listed twice');
      this.run.names.add(name);
    } else if (this.waiting.has(parent)) {
      this.endRun();
      this.waiting.delete(parent);
      this.run = { dir: parent, names: new Set([name]) };
    } else {
      throw refuse(path, `its parent ${JSON.stringify(parent)} is not a directory listed before it, or its entries already ended (a symlink or file as a parent, a duplicate, or entries out of order)`);
    }
    if (isDir) this.waiting.add(path);
    return { names, parent };
  }

  /** A directory entry failed or was refused: what lies below it is not tried. */
  failed(dir: string): void {
    this.waiting.delete(dir);
    if (this.run?.dir === dir) this.run = null;
    this.failedDirs.push({ path: dir, prefix: dir + '/', below: 0 });
  }

  private endRun(): void {
    if (this.run !== null) this.o.onRunEnd?.(this.run.dir, this.run.names);
    this.run = null;
  }

  /** The listing ended: the last run, the top level (''), and every directory listed without
   * entries end. */
  finish(): void {
    this.endRun();
    this.o.onRunEnd?.('', this.top);
    const none: ReadonlySet<string> = new Set();
    for (const d of this.waiting) this.o.onRunEnd?.(d, none);
    this.waiting.clear();
  }

  /** Failed directories with entries below them that were not tried. */
  belowFailed(): { path: string; count: number }[] {
    return this.failedDirs.filter((f) => f.below > 0).map((f) => ({ path: f.path, count: f.below }));
  }
}
