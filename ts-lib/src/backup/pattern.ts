/**
 * restic's filter patterns (its `internal/filter`, documented in restic's "Excluding files"),
 * for `backup --exclude` and friends (select.ts) and restore's `--include/--exclude`:
 *
 * - A pattern is cleaned like a path (`//`, `.`, `..` and a trailing `/` go away) and split
 *   into components. Each component is a glob of Go's `filepath.Match`: `*` any run of
 *   characters, `?` one character, `[a-z]`, `[^a-z]`, `\x` a literal `x` (never across `/`).
 * - `**` as a whole component matches any number of components (zero included).
 * - A pattern matches when its components match a contiguous run of the path's components:
 *   `foo` matches `/a/foo` and `/a/foo/b` (so everything below a matched directory), not
 *   `/a/foobar`. A leading `/` anchors it at the root: `/bin` matches `/bin/bash`, not
 *   `/usr/bin`.
 * - In a list, a pattern starting with `!` cancels the matches of the patterns before it
 *   (as in gitignore; a directory excluded stays excluded with everything below it).
 * - Case-insensitive lists (`--iexclude`) lower-case patterns and paths.
 *
 * Paths are `/`-separated text. Nothing here touches the file system except `expandGlob`
 * (`--files-from` lines, like Go's `filepath.Glob`).
 */

import { promises as fsp } from 'node:fs';
import path from 'node:path';

/** A pattern that cannot be parsed (a bad `[...]` class or a trailing `\`). */
export class PatternError extends Error {
  constructor(
    readonly pattern: string,
    why: string,
  ) {
    super(`invalid pattern ${JSON.stringify(pattern)}: ${why}`);
  }
}

/** One component of a pattern. */
type Part = { kind: 'root' } | { kind: 'any-depth' } | { kind: 'literal'; text: string } | { kind: 'glob'; re: RegExp };

export interface Pattern {
  /** As given (with its `!`). */
  readonly original: string;
  readonly negated: boolean;
  readonly parts: readonly Part[];
}

const STAR: Part = { kind: 'glob', re: /^.*$/su };

/** Go's `path.Clean`: one `/` between components, no `.`, `..` resolved, no trailing `/`. */
export function cleanPath(p: string): string {
  const n = path.posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/** Components of a cleaned path; an absolute one starts with the component `/`. */
export function splitPath(p: string): string[] {
  const parts = p.split('/');
  if (parts[0] === '') parts[0] = '/';
  if (parts.length === 2 && parts[1] === '') parts.pop(); // "/" itself
  return parts;
}

const regexLiteral = (c: string): string => `\\u{${c.codePointAt(0)!.toString(16)}}`;

/**
 * One component as a RegExp, with `filepath.Match`'s syntax and errors (a class that is empty,
 * unclosed or has a dangling `-`, a trailing `\`), or null when it has no special character.
 */
export function compileComponent(glob: string, original = glob): RegExp | null {
  if (!/[*?[\\]/.test(glob)) return null;
  const chars = [...glob];
  let re = '^';
  let i = 0;
  const bad = (why: string): never => {
    throw new PatternError(original, why);
  };
  /** A class character: `\x` is `x`; `-` and `]` must be escaped. */
  const classChar = (): string => {
    let c = chars[i];
    if (c === undefined) bad('unclosed [');
    if (c === '-' || c === ']') bad(`'${c}' must be escaped in a character class`);
    if (c === '\\') {
      i++;
      c = chars[i];
      if (c === undefined) bad('unclosed [');
    }
    i++;
    return c!;
  };
  while (i < chars.length) {
    const c = chars[i]!;
    if (c === '*') {
      re += '.*';
      i++;
    } else if (c === '?') {
      re += '.';
      i++;
    } else if (c === '\\') {
      if (i + 1 >= chars.length) bad('trailing \\');
      re += regexLiteral(chars[i + 1]!);
      i += 2;
    } else if (c === '[') {
      i++;
      let negated = false;
      if (chars[i] === '^') {
        negated = true;
        i++;
      }
      let ranges = '';
      let n = 0;
      for (;;) {
        if (chars[i] === ']' && n > 0) {
          i++;
          break;
        }
        const lo = classChar();
        let hi = lo;
        if (chars[i] === '-') {
          i++;
          hi = classChar();
        }
        n++;
        // A reversed range is valid and matches nothing (as in Go).
        if (lo.codePointAt(0)! <= hi.codePointAt(0)!) ranges += lo === hi ? regexLiteral(lo) : `${regexLiteral(lo)}-${regexLiteral(hi)}`;
      }
      re += ranges === '' ? (negated ? '[^]' : '[]') : `[${negated ? '^' : ''}${ranges}]`;
    } else {
      re += regexLiteral(c);
      i++;
    }
  }
  return new RegExp(re + '$', 'su');
}

/** Parses one pattern (`!` negates it); throws PatternError. `fold`: case-insensitive. */
export function parsePattern(pattern: string, fold = false): Pattern {
  let text = fold ? pattern.toLowerCase() : pattern;
  const negated = text.startsWith('!');
  if (negated) text = text.slice(1);
  if (text === '') throw new PatternError(pattern, 'empty');
  const parts = splitPath(cleanPath(text)).map((c, i): Part => {
    if (i === 0 && c === '/') return { kind: 'root' };
    if (c === '**') return { kind: 'any-depth' };
    const re = compileComponent(c, pattern);
    return re === null ? { kind: 'literal', text: c } : { kind: 'glob', re };
  });
  return { original: pattern, negated, parts };
}

function partMatches(p: Part, s: string): boolean {
  switch (p.kind) {
    case 'root':
      return s === '/';
    case 'literal':
      return p.text === s;
    case 'glob':
      return s !== '/' && p.re.test(s);
    case 'any-depth':
      return false; // expanded before matching
  }
}

/** The parts against the path components (see the module comment). */
function matchParts(parts: readonly Part[], strs: readonly string[]): boolean {
  const deep = parts.findIndex((p) => p.kind === 'any-depth');
  if (deep >= 0) {
    // `**` stands for k `*` components, k = 0, 1, …: as few as possible first.
    const before = parts.slice(0, deep);
    const after = parts.slice(deep + 1);
    for (let k = 0; k <= strs.length - parts.length + 1; k++) {
      if (matchParts([...before, ...Array<Part>(k).fill(STAR), ...after], strs)) return true;
    }
    return false;
  }
  if (parts.length === 0) return strs.length === 0;
  if (parts.length > strs.length) return false;
  const anchored = parts[0]!.kind === 'root';
  // A relative pattern never matches the root marker itself.
  const minOffset = !anchored && strs[0] === '/' ? 1 : 0;
  const maxOffset = anchored ? 0 : strs.length - parts.length;
  outer: for (let offset = maxOffset; offset >= minOffset; offset--) {
    for (let i = parts.length - 1; i >= 0; i--) if (!partMatches(parts[i]!, strs[offset + i]!)) continue outer;
    return true;
  }
  return false;
}

/** Whether something below `strs` could match (relative patterns: always). */
function childMayMatchParts(parts: readonly Part[], strs: readonly string[]): boolean {
  if (parts[0]?.kind !== 'root') return true;
  const deep = parts.findIndex((p) => p.kind === 'any-depth');
  const s = deep >= 0 && strs.length >= deep ? strs.slice(0, deep) : strs;
  const n = Math.min(s.length, parts.length);
  return matchParts(parts.slice(0, n), s);
}

/** `file` (a `/`-separated path) against one pattern, its `!` ignored. */
export function matchPattern(pattern: Pattern | string, file: string, fold = false): boolean {
  const p = typeof pattern === 'string' ? parsePattern(pattern, fold) : pattern;
  return matchParts(p.parts, splitPath(cleanPath(fold ? file.toLowerCase() : file)));
}

/**
 * An ordered list of patterns, as `--exclude`/`--include` lists are: a path matches when a
 * pattern matches it and no later `!` pattern does.
 */
export class PatternList {
  readonly patterns: readonly Pattern[];
  private readonly hasNegated: boolean;

  /** Empty strings are ignored; throws PatternError for the first bad pattern. */
  constructor(
    patterns: readonly string[],
    private readonly fold = false,
  ) {
    this.patterns = patterns.filter((p) => p !== '').map((p) => parsePattern(p, fold));
    this.hasNegated = this.patterns.some((p) => p.negated);
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** Whether `path` matches; `childMayMatch`: whether a path below it could (for includes). */
  test(file: string): { matched: boolean; childMayMatch: boolean } {
    if (this.patterns.length === 0) return { matched: false, childMayMatch: false };
    const strs = splitPath(cleanPath(this.fold ? file.toLowerCase() : file));
    let matched = false;
    let child = false;
    for (const pat of this.patterns) {
      const m = matchParts(pat.parts, strs);
      if (pat.negated) {
        matched &&= !m;
        child &&= !m;
      } else {
        matched ||= m;
        child ||= childMayMatchParts(pat.parts, strs);
        // Without `!` patterns nothing later can change the answer.
        if (matched && child && !this.hasNegated) break;
      }
    }
    return { matched, childMayMatch: child };
  }

  matches(file: string): boolean {
    return this.test(file).matched;
  }
}

/**
 * The existing paths a glob names (Go's `filepath.Glob`: `*`, `?`, `[...]` per component, no
 * `**`; sorted; unreadable directories are skipped). Relative globs stay relative to the cwd.
 */
export async function expandGlob(glob: string): Promise<string[]> {
  const parts = splitPath(cleanPath(glob));
  const res = parts.map((c, i) => (i === 0 && c === '/' ? null : compileComponent(c, glob)));
  let found: string[] = [parts[0] === '/' ? '/' : ''];
  for (const [i, c] of parts.entries()) {
    if (i === 0 && c === '/') continue;
    const re = res[i] ?? null;
    const next: string[] = [];
    for (const dir of found) {
      const join = (name: string): string => (dir === '' ? name : dir === '/' ? `/${name}` : `${dir}/${name}`);
      if (re === null) {
        // A literal component: unescaped names need no listing.
        next.push(join(c));
        continue;
      }
      let names: string[];
      try {
        names = await fsp.readdir(dir === '' ? '.' : dir);
      } catch {
        continue;
      }
      for (const name of names.sort()) if (re.test(name)) next.push(join(name));
    }
    found = next;
  }
  const exists = await Promise.all(found.map((f) => fsp.lstat(f === '' ? '.' : f).then(() => true, () => false)));
  return found.filter((f, i) => exists[i] && f !== '');
}
