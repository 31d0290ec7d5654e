/**
 * Include/exclude patterns with restic's meaning (restic `internal/filter`), for restore's
 * `--include/--exclude/--iinclude/--iexclude`. A pattern is matched against a snapshot path
 * (`data/sub/file`, repository text) name by name:
 *
 * - `*`, `?`, `[a-z]`, `[^a-z]` and `\x` within one name, as Go's filepath.Match;
 * - `**` for any number of names (none included);
 * - a pattern starting with `/` is anchored at the snapshot's root; one without matches at any
 *   depth (`*.log` matches `data/a/x.log`);
 * - a pattern that matches a directory matches everything below it.
 *
 * `childMayMatch` says whether something below a directory could match (restore creates the
 * directories above an included path). The `i` variants compare lowercased.
 */

export interface Pattern {
  readonly text: string;
  readonly anchored: boolean;
  readonly parts: readonly (RegExp | '**')[];
}

function componentRegExp(glob: string, ci: boolean): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '\\' && i + 1 < glob.length) re += escapeRe(glob[++i]!);
    else if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close < 0) throw new Error(`pattern ${JSON.stringify(glob)}: unterminated [`);
      let body = glob.slice(i + 1, close);
      const neg = body.startsWith('^') || body.startsWith('!');
      if (neg) body = body.slice(1);
      re += `[${neg ? '^' : ''}${body.replace(/[\\\]]/g, '\\$&')}]`;
      i = close;
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`, ci ? 'si' : 's');
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

export function compile(text: string, caseInsensitive = false): Pattern {
  const t = text.trim();
  if (t === '') throw new Error('an empty pattern');
  const anchored = t.startsWith('/');
  const parts = t
    .split('/')
    .filter((p) => p !== '')
    .map((p) => (p === '**' ? ('**' as const) : componentRegExp(p, caseInsensitive)));
  return { text, anchored, parts };
}

/** Whether `p` matches `names` or a directory above them. */
export function matches(p: Pattern, names: readonly string[]): boolean {
  const at = (pi: number, ci: number): boolean => {
    if (pi === p.parts.length) return true;
    const part = p.parts[pi]!;
    if (part === '**') return at(pi + 1, ci) || (ci < names.length && at(pi, ci + 1));
    return ci < names.length && part.test(names[ci]!) && at(pi + 1, ci + 1);
  };
  if (p.parts.length === 0) return true;
  if (p.anchored) return at(0, 0);
  for (let start = 0; start < names.length; start++) if (at(0, start)) return true;
  return false;
}

/** Whether something below the directory `names` could match `p`. */
export function childMayMatch(p: Pattern, names: readonly string[]): boolean {
  if (!p.anchored) return true;
  const at = (pi: number, ci: number): boolean => {
    if (pi === p.parts.length || ci === names.length) return true;
    const part = p.parts[pi]!;
    if (part === '**') return true;
    return part.test(names[ci]!) && at(pi + 1, ci + 1);
  };
  return at(0, 0);
}

export interface Selection {
  /** Restore this entry. */
  restore: boolean;
  /** A directory not restored itself but with something below it that may be. */
  descend: boolean;
}

export interface PatternOptions {
  include?: readonly string[];
  exclude?: readonly string[];
  iinclude?: readonly string[];
  iexclude?: readonly string[];
}

/**
 * The selection of restore (restic's): with includes, an entry is restored when a pattern
 * matches it (or a directory above it), and a directory is entered when something below it
 * may match; with excludes, an entry is restored unless a pattern matches it; with neither,
 * everything. Includes and excludes together are refused (as restic does).
 */
export function selector(o: PatternOptions): (path: string, isDir: boolean) => Selection {
  const inc = [...(o.include ?? []).map((t) => compile(t)), ...(o.iinclude ?? []).map((t) => compile(t, true))];
  const exc = [...(o.exclude ?? []).map((t) => compile(t)), ...(o.iexclude ?? []).map((t) => compile(t, true))];
  if (inc.length > 0 && exc.length > 0) throw new Error('include and exclude patterns exclude each other');
  if (inc.length > 0) {
    return (p, isDir) => {
      const names = p.split('/');
      const restore = inc.some((pat) => matches(pat, names));
      const descend = !restore && isDir && inc.some((pat) => childMayMatch(pat, names));
      return { restore, descend };
    };
  }
  if (exc.length > 0) {
    return (p) => {
      const names = p.split('/');
      const restore = !exc.some((pat) => matches(pat, names));
      return { restore, descend: false };
    };
  }
  return () => ({ restore: true, descend: false });
}
