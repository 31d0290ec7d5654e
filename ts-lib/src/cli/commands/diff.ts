/**
 * `shmpipe diff SNAPSHOT1 SNAPSHOT2`: what changed between two snapshots, as restic's `diff`
 * shows it: `+` added, `-` removed, `T` type changed, `M` file content changed (`M?` when the
 * metadata says the file did not change: probable bitrot), `U` metadata changed (with
 * `--metadata`); then the counts and the blobs added and removed (the sidecar's `diff` job).
 * `--json`: restic's `{"message_type":"change","path","modifier"}` lines and a last
 * `{"message_type":"statistics",…}`.
 *
 * The first snapshot's entries are held in a map while the second is streamed past it.
 */

import { entries, runJob, type TreeEntry } from '../../backup/ops';
import { splitSnapshotArg, subtree } from '../../backup/subtree';
import { formatBytes } from '../../backup/progress';
import { UsageError, type Command } from '../command';
import { FILTER_OPTIONS, filterFrom, resolveSnapshotInfo } from '../filter';
import { displayPath } from '../nodes';
import { REPO_OPTIONS, withRepo } from '../repo';

interface Side {
  files: number;
  dirs: number;
  others: number;
  data_blobs: number;
  tree_blobs: number;
  bytes: number;
}

const side = (): Side => ({ files: 0, dirs: 0, others: 0, data_blobs: 0, tree_blobs: 0, bytes: 0 });

function count(s: Side, e: TreeEntry): void {
  if (e.kind === 'file') s.files++;
  else if (e.kind === 'dir') s.dirs++;
  else s.others++;
}

/** What restic compares for `U`: everything but the content. */
function sameMetadata(a: TreeEntry, b: TreeEntry): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtimeNs === b.mtimeNs && a.size === b.size && a.target === b.target && a.inode === b.inode;
}

/** The modifier of an entry in both snapshots ('' when nothing shown changed). */
export function modifier(a: TreeEntry, b: TreeEntry, metadata: boolean): string {
  let mod = '';
  if (a.kind !== b.kind) mod += 'T';
  if (a.kind === 'file' && b.kind === 'file' && a.content !== b.content) {
    mod += 'M';
    // Content changed, yet size, mtime and inode did not: the backup would not have read it
    // again, so the data changed underneath (restic: "probable bitrot").
    if (a.size === b.size && a.mtimeNs === b.mtimeNs && a.inode === b.inode && a.mode === b.mode) mod += '?';
  } else if (metadata && !sameMetadata(a, b)) {
    mod += 'U';
  }
  return mod;
}

export const diff: Command = {
  name: 'diff',
  summary: 'show the differences between two snapshots',
  args: '<snapshot1>[:<subfolder>] <snapshot2>[:<subfolder>]',
  description: 'Markers: + added, - removed, T type changed, M content changed (M? content changed while size and time did not: probable bitrot), U metadata changed (only with --metadata). Then the counts, and the data and tree blobs (and their plaintext bytes) that the second snapshot adds and no longer uses. SNAPSHOT:SUBFOLDER compares only what is below that directory (the blob counts stay those of the whole snapshots).',
  examples: ['shmpipe diff 5845b002 latest', 'shmpipe diff --metadata --json a1b2c3d4 e5f6a7b8'],
  options: {
    metadata: { type: 'boolean', default: false, help: 'also show entries whose metadata (mode, owner, times) changed' },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const [whole1, whole2, ...rest] = ctx.positionals;
    if (whole1 === undefined || whole2 === undefined || rest.length > 0) throw new UsageError('name two snapshots');
    const { snapshot: arg1, subfolder: sub1 } = splitSnapshotArg(whole1);
    const { snapshot: arg2, subfolder: sub2 } = splitSnapshotArg(whole2);
    const metadata = ctx.values.metadata === true;
    const filter = filterFrom(ctx);
    const changes: [string, string][] = [];
    const added = side();
    const removed = side();
    let changedFiles = 0;
    const { from, to, blobs } = await withRepo(ctx, async (r) => {
      const from = await resolveSnapshotInfo(r, arg1, filter);
      const to = await resolveSnapshotInfo(r, arg2, filter);
      const c = r.session.client;
      const before = new Map<string, TreeEntry>();
      for await (const e of subtree(await entries(c, r.repo, from.id), sub1)) before.set(e.path, e);
      for await (const b of subtree(await entries(c, r.repo, to.id), sub2)) {
        const a = before.get(b.path);
        const shown = displayPath(b.path) + (b.kind === 'dir' ? '/' : '');
        if (a === undefined) {
          changes.push([shown, '+']);
          count(added, b);
          continue;
        }
        before.delete(b.path);
        const mod = modifier(a, b, metadata);
        if (mod !== '') {
          changes.push([shown, mod]);
          changedFiles++;
        }
      }
      for (const a of before.values()) {
        changes.push([displayPath(a.path) + (a.kind === 'dir' ? '/' : ''), '-']);
        count(removed, a);
      }
      const [blobs] = await runJob(c, r.repo, { job: 'diff', from: from.id, to: to.id });
      return { from, to, blobs: blobs as Record<string, number> };
    });
    added.data_blobs = blobs.data_blobs_added ?? 0;
    added.tree_blobs = blobs.tree_blobs_added ?? 0;
    added.bytes = blobs.bytes_added ?? 0;
    removed.data_blobs = blobs.data_blobs_removed ?? 0;
    removed.tree_blobs = blobs.tree_blobs_removed ?? 0;
    removed.bytes = blobs.bytes_removed ?? 0;
    changes.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    if (ctx.global.json) {
      for (const [p, m] of changes) ctx.out(JSON.stringify({ message_type: 'change', path: p, modifier: m }));
      ctx.out(JSON.stringify({ message_type: 'statistics', source_snapshot: from.id, target_snapshot: to.id, changed_files: changedFiles, added, removed }));
      return 0;
    }
    ctx.out(`comparing snapshot ${from.id.slice(0, 8)} to ${to.id.slice(0, 8)}:`);
    ctx.out('');
    for (const [p, m] of changes) ctx.out(`${m.padEnd(5)}${p}`);
    ctx.out('');
    const n = (v: number): string => String(v).padStart(5);
    ctx.out(`Files:       ${n(added.files)} new, ${n(removed.files)} removed, ${n(changedFiles)} changed`);
    ctx.out(`Dirs:        ${n(added.dirs)} new, ${n(removed.dirs)} removed`);
    ctx.out(`Others:      ${n(added.others)} new, ${n(removed.others)} removed`);
    ctx.out(`Data Blobs:  ${n(added.data_blobs)} new, ${n(removed.data_blobs)} removed`);
    ctx.out(`Tree Blobs:  ${n(added.tree_blobs)} new, ${n(removed.tree_blobs)} removed`);
    ctx.out(`  Added:   ${formatBytes(added.bytes)}`);
    ctx.out(`  Removed: ${formatBytes(removed.bytes)}`);
    return 0;
  },
};
