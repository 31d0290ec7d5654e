/** `shmpipe snapshots`: the repository's snapshots, oldest first (`--json`: the list as SNAPSHOTS returns it). */

import { formatBytes } from '../../backup/progress';
import { snapshots as listSnapshots } from '../../backup/ops';
import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

function when(timeNs: string): string {
  return new Date(Number(BigInt(timeNs) / 1_000_000n)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export const snapshots: Command = {
  name: 'snapshots',
  summary: 'list the snapshots in the repository',
  options: { ...REPO_OPTIONS },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const list = await withRepo(ctx, (r) => listSnapshots(r.session.client, r.repo));
    if (ctx.global.json) {
      ctx.out(JSON.stringify(list));
      return 0;
    }
    if (list.length === 0) {
      ctx.out('no snapshots');
      return 0;
    }
    ctx.out(`${'id'.padEnd(12)}  ${'time'.padEnd(20)}  ${'host'.padEnd(16)}  ${'entries'.padStart(8)}  ${'read'.padStart(10)}  paths`);
    for (const s of list) {
      ctx.out(`${s.id.slice(0, 12)}  ${when(s.time_ns).padEnd(20)}  ${s.host.slice(0, 16).padEnd(16)}  ${String(s.entries).padStart(8)}  ${formatBytes(s.counts.bytes_read).padStart(10)}  ${s.paths.join(' ')}`);
    }
    ctx.out(`${list.length} snapshot(s)`);
    return 0;
  },
};
