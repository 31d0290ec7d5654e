/**
 * `shmpipe snapshots [ID...]`: the repository's snapshots, oldest first, as restic lists them:
 * filtered (`--host`, `--tag`, `--path`), `--latest N` per host and paths (or per `--group-by`
 * group), grouped with `--group-by host,paths,tags`. `--json`: the list (SNAPSHOTS' fields
 * plus `short_id` and an RFC 3339 `time`), or with `--group-by` a list of
 * `{"group_key":{"hostname","paths","tags"},"snapshots":[…]}` as restic's.
 */

import { formatBytes } from '../../backup/progress';
import { snapshots as listSnapshots, type SnapshotInfo } from '../../backup/ops';
import { UsageError, type Command } from '../command';
import { FILTER_OPTIONS, filterFrom, matchesFilter, pickSnapshot } from '../filter';
import { rfc3339 } from '../nodes';
import { REPO_OPTIONS, withRepo } from '../repo';

function when(timeNs: string): string {
  return new Date(Number(BigInt(timeNs) / 1_000_000n)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

const GROUP_FIELDS = ['host', 'paths', 'tags'] as const;
type GroupField = (typeof GROUP_FIELDS)[number];

function parseGroupBy(v: string | undefined): GroupField[] {
  if (v === undefined || v === '') return [];
  const fields = v.split(',').map((f) => f.trim());
  for (const f of fields) if (!(GROUP_FIELDS as readonly string[]).includes(f)) throw new UsageError(`--group-by takes host, paths and tags, comma-separated; got '${f}'`);
  return fields as GroupField[];
}

interface Group {
  key: { hostname: string | null; paths: string[] | null; tags: string[] | null };
  snapshots: SnapshotInfo[];
}

function groupOf(list: SnapshotInfo[], by: GroupField[]): Group[] {
  const groups = new Map<string, Group>();
  for (const s of list) {
    const key = {
      hostname: by.includes('host') ? s.host : null,
      paths: by.includes('paths') ? [...s.paths].sort() : null,
      tags: by.includes('tags') ? [...s.tags].sort() : null,
    };
    const k = JSON.stringify(key);
    if (!groups.has(k)) groups.set(k, { key, snapshots: [] });
    groups.get(k)!.snapshots.push(s);
  }
  return [...groups.values()];
}

export function snapshotJson(s: SnapshotInfo): object {
  return { ...s, short_id: s.id.slice(0, 8), time: rfc3339(s.time_ns) };
}

export const snapshots: Command = {
  name: 'snapshots',
  summary: 'list the snapshots in the repository',
  args: '[ID...]',
  description: 'Oldest first. IDs (or unique prefixes, or latest) limit the list to those snapshots.',
  examples: ['shmpipe snapshots --host web-1 --latest 3', 'shmpipe snapshots --group-by host,paths --json'],
  options: {
    latest: { type: 'string', value: 'N', help: 'only the newest N snapshots of each host and paths (of each group with --group-by)' },
    'group-by': { type: 'string', value: 'FIELDS', help: "group by host, paths and/or tags, comma-separated ('' for no groups)" },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const latestFlag = ctx.values.latest as string | undefined;
    if (latestFlag !== undefined && !/^[1-9][0-9]*$/.test(latestFlag)) throw new UsageError(`--latest needs a positive number, got '${latestFlag}'`);
    const by = parseGroupBy(ctx.values['group-by'] as string | undefined);
    const filter = filterFrom(ctx);
    const { list, where } = await withRepo(ctx, async (r) => ({ list: await listSnapshots(r.session.client, r.repo), where: r.where }));
    let chosen = ctx.positionals.length > 0 ? [...new Set(ctx.positionals.map((a) => pickSnapshot(list, a, filter, where)))].sort((a, b) => list.indexOf(a) - list.indexOf(b)) : list.filter((s) => matchesFilter(s, filter));
    const groups = groupOf(chosen, by);
    if (latestFlag !== undefined) {
      const n = Number(latestFlag);
      // Per group; without --group-by, per host and paths (restic's default for --latest).
      const per = by.length > 0 ? by : (['host', 'paths'] as GroupField[]);
      const keep = new Set(groupOf(chosen, per).flatMap((g) => g.snapshots.slice(-n)));
      chosen = chosen.filter((s) => keep.has(s));
      for (const g of groups) g.snapshots = g.snapshots.filter((s) => keep.has(s));
    }
    if (ctx.global.json) {
      ctx.out(JSON.stringify(by.length > 0 ? groups.map((g) => ({ group_key: g.key, snapshots: g.snapshots.map(snapshotJson) })) : chosen.map(snapshotJson)));
      return 0;
    }
    const table = (rows: SnapshotInfo[]): void => {
      ctx.out(`${'id'.padEnd(12)}  ${'time'.padEnd(20)}  ${'host'.padEnd(16)}  ${'tags'.padEnd(12)}  ${'entries'.padStart(8)}  ${'read'.padStart(10)}  paths`);
      for (const s of rows) {
        ctx.out(`${s.id.slice(0, 12)}  ${when(s.time_ns).padEnd(20)}  ${s.host.slice(0, 16).padEnd(16)}  ${s.tags.join(',').slice(0, 12).padEnd(12)}  ${String(s.entries).padStart(8)}  ${formatBytes(s.counts.bytes_read).padStart(10)}  ${s.paths.join(' ')}`);
      }
      ctx.out(`${rows.length} snapshot(s)`);
    };
    if (chosen.length === 0) {
      ctx.out('no snapshots');
      return 0;
    }
    if (by.length === 0) {
      table(chosen);
      return 0;
    }
    for (const [i, g] of groups.entries()) {
      if (i > 0) ctx.out('');
      const k = g.key;
      const label = [k.hostname !== null ? `host [${k.hostname}]` : null, k.paths !== null ? `paths [${k.paths.join(', ')}]` : null, k.tags !== null ? `tags [${k.tags.join(', ')}]` : null].filter((x) => x !== null);
      ctx.out(`snapshots for (${label.join(', ')}):`);
      table(g.snapshots);
    }
    return 0;
  },
};
