/**
 * Choosing snapshots, as restic does, for every command that takes one: `--host` (any of),
 * `--tag` (any of the flags; one flag's comma-separated tags all), `--path` (the snapshot has
 * every one of them), and snapshot arguments — an id, a unique prefix of one (4+ hex digits),
 * or `latest`, the newest snapshot that passes the filters.
 */

import path from 'node:path';
import { snapshots as listSnapshots, type SnapshotInfo } from '../backup/ops';
import { CommandError, UsageError, type CommandContext, type Options } from './command';
import type { RepoSession } from './repo';

const group = 'snapshot filters';

export const FILTER_OPTIONS: Options = {
  host: { type: 'string', short: 'H', value: 'HOST', multiple: true, group, help: 'only snapshots of this host (repeat for any of several)' },
  tag: { type: 'string', value: 'TAG[,TAG]', multiple: true, group, help: 'only snapshots with these tags (TAG,TAG: all of them; repeat for any of several lists)' },
  path: { type: 'string', value: 'PATH', multiple: true, complete: 'dir', group, help: 'only snapshots of this path (absolute, as backed up; repeat: snapshots with all of them)' },
};

export interface SnapshotFilter {
  hosts: string[];
  /** Any of these lists; each list: all of its tags. */
  tags: string[][];
  paths: string[];
}

export function filterFrom(ctx: CommandContext): SnapshotFilter {
  const list = (n: string): string[] => (ctx.values[n] as string[] | undefined) ?? [];
  return {
    hosts: list('host'),
    tags: list('tag').map((t) => t.split(',').filter((x) => x !== '')),
    paths: list('path').map((p) => path.resolve(p)),
  };
}

export const NO_FILTER: SnapshotFilter = { hosts: [], tags: [], paths: [] };

export function isEmptyFilter(f: SnapshotFilter): boolean {
  return f.hosts.length === 0 && f.tags.length === 0 && f.paths.length === 0;
}

export function matchesFilter(s: SnapshotInfo, f: SnapshotFilter): boolean {
  if (f.hosts.length > 0 && !f.hosts.includes(s.host)) return false;
  if (f.tags.length > 0 && !f.tags.some((all) => all.every((t) => s.tags.includes(t)))) return false;
  if (f.paths.length > 0 && !f.paths.every((p) => s.paths.includes(p))) return false;
  return true;
}

export function describeFilter(f: SnapshotFilter): string {
  const parts = [
    ...(f.hosts.length ? [`host ${f.hosts.join(' or ')}`] : []),
    ...(f.tags.length ? [`tags ${f.tags.map((t) => t.join('+')).join(' or ')}`] : []),
    ...(f.paths.length ? [`paths ${f.paths.join(', ')}`] : []),
  ];
  return parts.length ? ` matching ${parts.join(', ')}` : '';
}

/**
 * One snapshot by argument (id, prefix, `latest`), among `list` (oldest first, as SNAPSHOTS
 * returns them). `latest` honours the filter; an id or prefix must also pass it.
 */
export function pickSnapshot(list: readonly SnapshotInfo[], arg: string, f: SnapshotFilter, where: string): SnapshotInfo {
  const passing = list.filter((s) => matchesFilter(s, f));
  if (arg === 'latest') {
    const s = passing[passing.length - 1];
    if (s === undefined) throw new CommandError(`no snapshot${describeFilter(f)} in ${where}`);
    return s;
  }
  if (!/^[0-9a-f]{4,64}$/.test(arg)) throw new UsageError(`'${arg}' is not a snapshot: give an id (or a prefix of at least 4 hex digits) or 'latest'`);
  const found = passing.filter((s) => s.id.startsWith(arg));
  if (found.length === 1) return found[0]!;
  if (found.length > 1) throw new CommandError(`snapshot prefix ${arg} is ambiguous (${found.length} snapshots)`);
  throw new CommandError(`no snapshot ${arg}${describeFilter(f)} in ${where}`);
}

/** The snapshot an argument names in the open repository (see pickSnapshot). */
export async function resolveSnapshotInfo(r: RepoSession, arg: string, f: SnapshotFilter): Promise<SnapshotInfo> {
  return pickSnapshot(await listSnapshots(r.session.client, r.repo), arg, f, r.where);
}
