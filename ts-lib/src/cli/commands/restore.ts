/**
 * `shmpipe restore <snapshot|latest> <target>`: recreates a snapshot (or the selected paths of
 * it) under a target directory, bit-exact, with owners (as root), modes, times, symlinks, hard
 * links, special files and extended attributes (backup/restore.ts). restic's options and
 * meanings: `--target DIR` (or the second positional), `--include/--exclude/--iinclude/
 * --iexclude PATTERN`, `--overwrite always|if-changed|if-newer|never` (default if-changed;
 * restic's is always — see the README), `--delete`, `--verify`, `--dry-run`, `--sparse`, and
 * `--no-xattrs`. Entries that fail or are refused (a hostile or damaged repository) are listed
 * and make the exit code 3; nothing is ever written outside the target.
 */

import { runRestore } from '../../backup/restore';
import { formatBytes, type ProgressCounts } from '../../backup/progress';
import { OVERWRITE_MODES, type Overwrite } from '../../backup/restore-fs';
import { selector } from '../../backup/restore-select';
import { splitSnapshotArg } from '../../backup/subtree';
import { UsageError, type Command } from '../command';
import { interruptible } from '../interrupt';
import { FILTER_OPTIONS, filterFrom } from '../filter';
import { mbps, progressFor, REPO_OPTIONS, resolveSnapshot, withRepo } from '../repo';

/** Slots a private sidecar keeps for read streams during a restore: all but a few (SPEC §9). */
const RESTORE_READ_RESERVE = '40';

const list = (v: unknown): string[] => (v as string[] | undefined) ?? [];

export const restore: Command = {
  name: 'restore',
  summary: 'restore a snapshot into a directory',
  args: '<snapshot|latest>[:<subfolder>] [<target>]',
  description:
    'Recreates the files bit-exact with their owners (as root), modes, times, symlinks, hard links, FIFOs, sockets, devices (as root) and extended attributes. ' +
    'Every operation is relative to a directory restore opened without following symlinks: nothing is written outside the target, and a symlink planted in it is replaced, never followed. ' +
    'Directories stay 0700 until their contents are restored. Entries that fail or that a damaged or hostile repository should not contain are listed and make the exit code 3. ' +
    'SNAPSHOT:SUBFOLDER restores only what is below that directory of the snapshot, into the top of the target (restic\'s syntax).',
  examples: [
    'shmpipe restore latest /tmp/back',
    'shmpipe restore 4f3a9c01 --target /tmp/back --include /docs/report',
    'shmpipe restore latest /srv --overwrite if-newer --delete --dry-run -v',
    'shmpipe restore latest:/docs/reports /tmp/reports',
  ],
  complete: 'dir',
  options: {
    target: { type: 'string', short: 't', value: 'DIR', complete: 'dir', help: 'the directory to restore into (instead of the second argument)' },
    include: { type: 'string', value: 'PATTERN', multiple: true, help: "restore only what matches (restic's patterns: /data/sub anchored at the snapshot's top, *.log at any depth), with the directories above it" },
    exclude: { type: 'string', value: 'PATTERN', multiple: true, help: 'restore everything but what matches' },
    iinclude: { type: 'string', value: 'PATTERN', multiple: true, help: 'like --include, ignoring case' },
    iexclude: { type: 'string', value: 'PATTERN', multiple: true, help: 'like --exclude, ignoring case' },
    overwrite: {
      type: 'string',
      value: 'WHEN',
      default: 'if-changed',
      choices: OVERWRITE_MODES,
      help: 'what to do with what is already in the target: always replace it, if-changed (keep a file of the same type, size and mtime, setting its metadata), if-newer (replace when the snapshot is newer), never',
    },
    delete: { type: 'boolean', default: false, help: 'remove what the target has and the snapshot does not (within --include/--exclude); try it with --dry-run -v' },
    verify: { type: 'boolean', default: false, help: 'read every restored file back and compare it with what the repository delivered' },
    'dry-run': { type: 'boolean', default: false, help: 'say what would be done (with -v or --json, entry by entry), change nothing' },
    sparse: { type: 'boolean', default: false, help: 'leave runs of zeros as holes in every file (files that had holes at backup always get them)' },
    'no-xattrs': { type: 'boolean', default: false, help: 'do not restore extended attributes (and POSIX ACLs)' },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const flagTarget = ctx.values.target as string | undefined;
    const max = flagTarget === undefined ? 2 : 1;
    if (ctx.positionals.length === 0) throw new UsageError('name the snapshot to restore (an id, a prefix of one, or latest)');
    if (ctx.positionals.length > max) throw new UsageError(`unexpected argument '${ctx.positionals[max]}'`);
    const { snapshot: snapshotArg, subfolder } = splitSnapshotArg(ctx.positionals[0]!);
    const target = flagTarget ?? ctx.positionals[1];
    if (target === undefined || target === '') throw new UsageError('name the directory to restore into (<target> or --target DIR)');
    const overwrite = ctx.values.overwrite as string;
    if (!(OVERWRITE_MODES as readonly string[]).includes(overwrite)) throw new UsageError(`--overwrite takes always, if-changed, if-newer or never, got '${overwrite}'`);
    const patterns = { include: list(ctx.values.include), exclude: list(ctx.values.exclude), iinclude: list(ctx.values.iinclude), iexclude: list(ctx.values.iexclude) };
    try {
      selector(patterns);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const dryRun = ctx.values['dry-run'] === true;
    if (dryRun && ctx.values.verify === true) throw new UsageError('--dry-run and --verify exclude each other');
    const verbose = dryRun || ctx.global.verbose;
    return interruptible(ctx, 'shmpipe restore: interrupted; the files restored so far are complete, the rest were not restored', async (signal) => {
      const progress = progressFor(ctx, 'restore');
      let last: ProgressCounts | null = null;
      const r = await withRepo(
        ctx,
        async (rs) => {
          const res = await runRestore(rs.session.client, rs.repo, {
            snapshot: await resolveSnapshot(rs, snapshotArg, filterFrom(ctx)),
            subfolder,
            target,
            ...patterns,
            overwrite: overwrite as Overwrite,
            delete: ctx.values.delete === true,
            verify: ctx.values.verify === true,
            dryRun,
            sparse: ctx.values.sparse === true,
            xattrs: ctx.values['no-xattrs'] !== true,
            signal,
            onProgress: (c) => {
              last = c;
              progress.update(c);
            },
            onAction: verbose
              ? (p, action, size) => {
                  if (ctx.global.json) ctx.out(JSON.stringify({ type: 'verbose_status', action, item: p, size }));
                  else ctx.out(`${dryRun ? 'would have ' : ''}${action} ${p}`);
                }
              : undefined,
            onFailed: (p, e) => {
              const code = (e as { code?: string })?.code;
              const message = code === 'SHMPIPE_E_INTEGRITY' ? `its data in the repository is damaged (${code}; see shmpipe check --read-data): ${(e as Error).message}` : ((e as Error)?.message ?? String(e));
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
        ctx.out(
          JSON.stringify({
            type: 'summary',
            snapshot: r.snapshot,
            dry_run: dryRun,
            files: r.files,
            dirs: r.dirs,
            symlinks: r.symlinks,
            specials: r.specials,
            hardlinks: r.hardlinks,
            unchanged: r.unchanged,
            skipped: r.skipped,
            deleted: r.deleted,
            verified: r.verified,
            failed: r.failed,
            bytes: r.bytes,
            duration_ms: Math.round(r.durationMs),
            mbps: rate,
          }),
        );
      } else {
        ctx.out(`${dryRun ? 'would have restored' : 'restored'} snapshot ${r.snapshot} into ${target}`);
        const extra = [
          r.specials ? `${r.specials} special files` : '',
          r.hardlinks ? `${r.hardlinks} of the files as hard links` : '',
          r.unchanged ? `${r.unchanged} unchanged` : '',
          r.skipped ? `${r.skipped} kept as they were (--overwrite ${overwrite}, or devices when not root)` : '',
          r.deleted ? `${r.deleted} deleted` : '',
          r.verified ? `${r.verified} verified` : '',
        ].filter((x) => x !== '');
        ctx.out(`${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks${extra.length ? `, ${extra.join(', ')}` : ''}; ${formatBytes(r.bytes)} in ${(r.durationMs / 1000).toFixed(2)} s, ${formatBytes(r.durationMs > 0 ? Math.round(r.bytes / (r.durationMs / 1000)) : 0)}/s`);
        if (r.failed > 0) ctx.out(`failed: ${r.failed} (listed above)`);
      }
      return r.failed > 0 ? 3 : 0;
    });
  },
};
