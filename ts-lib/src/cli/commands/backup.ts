/**
 * `shmpipe backup <paths…>`: one snapshot of the given files and directories (backup/backup.ts
 * does the work). Incremental against the latest snapshot of the same host and paths unless
 * `--parent ID` names one (or `--no-parent` says none). Unreadable files are listed (stderr,
 * or `{"type":"error"}` lines with --json), left out, and make the exit code 3; the snapshot is
 * still committed. With --json the last line is `{"type":"summary",…}` (README: the contract).
 */

import os from 'node:os';
import { runBackup } from '../../backup/backup';
import { summaryLines, type ProgressCounts } from '../../backup/progress';
import { rootNames } from '../../backup/walk';
import { UsageError, type Command } from '../command';
import { interruptible } from '../interrupt';
import { mbps, progressFor, REPO_OPTIONS, REPO_USAGE, withRepo } from '../repo';

export const backup: Command = {
  name: 'backup',
  summary: 'back up files and directories into a new snapshot',
  usage: `shmpipe backup <path>... [--parent ID | --no-parent] [--host NAME] [--tag TAG]... ${REPO_USAGE}`,
  options: {
    ...REPO_OPTIONS,
    parent: { type: 'string' },
    'no-parent': { type: 'boolean', default: false },
    host: { type: 'string' },
    tag: { type: 'string', multiple: true },
  },
  async run(ctx) {
    const paths = ctx.positionals;
    if (paths.length === 0) throw new UsageError('name at least one path to back up');
    const parentFlag = ctx.values.parent as string | undefined;
    if (parentFlag !== undefined && !/^[0-9a-f]{64}$/.test(parentFlag)) throw new UsageError('--parent needs a snapshot id (64 hex digits; see shmpipe snapshots)');
    if (parentFlag !== undefined && ctx.values['no-parent'] === true) throw new UsageError('--parent and --no-parent exclude each other');
    const parent = ctx.values['no-parent'] === true ? null : parentFlag;
    try {
      rootNames(paths);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    return interruptible(ctx, 'shmpipe backup: interrupted; the backup was aborted, nothing was committed', async (signal) => {
      const progress = progressFor(ctx, 'backup');
      let last: ProgressCounts | null = null;
      const r = await withRepo(ctx, async ({ session, repo }) => {
        const res = await runBackup(session.client, repo, {
          paths,
          parent,
          host: (ctx.values.host as string | undefined) ?? os.hostname(),
          tags: (ctx.values.tag as string[] | undefined) ?? [],
          signal,
          onProgress: (c) => {
            last = c;
            progress.update(c);
          },
          onUnreadable: (e) => {
            if (ctx.global.json) ctx.out(JSON.stringify({ type: 'error', path: e.path, op: e.op, code: e.code ?? null, message: e.message }));
            else ctx.err(`shmpipe backup: cannot read ${e.path}: ${e.message}`);
          },
        });
        return res;
      }).finally(() => last && progress.end(last)); // also ends a TTY bar's line before an error
      const k = r.commit.counts;
      if (ctx.global.json) {
        ctx.out(
          JSON.stringify({
            type: 'summary',
            snapshot: r.commit.id,
            parent: r.parent,
            files_new: k.files_new,
            files_changed: k.files_changed,
            files_unchanged: k.files_unchanged,
            dirs: k.dirs,
            others: k.others,
            entries: r.commit.entries,
            unreadable: r.unreadable,
            bytes_read: r.bytesRead,
            // Stored in the repository by this backup, after dedup and compression (packs,
            // index, snapshot); bytes_added_plain: the new data before compression.
            bytes_added: k.bytes_added_packed,
            bytes_added_plain: k.bytes_added,
            blobs_added: k.blobs_added,
            packs_added: k.packs_added,
            duration_ms: Math.round(r.durationMs),
            mbps: mbps(r.bytesRead, r.durationMs),
          }),
        );
      } else {
        if (r.parent !== null) ctx.out(`parent:     ${r.parent}`);
        for (const l of summaryLines({ ...k, snapshot: r.commit.id, bytes_read: r.bytesRead, duration_s: r.durationMs / 1000, unreadable: r.unreadable })) ctx.out(l);
      }
      return r.unreadable > 0 ? 3 : 0;
    });
  },
};
