/**
 * What restore's `--include/--exclude/--iinclude/--iexclude` select, with restic's meaning
 * (its `cmd_restore.go`), over the shared matcher (pattern.ts). Snapshot paths are matched as
 * `/` + the repository path, so `/data/sub` is anchored at the snapshot's top and `*.log`
 * matches at any depth; a pattern matching a directory matches what is below it.
 *
 * - Includes: an entry is restored when an include matches it; a directory that does not
 *   match but may have a match below it is entered (restore creates it only when something
 *   inside it is restored).
 * - Excludes: an entry is restored unless an exclude matches it.
 * - Both at once: refused, as restic does.
 */

import { PatternList } from './pattern';

export interface PatternOptions {
  include?: readonly string[];
  exclude?: readonly string[];
  iinclude?: readonly string[];
  iexclude?: readonly string[];
}

export interface Selection {
  /** Restore this entry. */
  restore: boolean;
  /** A directory not restored itself, with something below it that may be. */
  descend: boolean;
}

/** The selection function; throws PatternError for a bad pattern, Error for both kinds. */
export function selector(o: PatternOptions): (path: string, isDir: boolean) => Selection {
  const inc = [new PatternList(o.include ?? []), new PatternList(o.iinclude ?? [], true)].filter((l) => !l.empty);
  const exc = [new PatternList(o.exclude ?? []), new PatternList(o.iexclude ?? [], true)].filter((l) => !l.empty);
  if (inc.length > 0 && exc.length > 0) throw new Error('include and exclude patterns exclude each other');
  if (inc.length > 0) {
    return (p, isDir) => {
      let restore = false;
      let child = false;
      for (const l of inc) {
        const t = l.test(`/${p}`);
        restore ||= t.matched;
        child ||= t.childMayMatch;
      }
      return { restore, descend: !restore && isDir && child };
    };
  }
  if (exc.length > 0) return (p) => ({ restore: !exc.some((l) => l.matches(`/${p}`)), descend: false });
  return () => ({ restore: true, descend: false });
}
