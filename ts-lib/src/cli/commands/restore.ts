/**
 * `shmpipe restore <snapshot|latest> <target> [--include PATH]...`: recreates a snapshot (or
 * the included paths of it) under a target directory, bit-exact, with modes, mtimes and
 * symlinks (backup/restore.ts). Files that fail are listed and make the exit code 3.
 */

import { runRestore } from '../../backup/restore';
import { formatBytes, type ProgressCounts } from '../../backup/progress';
import type { Command } from '../command';
import { interruptible } from '../interrupt';
import { FILTER_OPTIONS, filterFrom } from '../filter';
import { mbps, progressFor, REPO_OPTIONS, resolveSnapshot, withRepo } from '../repo';
import { positionals } from '../store';

/** Slots a private sidecar keeps for read streams during a restore: all but a few (SPEC §9). */
const RESTORE_READ_RESERVE = '40';

export const restore: Command = {
  name: 'restore',
  summary: 'restore a snapshot into a directory',
  args: '<snapshot|latest> <target>',
  description: 'Recreates the files bit-exact with their modes, times and symlinks. Files that fail are listed and make the exit code 3.',
  examples: ['shmpipe restore latest /tmp/back', 'shmpipe restore 4f3a9c01 /tmp/back --include docs/report'],
  complete: 'dir',
  options: {
    include: { type: 'string', value: 'PATH', multiple: true, help: 'restore only this path of the snapshot (and what is below it)' },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const [snapshotArg, target] = positionals(ctx, ['<snapshot|latest>', '<target>']) as [string, string];
    return interruptible(ctx, 'shmpipe restore: interrupted; the files restored so far are complete, the rest were not restored', async (signal) => {
      const progress = progressFor(ctx, 'restore');
      let last: ProgressCounts | null = null;
      const r = await withRepo(
        ctx,
        async (rs) => {
            const res = await runRestore(rs.session.client, rs.repo, {
            snapshot: await resolveSnapshot(rs, snapshotArg, filterFrom(ctx)),
            target,
            include: (ctx.values.include as string[] | undefined) ?? [],
            signal,
            onProgress: (c) => {
              last = c;
              progress.update(c);
            },
            onFailed: (p, e) => {
              const code = (e as { code?: string })?.code;
              const message = code === 'SHMPIPE_E_INTEGRITY' ? `its data in the repository is damaged (${code}; see shmpipe check --read-data)` : ((e as Error)?.message ?? String(e));
              if (ctx.global.json) ctx.out(JSON.stringify({ type: 'error', path: p, code: code ?? null, message }));
              else ctx.err(`shmpipe restore: cannot restore ${p}: ${message}`);
            },
          });
          return res;
        },
        { sidecarEnv: { SHMPIPE_READ_RESERVE: RESTORE_READ_RESERVE } },
      ).finally(() => last && progress.end(last)); // also ends a TTY bar's line before an error
      const rate = mbps(r.bytes, r.durationMs);
      if (ctx.global.json) {
        ctx.out(JSON.stringify({ type: 'summary', snapshot: r.snapshot, files: r.files, dirs: r.dirs, symlinks: r.symlinks, skipped: r.skipped, failed: r.failed, bytes: r.bytes, duration_ms: Math.round(r.durationMs), mbps: rate }));
      } else {
        ctx.out(`restored snapshot ${r.snapshot} into ${target}`);
        ctx.out(`${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks${r.skipped ? `, ${r.skipped} special files skipped` : ''}; ${formatBytes(r.bytes)} in ${(r.durationMs / 1000).toFixed(2)} s, ${formatBytes(r.durationMs > 0 ? Math.round(r.bytes / (r.durationMs / 1000)) : 0)}/s`);
        if (r.failed > 0) ctx.out(`failed: ${r.failed} (listed above)`);
      }
      return r.failed > 0 ? 3 : 0;
    });
  },
};
