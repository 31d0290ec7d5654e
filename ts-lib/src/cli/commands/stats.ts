/**
 * `shmpipe stats`: the repository in numbers — its objects and bytes by kind (the first key
 * segment: packs, index, snapshots, locks, config; from the store's LIST), its snapshots, and
 * what the backups' own counts say about dedup and compression:
 * - `bytes_read`: Σ bytes the backups read from files (unchanged files are not read again);
 * - `bytes_new`: Σ plaintext of blobs that dedup did not find; dedup ratio = read / new;
 * - `bytes_stored`: Σ bytes the backups wrote; compression ratio = new / stored (incl. the
 *   packs' headers, index and snapshots, so slightly pessimistic).
 *
 * `--mode restore-size|files-by-contents|raw-data|blobs-per-file [SNAPSHOT...]`: restic's
 * counting modes over the snapshots named (or passing the filters), by the sidecar's `stats`
 * job; `--json` prints restic's fields (`total_size`, `total_file_count`, …). Without --mode
 * the overview above stays the default (restic's default is restore-size): it answers what
 * users of this command asked first, how big the repository is and how well it dedups.
 */

import { runJob, snapshots as listSnapshots } from '../../backup/ops';
import { formatBytes } from '../../backup/progress';
import type { Command, CommandContext } from '../command';
import { FILTER_OPTIONS, filterFrom, matchesFilter, pickSnapshot } from '../filter';
import { REPO_OPTIONS, withRepo } from '../repo';

const MODES = ['restore-size', 'files-by-contents', 'raw-data', 'blobs-per-file'] as const;

/** `--mode`: the `stats` job over the chosen snapshots, printed as restic does. */
async function modeStats(ctx: CommandContext, mode: string): Promise<number> {
  const filter = filterFrom(ctx);
  const doc = await withRepo(ctx, async (r) => {
    const all = await listSnapshots(r.session.client, r.repo);
    const chosen = ctx.positionals.length > 0 ? [...new Set(ctx.positionals.map((a) => pickSnapshot(all, a, filter, r.where)))] : all.filter((s) => matchesFilter(s, filter));
    const [line] = await runJob(r.session.client, r.repo, { job: 'stats', mode, snapshots: chosen.map((s) => s.id) });
    return line as Record<string, number>;
  });
  if (ctx.global.json) {
    ctx.out(JSON.stringify(doc));
    return 0;
  }
  ctx.out(`Stats in ${mode} mode:`);
  ctx.out(`     Snapshots processed:  ${doc.snapshots_count}`);
  if (doc.total_blob_count !== undefined) ctx.out(`        Total Blob Count:  ${doc.total_blob_count}`);
  if (doc.total_file_count !== undefined) ctx.out(`        Total File Count:  ${doc.total_file_count}`);
  if (doc.total_uncompressed_size !== undefined) ctx.out(` Total Uncompressed Size:  ${formatBytes(doc.total_uncompressed_size)}`);
  ctx.out(`              Total Size:  ${formatBytes(doc.total_size ?? 0)}`);
  if (doc.compression_ratio !== undefined) ctx.out(`       Compression Ratio:  ${doc.compression_ratio.toFixed(2)}x`);
  return 0;
}

const ratio = (a: number, b: number): number | null => (b > 0 ? Math.round((a / b) * 100) / 100 : null);

export const stats: Command = {
  name: 'stats',
  summary: 'repository statistics: objects and bytes by kind, dedup and compression; --mode: restic\'s counts over snapshots',
  args: '[snapshot...]',
  options: {
    mode: { type: 'string', value: 'MODE', choices: MODES, help: "restic's counting over the snapshots named (or all passing the filters): restore-size (what a restore writes), files-by-contents (files unique by content), raw-data (the blobs, stored and plain), blobs-per-file" },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    if (ctx.values.mode !== undefined) return modeStats(ctx, ctx.values.mode as string);
    if (ctx.positionals.length > 0 || ctx.values.host || ctx.values.tag || ctx.values.path) return modeStats(ctx, 'restore-size');
    const doc = await withRepo(ctx, async (r) => {
      const c = r.session.client;
      const kinds: Record<string, { objects: number; bytes: number }> = {};
      for await (const o of c.list('')) {
        const kind = o.key.split('/')[0]!;
        const k = (kinds[kind] ??= { objects: 0, bytes: 0 });
        k.objects++;
        k.bytes += o.size;
      }
      const snaps = await listSnapshots(c, r.repo);
      const sum = (f: (s: (typeof snaps)[number]) => number): number => snaps.reduce((a, s) => a + f(s), 0);
      const read = sum((s) => s.counts.bytes_read);
      const added = sum((s) => s.counts.bytes_added);
      const stored = sum((s) => s.counts.bytes_added_packed);
      return {
        repository: r.where,
        snapshots: snaps.length,
        objects: Object.values(kinds).reduce((a, k) => a + k.objects, 0),
        bytes: Object.values(kinds).reduce((a, k) => a + k.bytes, 0),
        by_kind: kinds,
        bytes_read: read,
        bytes_new: added,
        bytes_stored: stored,
        dedup_ratio: ratio(read, added),
        compression_ratio: ratio(added, stored),
      };
    });
    if (ctx.global.json) {
      ctx.out(JSON.stringify(doc));
      return 0;
    }
    ctx.out(`repository ${doc.repository}: ${doc.snapshots} snapshot(s), ${doc.objects} objects, ${formatBytes(doc.bytes)}`);
    for (const [kind, k] of Object.entries(doc.by_kind).sort()) ctx.out(`  ${kind.padEnd(10)} ${String(k.objects).padStart(8)} objects  ${formatBytes(k.bytes).padStart(10)}`);
    ctx.out(`backups read ${formatBytes(doc.bytes_read)}, of which ${formatBytes(doc.bytes_new)} was new data, stored as ${formatBytes(doc.bytes_stored)}`);
    ctx.out(`dedup ratio ${doc.dedup_ratio ?? '-'}, compression ratio ${doc.compression_ratio ?? '-'}`);
    return 0;
  },
};
