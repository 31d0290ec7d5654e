/**
 * `shmpipe stats`: the repository in numbers — its objects and bytes by kind (the first key
 * segment: packs, index, snapshots, locks, config; from the store's LIST), its snapshots, and
 * what the backups' own counts say about dedup and compression:
 * - `bytes_read`: Σ bytes the backups read from files (unchanged files are not read again);
 * - `bytes_new`: Σ plaintext of blobs that dedup did not find; dedup ratio = read / new;
 * - `bytes_stored`: Σ bytes the backups wrote; compression ratio = new / stored (incl. the
 *   packs' headers, index and snapshots, so slightly pessimistic).
 */

import { snapshots as listSnapshots } from '../../backup/ops';
import { formatBytes } from '../../backup/progress';
import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

const ratio = (a: number, b: number): number | null => (b > 0 ? Math.round((a / b) * 100) / 100 : null);

export const stats: Command = {
  name: 'stats',
  summary: 'repository statistics: objects and bytes by kind, snapshots, dedup and compression',
  options: { ...REPO_OPTIONS },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
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
