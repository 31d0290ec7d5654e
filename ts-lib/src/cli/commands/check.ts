/**
 * `shmpipe check [--read-data]`: the repository's structure, and with --read-data every data
 * blob read, decrypted and verified. Exit 1 when it found damage (the report says what, and
 * which files of which snapshots are affected); `--json` prints the report itself.
 */

import { check as checkRepo, type CheckSubset } from '../../backup/ops';
import { parseSize, SelectionError } from '../../backup/select';
import { formatBytes } from '../../backup/progress';
import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

/** restic's --read-data-subset: `n/t`, `P%` (decimals allowed), or a size. */
export function parseSubset(s: string): CheckSubset {
  const group = /^([0-9]+)\/([0-9]+)$/.exec(s);
  if (group) {
    const n = Number(group[1]);
    const t = Number(group[2]);
    if (n < 1 || t < 1 || n > t || t > 1_000_000) throw new UsageError(`--read-data-subset n/t needs 1 ≤ n ≤ t ≤ 1000000, got ${s}`);
    return { group: [n, t] };
  }
  const pct = /^([0-9]+(?:\.[0-9]+)?)%$/.exec(s);
  if (pct) {
    const ppm = Math.round(Number(pct[1]) * 10_000);
    if (ppm < 1 || ppm > 1_000_000) throw new UsageError(`--read-data-subset P% needs 0 < P ≤ 100, got ${s}`);
    return { ppm };
  }
  try {
    const bytes = parseSize(s);
    if (bytes > 0) return { bytes };
  } catch (e) {
    if (!(e instanceof SelectionError)) throw e;
  }
  throw new UsageError(`--read-data-subset takes n/t, P% or a size such as 500M, got '${s}'`);
}

export const check: Command = {
  name: 'check',
  summary: 'check the repository (--read-data: also verify every data blob)',
  description: 'Exit code 1 when it found damage: the report names the objects, and the files of which snapshots are affected.',
  options: {
    'read-data': { type: 'boolean', default: false, help: 'also read, decrypt and verify every data blob' },
    'read-data-subset': {
      type: 'string',
      value: 'SUBSET',
      help: 'read and verify the blobs of some packs only: n/t (group n of t by pack id; 1/t … t/t cover every pack once), P% (a random share) or SIZE (random packs up to SIZE, with k, m, g, t)',
    },
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const subsetArg = ctx.values['read-data-subset'] as string | undefined;
    const subset = subsetArg !== undefined ? parseSubset(subsetArg) : undefined;
    if (subset !== undefined && ctx.values['read-data'] === true) throw new UsageError('--read-data reads every pack; --read-data-subset some: give one');
    const readData = ctx.values['read-data'] === true || subset !== undefined;
    const report = await withRepo(ctx, (r) => checkRepo(r.session.client, r.repo, { readData, ...(subset !== undefined ? { subset } : {}) }));
    if (ctx.global.json) {
      ctx.out(JSON.stringify(report));
      return report.ok ? 0 : 1;
    }
    for (const e of report.errors) ctx.out(`error: ${e.object}: ${e.message}`);
    for (const i of report.infos) ctx.out(`info:  ${i.object}: ${i.message}`);
    for (const a of report.affected_files) ctx.out(`affected: snapshot ${a.snapshot.slice(0, 12)} ${a.path}: ${a.reason}`);
    if (report.truncated) ctx.out('(lists cut at 1000 items)');
    const data = readData ? `, ${report.blobs_verified} blobs verified (${formatBytes(report.bytes_read)} read)` : '';
    ctx.out(`${report.ok ? 'no errors' : `${report.error_count ?? report.errors.length} error(s)`}: ${report.snapshots} snapshots, ${report.entries} entries, ${report.packs} packs, ${report.blobs} blobs${data}`);
    return report.ok ? 0 : 1;
  },
};
