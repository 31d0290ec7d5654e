/**
 * `shmpipe repair index` / `shmpipe repair snapshots [--forget] [--dry-run]` (restic's
 * `repair`), the sidecar's `repair` job, under an exclusive lock. `index` rebuilds the index
 * from the packs' own headers (packs an interrupted backup left unindexed become usable,
 * unreadable index objects are replaced). `snapshots` writes a copy of every snapshot whose
 * data is lost without the lost entries, tagged `repaired`; the original stays unless
 * `--forget`, which also removes snapshot objects that cannot be read. Run `repair index`
 * first. `--json`: `index` prints one object, `snapshots` one object per affected snapshot.
 */

import { runJob } from '../../backup/ops';
import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

interface IndexReport {
  packs: number;
  blobs: number;
  packs_added: number;
  index_written: number;
  index_removed: number;
  index_unreadable: string[];
  packs_unreadable: string[];
}

interface SnapshotLine {
  snapshot: string;
  new: string | null;
  unreadable: string | null;
  dropped: string[];
  lost_tree_blobs: number;
  removed: boolean;
}

export const repair: Command = {
  name: 'repair',
  summary: 'rebuild the index from the packs, or drop lost data from snapshots',
  args: 'index | snapshots',
  description:
    "repair index reads every pack's header and writes a new index (replacing every old index object, readable or not). repair snapshots needs a correct index (run repair index first): each snapshot that references lost data is saved again without the files and directories whose data is gone, tagged 'repaired'. The original is kept unless --forget, which also removes snapshots that cannot be read at all. Data that is lost stays lost: back up again if the files still exist.",
  examples: ['shmpipe repair index', 'shmpipe repair snapshots --dry-run', 'shmpipe repair snapshots --forget'],
  complete: ['index', 'snapshots'],
  options: {
    forget: { type: 'boolean', default: false, help: 'snapshots: remove the original of each repaired snapshot, and unreadable snapshots' },
    'dry-run': { type: 'boolean', short: 'n', default: false, help: 'snapshots: only print what would be done' },
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const [what, ...rest] = ctx.positionals;
    if (rest.length > 0) throw new UsageError(`unexpected argument '${rest[0]}'`);
    if (what !== 'index' && what !== 'snapshots') throw new UsageError(what === undefined ? 'say what to repair: index or snapshots' : `cannot repair '${what}' (index, snapshots)`);
    const forget = ctx.values.forget === true;
    const dryRun = ctx.values['dry-run'] === true;
    if (what === 'index' && (forget || dryRun)) throw new UsageError('--forget and --dry-run are for repair snapshots');
    const request = what === 'index' ? { what } : { what, forget, dry_run: dryRun };
    const lines = await withRepo(ctx, async (r) => runJob(r.session.client, r.repo, { job: 'repair', ...request }));
    if (ctx.global.json) {
      for (const l of lines) ctx.out(JSON.stringify(l));
      return 0;
    }
    if (what === 'index') {
      const r = lines[0] as unknown as IndexReport;
      for (const u of r.index_unreadable) ctx.out(`replaced unreadable index object ${u}`);
      for (const u of r.packs_unreadable) ctx.err(`shmpipe repair: warning: pack header unreadable, pack not indexed: ${u}`);
      ctx.out(`indexed ${r.packs} pack(s), ${r.blobs} blob(s)${r.packs_added > 0 ? ` (${r.packs_added} pack(s) were in no index)` : ''}; wrote ${r.index_written} index object(s), removed ${r.index_removed}`);
      return r.packs_unreadable.length > 0 ? 3 : 0;
    }
    const snaps = lines as unknown as SnapshotLine[];
    for (const s of snaps) {
      const id = s.snapshot.slice(0, 8);
      if (s.unreadable !== null) {
        ctx.out(`snapshot ${id} cannot be read (${s.unreadable})${s.removed ? ': removed' : forget && dryRun ? ': would be removed' : ': kept (use --forget to remove it)'}`);
        continue;
      }
      for (const p of s.dropped) ctx.out(`  ${id}: dropped ${p} (data lost)`);
      if (s.lost_tree_blobs > 0) ctx.out(`  ${id}: ${s.lost_tree_blobs} tree blob(s) lost with their entries`);
      if (s.new !== null) ctx.out(`snapshot ${id} saved as ${s.new.slice(0, 8)} (tagged repaired)${s.removed ? ', original removed' : ''}`);
      else ctx.out(`snapshot ${id} would be repaired`);
    }
    if (snaps.length === 0) ctx.out('no snapshot needs repair');
    return 0;
  },
};
