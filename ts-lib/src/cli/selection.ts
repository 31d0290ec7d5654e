/**
 * `backup`'s selection flags (restic's names and meanings; backup/select.ts does the work):
 * their declarations, and turning their values and the positional paths into the roots to
 * walk and the walker's hook.
 */

import fs from 'node:fs';
import path from 'node:path';
import { buildSelect, parseSize, planTargets, readFilesFrom, SelectionError, stdinOnce } from '../backup/select';
import type { Select } from '../backup/walk';
import { UsageError, type CommandContext, type Options } from './command';

const group = 'exclude and include options';

export const SELECTION_OPTIONS: Options = {
  exclude: { type: 'string', short: 'e', value: 'PATTERN', multiple: true, group, help: "leave out what matches PATTERN (restic's syntax: *, ?, [...], ** across directories; matched against the absolute path; !PATTERN takes back an earlier match)" },
  iexclude: { type: 'string', value: 'PATTERN', multiple: true, group, help: 'as --exclude, ignoring case' },
  'exclude-file': { type: 'string', value: 'FILE', multiple: true, complete: 'file', group, help: 'read --exclude patterns from FILE: one a line, blank lines and # comments ignored, $VAR expanded ($$ for a $)' },
  'iexclude-file': { type: 'string', value: 'FILE', multiple: true, complete: 'file', group, help: 'as --exclude-file, ignoring case' },
  'exclude-if-present': { type: 'string', value: 'FILE[:HEADER]', multiple: true, group, help: 'leave out the contents of directories that contain FILE (starting with HEADER, if given), except FILE itself' },
  'exclude-caches': { type: 'boolean', default: false, group, help: 'leave out the contents of cache directories marked with a valid CACHEDIR.TAG (https://bford.info/cachedir/)' },
  'exclude-larger-than': { type: 'string', value: 'SIZE', group, help: 'leave out files larger than SIZE (bytes, or with k, m, g, t for KiB … TiB)' },
  'one-file-system': { type: 'boolean', short: 'x', default: false, group, help: 'do not cross file system boundaries: mount points below the paths are kept as empty directories' },
  'files-from': { type: 'string', value: 'FILE', multiple: true, complete: 'file', group, help: 'back up the paths FILE lists: one glob a line (trimmed; blank lines and # comments ignored); - reads standard input' },
  'files-from-verbatim': { type: 'string', value: 'FILE', multiple: true, complete: 'file', group, help: 'back up the paths FILE lists, one a line, taken literally; - reads standard input' },
  'files-from-raw': { type: 'string', value: 'FILE', multiple: true, complete: 'file', group, help: 'back up the paths FILE lists, each ending in a NUL byte (find -print0); - reads standard input' },
};

const list = (ctx: CommandContext, name: string): string[] => (ctx.values[name] as string[] | undefined) ?? [];

export interface Selection {
  /** The roots to walk. */
  roots: string[];
  select: Select | undefined;
  /** Named paths that do not exist (left out, with a warning: exit code 3). */
  missing: string[];
}

/**
 * The roots and the hook for the selection flags. Without `--files-from*`, the roots are the
 * paths as given. With them, the listed paths and the given ones are targets: the roots are
 * the directories holding them (select.ts: planTargets) and only the targets are kept below.
 */
export async function selection(ctx: CommandContext, paths: string[], warn: (m: string) => void): Promise<Selection> {
  const fromFiles = { patterns: list(ctx, 'files-from'), verbatim: list(ctx, 'files-from-verbatim'), raw: list(ctx, 'files-from-raw') };
  const withLists = fromFiles.patterns.length + fromFiles.verbatim.length + fromFiles.raw.length > 0;
  try {
    const stdin = stdinOnce();
    let roots = paths;
    let targets: string[] | undefined;
    const missing: string[] = [];
    if (withLists) {
      const all = [...(await readFilesFrom(fromFiles, warn, stdin)), ...paths.map((p) => path.resolve(p))];
      targets = [...new Set(all)].filter((t) => {
        if (exists(t)) return true;
        warn(`${t} does not exist, skipping`);
        missing.push(t);
        return false;
      });
      if (targets.length === 0) throw new UsageError('nothing to back up: the lists name no existing file');
      roots = planTargets(targets);
    }
    const size = ctx.values['exclude-larger-than'] as string | undefined;
    const select = await buildSelect(
      {
        exclude: list(ctx, 'exclude'),
        iexclude: list(ctx, 'iexclude'),
        excludeFile: list(ctx, 'exclude-file'),
        iexcludeFile: list(ctx, 'iexclude-file'),
        excludeIfPresent: list(ctx, 'exclude-if-present'),
        excludeCaches: ctx.values['exclude-caches'] === true,
        ...(size !== undefined ? { excludeLargerThan: parseSize(size) } : {}),
        oneFileSystem: ctx.values['one-file-system'] === true,
        ...(targets !== undefined && !(targets.length === 1 && roots[0] === targets[0]) ? { targets } : {}),
      },
      roots,
      warn,
    );
    return { roots, select, missing };
  } catch (e) {
    if (e instanceof SelectionError) throw new UsageError(e.message);
    throw e;
  }
}

/** lstat: a dangling symlink exists (it is backed up as a link). */
function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Whether any selection flag that needs files (not stdin) was given. */
export function selectionGiven(ctx: CommandContext): string | undefined {
  for (const [name, o] of Object.entries(SELECTION_OPTIONS)) {
    const v = ctx.values[name];
    if (o.type === 'boolean' ? v === true : v !== undefined && (!Array.isArray(v) || v.length > 0)) return name;
  }
  return undefined;
}
