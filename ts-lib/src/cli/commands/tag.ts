/**
 * `shmpipe tag [--add T] [--remove T] [--set T] [SNAPSHOT...]`: changes snapshots' tags as
 * restic's `tag` does — each changed snapshot is written under a new id and the old one is
 * deleted (the sidecar's `tag` job, under an exclusive lock). Without snapshot arguments, every
 * snapshot passing the filters. `--json`: one `{"old","new","changed","tags"}` line per snapshot.
 */

import { runJob, snapshots as listSnapshots } from '../../backup/ops';
import { UsageError, type Command } from '../command';
import { FILTER_OPTIONS, filterFrom, matchesFilter, pickSnapshot } from '../filter';
import { REPO_OPTIONS, withRepo } from '../repo';

const tags = (v: unknown): string[] => ((v as string[] | undefined) ?? []).flatMap((t) => t.split(',')).filter((t) => t !== '');

export const tag: Command = {
  name: 'tag',
  summary: 'add, remove or set the tags of snapshots',
  args: '[snapshot...]',
  description: 'A changed snapshot gets a new id (its content is the same; the old id no longer exists). --set replaces all tags; then --add and --remove apply. Without snapshots, every snapshot passing the filters is changed.',
  examples: ['shmpipe tag --add keep latest', 'shmpipe tag --host web-1 --remove tmp', 'shmpipe tag --set "" 4f3a9c01   # no tags'],
  options: {
    add: { type: 'string', value: 'TAG[,TAG]', multiple: true, help: 'add these tags' },
    remove: { type: 'string', value: 'TAG[,TAG]', multiple: true, help: 'remove these tags' },
    set: { type: 'string', value: 'TAG[,TAG]', multiple: true, help: "replace the tags with these ('' for none)" },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const set = ctx.values.set !== undefined ? tags(ctx.values.set) : null;
    const add = tags(ctx.values.add);
    const remove = tags(ctx.values.remove);
    if (set === null && add.length === 0 && remove.length === 0) throw new UsageError('say what to change: --add, --remove or --set');
    if (set !== null && (add.length > 0 || remove.length > 0)) throw new UsageError('--set replaces the tags; it does not go with --add or --remove');
    const filter = filterFrom(ctx);
    const results = await withRepo(ctx, async (r) => {
      const all = await listSnapshots(r.session.client, r.repo);
      const chosen = ctx.positionals.length > 0 ? [...new Set(ctx.positionals.map((a) => pickSnapshot(all, a, filter, r.where)))] : all.filter((s) => matchesFilter(s, filter));
      if (chosen.length === 0) return [];
      return runJob(r.session.client, r.repo, { job: 'tag', snapshots: chosen.map((s) => s.id), set, add, remove });
    });
    if (ctx.global.json) {
      for (const l of results) ctx.out(JSON.stringify(l));
      return 0;
    }
    const changed = results.filter((l) => l.changed === true);
    for (const l of changed) ctx.out(`snapshot ${String(l.old).slice(0, 8)} saved as ${String(l.new).slice(0, 8)} with tags [${(l.tags as string[]).join(', ')}]`);
    ctx.out(`modified ${changed.length} snapshot(s)${results.length > changed.length ? `, ${results.length - changed.length} already had these tags` : ''}`);
    return 0;
  },
};
