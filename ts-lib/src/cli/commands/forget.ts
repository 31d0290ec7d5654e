/**
 * `shmpipe forget [policy] [--prune] [SNAPSHOT...]`: restic's forget. Snapshots passing the
 * filters (`--host`, `--tag`, `--path`) are grouped (`--group-by`, default host,paths) and each
 * group keeps what the policy says — `--keep-last/-hourly/-daily/-weekly/-monthly/-yearly N`
 * (`unlimited` for all), `--keep-within[-hourly|-daily|…] 1y2m3d4h`, `--keep-tag` — with the
 * reasons restic gives; the rest are removed (their data stays until `prune`; `--prune` runs
 * it under the same lock). Snapshot arguments remove exactly those. `--json`: restic's
 * forget output — one line, an array of `{"tags","host","paths","keep","remove","reasons"}` —
 * and with `--prune` a second line, prune's summary (prune.ts).
 */

import type { SnapshotInfo } from '../../backup/ops';
import { runJob, snapshots as listSnapshots, type JobLine } from '../../backup/ops';
import { UsageError, type Command, type CommandContext, type Options } from '../command';
import { FILTER_OPTIONS, filterFrom, pickSnapshot } from '../filter';
import { REPO_OPTIONS, withRepo } from '../repo';
import { PRUNE_OPTIONS, printPrune, pruneArgs } from './prune';
import { snapshotJson } from './snapshots';

const COUNTS = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
const WITHIN = ['', '-hourly', '-daily', '-weekly', '-monthly', '-yearly'] as const;
const group = 'policy';

const unit = { last: '', hourly: 'hour', daily: 'day', weekly: 'week', monthly: 'month', yearly: 'year' } as const;
const policyOptions: Options = {
  ...Object.fromEntries(
    COUNTS.map((c) => [
      `keep-${c}`,
      { type: 'string', value: 'N', group, help: c === 'last' ? "keep the N newest snapshots ('unlimited': all)" : `keep the newest snapshot of each of the N newest ${unit[c]}s that have one ('unlimited': all)` },
    ]),
  ),
  ...Object.fromEntries(
    COUNTS.map((c) => [
      c === 'last' ? 'keep-within' : `keep-within-${c}`,
      { type: 'string', value: 'DURATION', group, help: c === 'last' ? 'keep every snapshot newer than the newest minus DURATION (1y2m3d4h: years, months, days, hours)' : `keep the newest snapshot of each ${unit[c]} within DURATION of the newest snapshot` },
    ]),
  ),
  'keep-tag': { type: 'string', value: 'TAG[,TAG]', multiple: true, group, help: 'keep snapshots with all of these tags (repeat: any of the lists)' },
  'group-by': { type: 'string', value: 'FIELDS', default: 'host,paths', group, help: "apply the policy to each group of snapshots with the same host, paths and/or tags ('' for one group)" },
};

function count(ctx: CommandContext, flag: string): number {
  const v = ctx.values[flag] as string | undefined;
  if (v === undefined) return 0;
  if (v === 'unlimited') return -1;
  if (!/^[0-9]{1,9}$/.test(v)) throw new UsageError(`--${flag} takes a number or 'unlimited', got '${v}'`);
  return Number(v);
}

function duration(ctx: CommandContext, flag: string): string | undefined {
  const v = ctx.values[flag] as string | undefined;
  if (v === undefined) return undefined;
  if (!/^([0-9]+[ymdh])+$/.test(v)) throw new UsageError(`--${flag} takes a duration such as 1y2m3d4h, got '${v}'`);
  return v;
}

/** restic's ForgetGroup, from a job line (snapshots as `snapshots --json` prints them). */
function resticGroup(g: JobLine): object {
  const key = g.group_key as { hostname: string | null; paths: string[] | null; tags: string[] | null };
  const snaps = g.keep as SnapshotInfo[];
  const byId = new Map([...snaps, ...(g.remove as SnapshotInfo[])].map((s) => [s.id, s]));
  return {
    tags: key.tags,
    host: key.hostname ?? '',
    paths: key.paths,
    keep: snaps.map(snapshotJson),
    remove: (g.remove as SnapshotInfo[]).length > 0 ? (g.remove as SnapshotInfo[]).map(snapshotJson) : null,
    reasons: (g.reasons as { snapshot: string; matches: string[]; counters: object }[]).map((r) => ({ snapshot: snapshotJson(byId.get(r.snapshot)!), matches: r.matches, counters: r.counters })),
  };
}

function when(timeNs: string): string {
  return new Date(Number(BigInt(timeNs) / 1_000_000n)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export const forget: Command = {
  name: 'forget',
  summary: 'remove snapshots by policy or by id (--prune: and their data)',
  args: '[snapshot...]',
  description:
    "Each group of snapshots (same host and paths by default) keeps the snapshots the policy names; the others are removed. Removing a snapshot deletes only the snapshot: run prune (or give --prune) to delete the data no snapshot uses any more. The counts are restic's: --keep-daily 7 keeps the newest snapshot of each of the 7 newest days that have one, and a policy with counts left keeps the oldest snapshot too. Days, weeks (ISO, from Monday), months and years are UTC. Without a policy and without snapshot arguments nothing is removed.",
  examples: ['shmpipe forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --prune', 'shmpipe forget --host web-1 --keep-last 3 --dry-run', 'shmpipe forget 4f3a9c01   # remove one snapshot'],
  options: {
    ...policyOptions,
    'dry-run': { type: 'boolean', short: 'n', default: false, help: 'only print what would be removed' },
    prune: { type: 'boolean', default: false, help: 'then prune (under the same lock)' },
    ...PRUNE_OPTIONS,
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const dryRun = ctx.values['dry-run'] === true;
    const policy: Record<string, unknown> = {};
    for (const c of COUNTS) {
      const n = count(ctx, `keep-${c}`);
      if (n !== 0) policy[`keep_${c}`] = n;
    }
    for (const w of WITHIN) {
      const d = duration(ctx, `keep-within${w}`);
      if (d !== undefined) policy[`keep_within${w.replace('-', '_')}`] = d;
    }
    const keepTags = ((ctx.values['keep-tag'] as string[] | undefined) ?? []).map((t) => t.split(',').filter((x) => x !== ''));
    if (keepTags.length > 0) policy.keep_tags = keepTags;
    const groupBy = (ctx.values['group-by'] as string | undefined) ?? 'host,paths';
    for (const f of groupBy.split(',').filter((x) => x.trim() !== '')) if (!['host', 'paths', 'tags'].includes(f.trim())) throw new UsageError(`--group-by takes host, paths and tags, comma-separated; got '${f}'`);
    if (ctx.positionals.length > 0 && Object.keys(policy).length > 0) throw new UsageError('give snapshots to remove or a policy, not both');
    const prune = ctx.values.prune === true;
    const pruneRequest = prune ? pruneArgs(ctx, dryRun) : {};
    const filter = filterFrom(ctx);
    const lines = await withRepo(ctx, async (r) => {
      let ids: string[] = [];
      if (ctx.positionals.length > 0) {
        const all = await listSnapshots(r.session.client, r.repo);
        ids = [...new Set(ctx.positionals.map((a) => pickSnapshot(all, a, filter, r.where).id))];
      }
      return runJob(r.session.client, r.repo, {
        job: 'forget',
        hosts: filter.hosts,
        tags: filter.tags,
        paths: filter.paths,
        group_by: groupBy,
        ...policy,
        snapshots: ids,
        dry_run: dryRun,
        prune,
        ...pruneRequest,
      });
    });
    const groups = lines.filter((l) => l.group_key !== undefined);
    const summary = lines.find((l) => l.message_type === 'summary');
    if (ctx.global.json) {
      ctx.out(JSON.stringify(groups.map(resticGroup)));
      if (summary !== undefined) ctx.out(JSON.stringify(summary));
      return 0;
    }
    if (ctx.positionals.length === 0 && Object.keys(policy).length === 0) ctx.out('no policy was specified, no snapshots will be removed');
    let removed = 0;
    for (const g of groups) {
      const key = g.group_key as { hostname: string | null; paths: string[] | null; tags: string[] | null };
      const label = [key.hostname !== null ? `host [${key.hostname}]` : null, key.paths !== null ? `paths [${key.paths.join(', ')}]` : null, key.tags !== null ? `tags [${key.tags.join(', ')}]` : null].filter((x) => x !== null);
      if (label.length > 0) ctx.out(`snapshots for (${label.join(', ')}):`);
      const reasons = new Map((g.reasons as { snapshot: string; matches: string[] }[]).map((r) => [r.snapshot, r.matches.join(', ')]));
      const table = (rows: SnapshotInfo[], withReasons: boolean): void => {
        for (const s of rows) ctx.out(`${s.id.slice(0, 12)}  ${when(s.time_ns).padEnd(20)}  ${s.host.slice(0, 16).padEnd(16)}  ${s.tags.join(',').slice(0, 12).padEnd(12)}  ${withReasons ? (reasons.get(s.id) ?? '').padEnd(32) + '  ' : ''}${s.paths.join(' ')}`);
      };
      const keep = g.keep as SnapshotInfo[];
      const remove = g.remove as SnapshotInfo[];
      if (keep.length > 0) {
        ctx.out(`keep ${keep.length} snapshot(s):`);
        table(keep, true);
      }
      if (remove.length > 0) {
        ctx.out(`${dryRun ? 'would remove' : 'remove'} ${remove.length} snapshot(s):`);
        table(remove, false);
      }
      removed += remove.length;
      ctx.out('');
    }
    ctx.out(dryRun ? `would remove ${removed} snapshot(s)` : `removed ${removed} snapshot(s)`);
    if (summary !== undefined) {
      ctx.out('');
      printPrune(ctx, summary);
    }
    return 0;
  },
};
