/**
 * `shmpipe check [--read-data]`: the repository's structure, and with --read-data every data
 * blob read, decrypted and verified. Exit 1 when it found damage (the report says what, and
 * which files of which snapshots are affected); `--json` prints the report itself.
 */

import { check as checkRepo } from '../../backup/ops';
import { formatBytes } from '../../backup/progress';
import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

export const check: Command = {
  name: 'check',
  summary: 'check the repository (--read-data: also verify every data blob)',
  description: 'Exit code 1 when it found damage: the report names the objects, and the files of which snapshots are affected.',
  options: {
    'read-data': { type: 'boolean', default: false, help: 'also read, decrypt and verify every data blob' },
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const readData = ctx.values['read-data'] === true;
    const report = await withRepo(ctx, (r) => checkRepo(r.session.client, r.repo, { readData }));
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
