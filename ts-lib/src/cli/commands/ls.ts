/**
 * `shmpipe ls SNAPSHOT [DIR...]`: a snapshot's entries, as restic lists them: everything, or
 * the named directories and what is directly in them (`--recursive`: everything below them).
 * `--long`: mode, owner, size and time. `--json`: the snapshot first, then one node per line
 * (restic's `message_type` "snapshot" and "node" lines).
 */

import { entries } from '../../backup/ops';
import { splitSnapshotArg, subtree } from '../../backup/subtree';
import { UsageError, type Command } from '../command';
import { FILTER_OPTIONS, filterFrom, resolveSnapshotInfo } from '../filter';
import { displayPath, longLine, nodeJson, rfc3339, snapshotPathArg } from '../nodes';
import { REPO_OPTIONS, withRepo } from '../repo';
import { snapshotJson } from './snapshots';

/** Whether `p` is one of `dirs`, directly in one, or (recursive) anywhere below one. */
export function underDirs(p: string, dirs: readonly string[], recursive: boolean): boolean {
  if (dirs.length === 0) return true;
  for (const d of dirs) {
    if (d === '' ? recursive || !p.includes('/') : p === d) return true;
    if (d !== '' && p.startsWith(`${d}/`) && (recursive || !p.slice(d.length + 1).includes('/'))) return true;
  }
  return false;
}

export const ls: Command = {
  name: 'ls',
  summary: 'list the files and directories in a snapshot',
  args: '<snapshot|latest>[:<subfolder>] [dir...]',
  description: 'Paths are shown as the snapshot holds them: /NAME/... where NAME is the last component of a backed-up path. Without directories, everything is listed.',
  examples: ['shmpipe ls latest', 'shmpipe ls latest /docs --long', 'shmpipe ls 4f3a9c01 /etc --recursive --json'],
  options: {
    long: { type: 'boolean', short: 'l', default: false, help: 'show mode, owner, size and modification time' },
    recursive: { type: 'boolean', default: false, help: 'list everything below the named directories, not only what is directly in them' },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const [whole, ...dirArgs] = ctx.positionals;
    if (whole === undefined) throw new UsageError('name a snapshot (an id, a prefix of one, or latest)');
    const { snapshot: snapshotArg, subfolder } = splitSnapshotArg(whole);
    const dirs = dirArgs.map(snapshotPathArg);
    const recursive = ctx.values.recursive === true;
    const long = ctx.values.long === true;
    await withRepo(ctx, async (r) => {
      const s = await resolveSnapshotInfo(r, snapshotArg, filterFrom(ctx));
      if (ctx.global.json) ctx.out(JSON.stringify({ ...snapshotJson(s), struct_type: 'snapshot', message_type: 'snapshot' }));
      else ctx.out(`snapshot ${s.id.slice(0, 8)} of [${s.paths.join(' ')}] at ${rfc3339(s.time_ns)}:`);
      for await (const e of subtree(await entries(r.session.client, r.repo, s.id), subfolder)) {
        if (!underDirs(e.path, dirs, recursive)) continue;
        if (ctx.global.json) ctx.out(JSON.stringify(nodeJson(e)));
        else ctx.out(long ? longLine(e) : displayPath(e.path));
      }
    });
    return 0;
  },
};
