/**
 * `shmpipe copy --from-repo URL [SNAPSHOT...]`: copies snapshots (all, those named, or those
 * passing the filters) from another repository into this one, as restic's `copy` does: data is
 * read, verified, re-chunked and deduplicated by the destination (backup/copy.ts), so the
 * repositories may have different passwords and chunker parameters. Snapshots already in the
 * destination (same time, host, paths and tags) are skipped. The source runs in a private
 * sidecar of its own; its password comes from `--from-password-file` or SHMPIPE_FROM_PASSWORD.
 * `--json`: one `{"type":"copied"|"skipped","source","snapshot"}` line per snapshot, then a
 * summary.
 */

import { copySnapshot, sameSnapshot, type ContentMap } from '../../backup/copy';
import { snapshots as listSnapshots } from '../../backup/ops';
import { formatBytes } from '../../backup/progress';
import { FILTER_OPTIONS, filterFrom, matchesFilter, pickSnapshot } from '../filter';
import { interruptible } from '../interrupt';
import { openRepo, REPO_OPTIONS, withRepo } from '../repo';
import { UsageError, type Command } from '../command';
import { tuning, TUNING_OPTIONS } from '../tuning';

const group = 'source repository';

export const copy: Command = {
  name: 'copy',
  summary: 'copy snapshots from another repository into this one',
  args: '[snapshot...]',
  description:
    'Data is re-chunked and deduplicated by this repository, so the two may have different passwords and chunker parameters. Snapshots already here (same time, host, paths and tags) are skipped, so copy can be re-run to catch up. The copies keep the originals\' time, host, paths and tags, under new ids.',
  examples: ['SHMPIPE_FROM_PASSWORD=… shmpipe copy --from-repo /mnt/old-repo --repo s3://bucket/backups', 'shmpipe copy --from-repo file:///srv/repo --from-password-file pw.txt --host web-1 latest'],
  options: {
    'from-repo': { type: 'string', value: 'URL', env: 'SHMPIPE_FROM_REPO', complete: 'dir', group, help: 'the repository to copy from: file:///dir, s3://bucket/prefix or a directory' },
    'from-password-file': { type: 'string', value: 'FILE', complete: 'file', group, help: 'read the source repository password from FILE (default: SHMPIPE_FROM_PASSWORD)' },
    ...FILTER_OPTIONS,
    compression: TUNING_OPTIONS.compression!,
    'pack-size': TUNING_OPTIONS['pack-size']!,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const from = ctx.values['from-repo'] as string | undefined;
    if (from === undefined || from === '') throw new UsageError('name the repository to copy from: --from-repo URL (or SHMPIPE_FROM_REPO)');
    const tune = tuning(ctx);
    const filter = filterFrom(ctx);
    return interruptible(ctx, 'shmpipe copy: interrupted; the snapshots copied so far are complete, the one in progress was not committed', (signal) =>
      withRepo(ctx, async (dst) => {
        const src = await openRepo(ctx, { other: { repo: from, passwordFile: ctx.values['from-password-file'] as string | undefined, passwordEnv: 'SHMPIPE_FROM_PASSWORD' } });
        try {
          const all = await listSnapshots(src.session.client, src.repo);
          const chosen = ctx.positionals.length > 0 ? [...new Set(ctx.positionals.map((a) => pickSnapshot(all, a, filter, src.where)))] : all.filter((s) => matchesFilter(s, filter));
          chosen.sort((a, b) => all.indexOf(a) - all.indexOf(b));
          const existing = await listSnapshots(dst.session.client, dst.repo);
          const copiedContent: ContentMap = new Map();
          let copied = 0;
          let skipped = 0;
          let bytes = 0;
          for (const s of chosen) {
            const there = existing.find((d) => sameSnapshot(d, s));
            if (there !== undefined) {
              skipped++;
              if (ctx.global.json) ctx.out(JSON.stringify({ type: 'skipped', source: s.id, snapshot: there.id }));
              else ctx.out(`skipping snapshot ${s.id.slice(0, 8)}: already in ${dst.where} as ${there.id.slice(0, 8)}`);
              continue;
            }
            const commit = await copySnapshot({ client: src.session.client, repo: src.repo }, { client: dst.session.client, repo: dst.repo }, s, copiedContent, {
              ...tune,
              signal,
              onBytes: (n) => {
                bytes += n;
              },
            });
            copied++;
            if (ctx.global.json) ctx.out(JSON.stringify({ type: 'copied', source: s.id, snapshot: commit.id, bytes_added: commit.counts.bytes_added_packed }));
            else ctx.out(`snapshot ${s.id.slice(0, 8)} of [${s.paths.join(' ')}] at ${new Date(Number(BigInt(s.time_ns) / 1_000_000n)).toISOString()} copied as ${commit.id.slice(0, 8)} (${formatBytes(commit.counts.bytes_added_packed)} added)`);
          }
          if (ctx.global.json) ctx.out(JSON.stringify({ type: 'summary', copied, skipped, bytes_read: bytes }));
          else ctx.out(`copied ${copied} snapshot(s), skipped ${skipped}; ${formatBytes(bytes)} of file data read`);
          return 0;
        } finally {
          await src.close();
        }
      }),
    );
  },
};
