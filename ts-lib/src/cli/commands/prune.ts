/**
 * `shmpipe prune [--dry-run] [--max-unused LIMIT] [--max-repack-size SIZE]`: restic's prune —
 * deletes data no snapshot uses and repacks packs whose unused share keeps the repository
 * above `--max-unused` (default 5 % of its size). Runs under the exclusive lock (backups wait
 * or fail with "locked"; `--dry-run` takes a shared one). `--json`: one line, restic's prune
 * statistics `{"message_type":"summary","blobs","bytes","packfiles",…}` (the sidecar's
 * `prune` job; REPOSITORY.md §Prune).
 */

import { runJob, type JobLine } from '../../backup/ops';
import { formatBytes } from '../../backup/progress';
import { UsageError, type Command, type CommandContext, type Options } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

export const PRUNE_OPTIONS: Options = {
  'max-unused': { type: 'string', value: 'LIMIT', default: '5%', group: 'prune options', help: "tolerate this much unused space: P% of the repository size, a SIZE (k, m, g, t) or 'unlimited' (never repack)" },
  'max-repack-size': { type: 'string', value: 'SIZE', group: 'prune options', help: 'repack at most this many bytes of packs (k, m, g, t)' },
};

const LIMIT = /^(unlimited|[0-9]+(\.[0-9]+)?%|[0-9]+[kKmMgGtT]?)$/;

/** The prune job's arguments from the options (checked here, again by the sidecar). */
export function pruneArgs(ctx: CommandContext, dryRun: boolean): Record<string, unknown> {
  const maxUnused = (ctx.values['max-unused'] as string | undefined) ?? '5%';
  if (!LIMIT.test(maxUnused)) throw new UsageError(`--max-unused takes P%, a size (500M) or unlimited, got '${maxUnused}'`);
  const pct = /^([0-9.]+)%$/.exec(maxUnused);
  if (pct && Number(pct[1]) >= 100) throw new UsageError(`--max-unused must be below 100%, got '${maxUnused}'`);
  const maxRepack = ctx.values['max-repack-size'] as string | undefined;
  if (maxRepack !== undefined && !/^[0-9]+[kKmMgGtT]?$/.test(maxRepack)) throw new UsageError(`--max-repack-size takes a size such as 2G, got '${maxRepack}'`);
  return { dry_run: dryRun, max_unused: maxUnused, ...(maxRepack !== undefined ? { max_repack_size: maxRepack } : {}) };
}

type Counts = Record<string, number>;

/** restic's prune report, from the summary line. */
export function printPrune(ctx: CommandContext, s: JobLine): void {
  const blobs = s.blobs as Counts;
  const bytes = s.bytes as Counts;
  const packs = s.packfiles as Counts;
  const row = (label: string, n: number, b: number): string => `${label.padEnd(14)}${String(n).padStart(10)} blobs / ${formatBytes(b)}`;
  if (s.dry_run === true) ctx.out('would have made the following changes:');
  ctx.out(row('to repack:', blobs.repack!, bytes.repack!));
  ctx.out(row('this removes:', blobs.repack_remove!, bytes.repack_remove!));
  ctx.out(row('to delete:', blobs.remove!, bytes.remove! + bytes.unreferenced!));
  ctx.out(row('total prune:', blobs.remove_total!, bytes.remove_total!));
  ctx.out(row('remaining:', blobs.remaining!, bytes.remaining!));
  const share = bytes.remaining! > 0 ? ((100 * bytes.remaining_unused!) / bytes.remaining!).toFixed(2) : '0.00';
  ctx.out(`unused size after prune: ${formatBytes(bytes.remaining_unused!)} (${share}% of remaining size)`);
  ctx.out('');
  ctx.out(`totally used packs: ${String(packs.used).padStart(8)}`);
  ctx.out(`partly used packs:  ${String(packs.partly_used).padStart(8)}`);
  ctx.out(`unused packs:       ${String(packs.unused).padStart(8)}`);
  ctx.out(`unreferenced packs: ${String(packs.unreferenced).padStart(8)}`);
  ctx.out('');
  ctx.out(`to keep:   ${String(packs.keep).padStart(8)} packs`);
  ctx.out(`to repack: ${String(packs.repack).padStart(8)} packs`);
  ctx.out(`to delete: ${String(packs.remove! + packs.unreferenced!).padStart(8)} packs`);
  if (s.dry_run !== true) ctx.out(`done: ${String(s.packs_written)} pack(s) written, ${String(s.packs_deleted)} deleted; index rewritten as ${String(s.index_written)} object(s)`);
}

export const prune: Command = {
  name: 'prune',
  summary: 'remove data no snapshot uses (after forget)',
  description:
    "Marks every blob the snapshots use, deletes packs that hold none, repacks packs with unused space until at most --max-unused of the repository is unused, and deletes packs a crashed backup or prune left in no index. Takes the exclusive lock: backups started meanwhile fail with 'locked'. Safe to interrupt at any point: the next prune finishes the job.",
  examples: ['shmpipe prune --dry-run', 'shmpipe prune --max-unused 0%   # repack every partly used pack', 'shmpipe prune --max-unused unlimited   # delete, never repack'],
  options: {
    'dry-run': { type: 'boolean', short: 'n', default: false, help: 'only print what would be done' },
    ...PRUNE_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const args = pruneArgs(ctx, ctx.values['dry-run'] === true);
    const lines = await withRepo(ctx, (r) => runJob(r.session.client, r.repo, { job: 'prune', ...args }));
    const summary = lines.find((l) => l.message_type === 'summary');
    if (summary === undefined) throw new Error('the prune job ended without its summary');
    if (ctx.global.json) ctx.out(JSON.stringify(summary));
    else printPrune(ctx, summary);
    return 0;
  },
};
