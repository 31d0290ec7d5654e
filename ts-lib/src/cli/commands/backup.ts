/**
 * `shmpipe backup <paths…>`: one snapshot of the given files and directories (backup/backup.ts
 * does the work). Incremental against the latest snapshot of the same host and paths unless
 * `--parent ID` names one (or `--no-parent` says none). Unreadable files are listed (stderr,
 * or `{"type":"error"}` lines with --json), left out, and make the exit code 3; the snapshot is
 * still committed. With --json the last line is `{"type":"summary",…}` (README: the contract).
 *
 * `--every DURATION` keeps the agent running (a Kubernetes Deployment): one backup per
 * interval, each incremental against the previous; a failed run is reported (`{"type":
 * "run_failed"}` with --json) and the next one is tried on time. SIGTERM while idle is a clean
 * stop (exit 0); during a run it aborts that backup as without --every.
 *
 * What is backed up: the selection flags (../selection.ts), `--dry-run` (reads and writes
 * nothing), or one stream as one file (`--stdin`, `--stdin-from-command`: ../stdin.ts).
 */

import os from 'node:os';
import { runBackup, type BackupResult } from '../../backup/backup';
import { dryRunBackup } from '../../backup/dry-run';
import { formatBytes, summaryLines, type ProgressCounts } from '../../backup/progress';
import { pathText } from '../../backup/select';
import { rootNames } from '../../backup/walk';
import { UsageError, type Command, type CommandContext } from '../command';
import { interruptible } from '../interrupt';
import { mbps, progressFor, REPO_OPTIONS, withRepo } from '../repo';
import { selection, selectionGiven, SELECTION_OPTIONS, type Selection } from '../selection';
import { runStreamBackup, STDIN_OPTIONS, stdinMode } from '../stdin';
import { tuning, TUNING_OPTIONS } from '../tuning';

export const backup: Command = {
  name: 'backup',
  summary: 'back up files and directories into a new snapshot',
  args: '<path>...',
  description:
    'Incremental: a file whose size, mtime and inode match the parent snapshot (the latest one of this host and these paths, or --parent) is recorded without being read. ' +
    'Files that cannot be read are listed, left out, and make the exit code 3; the snapshot is still committed.',
  examples: ['shmpipe backup ~/docs /etc', 'shmpipe backup --tag nightly --host web-1 /srv', 'shmpipe backup --every 1h /data   # keep running: one backup an hour'],
  complete: 'file',
  options: {
    parent: { type: 'string', value: 'ID', help: 'compare against this snapshot (64 hex digits) instead of the latest one of this host and these paths' },
    'no-parent': { type: 'boolean', default: false, help: 'compare against no snapshot: read every file' },
    host: { type: 'string', short: 'H', value: 'NAME', help: "record this host name in the snapshot (default: this machine's host name)" },
    tag: { type: 'string', value: 'TAG', multiple: true, help: 'add a tag to the snapshot' },
    every: { type: 'string', value: 'DURATION', help: 'keep running and back up once per interval (e.g. 15m, 1h, 1d; at least 10s), each run incremental against the previous one; SIGTERM while idle exits 0' },
    force: { type: 'boolean', default: false, help: 'read every file again, also those the parent snapshot says are unchanged (same size, mtime, ctime and inode)' },
    'no-xattrs': { type: 'boolean', default: false, help: 'do not back up extended attributes (and POSIX ACLs)' },
    'dry-run': { type: 'boolean', short: 'n', default: false, help: 'write nothing: list what would be backed up (new, changed) and the totals, reading no file' },
    ...SELECTION_OPTIONS,
    ...STDIN_OPTIONS,
    ...TUNING_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const stream = stdinMode(ctx);
    const paths = stream === null ? ctx.positionals : [];
    const lists = ['files-from', 'files-from-verbatim', 'files-from-raw'].some((f) => (ctx.values[f] as string[] | undefined)?.length);
    if (stream === null && paths.length === 0 && !lists) throw new UsageError('name at least one path to back up (or --files-from FILE)');
    const parentFlag = ctx.values.parent as string | undefined;
    if (parentFlag !== undefined && !/^[0-9a-f]{64}$/.test(parentFlag)) throw new UsageError('--parent needs a snapshot id (64 hex digits; see shmpipe snapshots)');
    if (parentFlag !== undefined && ctx.values['no-parent'] === true) throw new UsageError('--parent and --no-parent exclude each other');
    const parent = ctx.values['no-parent'] === true ? null : parentFlag;
    const every = parseEvery(ctx.values.every as string | undefined);
    if (every !== null && parentFlag !== undefined) throw new UsageError('--every backs up against the previous snapshot; it does not take --parent');
    const dryRun = ctx.values['dry-run'] === true;
    const tune = tuning(ctx);
    if (dryRun && every !== null) throw new UsageError('--dry-run and --every exclude each other');
    if (stream !== null) {
      const flag = selectionGiven(ctx) ?? (dryRun ? 'dry-run' : stream === 'stdin' && every !== null ? 'every' : undefined);
      if (flag !== undefined) throw new UsageError(`--${flag} does not go with --${stream === 'stdin' ? 'stdin' : 'stdin-from-command'}`);
    }
    const warn = (m: string): void => ctx.err(`shmpipe backup: warning: ${m}`);
    // The lists are read, and exclude files parsed, once (before a first run of --every).
    const sel: Selection = stream === null ? await selection(ctx, paths, warn) : { roots: [], select: undefined, missing: [] };
    try {
      rootNames(sel.roots);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (dryRun) return dryRunCommand(ctx, sel, parent);
    const once = async (signal: AbortSignal): Promise<number> => {
      const progress = progressFor(ctx, 'backup');
      let last: ProgressCounts | null = null;
      const onProgress = (c: ProgressCounts): void => {
        last = c;
        progress.update(c);
      };
      const host = (ctx.values.host as string | undefined) ?? os.hostname();
      const tags = (ctx.values.tag as string[] | undefined) ?? [];
      const files = (): Promise<BackupResult> =>
        withRepo(ctx, ({ session, repo }) =>
          runBackup(session.client, repo, {
            paths: sel.roots,
            ...(sel.select !== undefined ? { select: sel.select } : {}),
            parent,
            host,
            tags,
            signal,
            onProgress,
            ...tune,
            force: ctx.values.force === true,
            ...(ctx.values['no-xattrs'] === true ? { xattrs: false } : {}),
            onWarning: (e) => {
              if (ctx.global.json) ctx.out(JSON.stringify({ type: 'warning', path: e.path, op: e.op, code: e.code ?? null, message: e.message }));
              else ctx.err(`shmpipe backup: warning: ${e.path}: ${e.message}`);
            },
            onUnreadable: (e) => {
              if (ctx.global.json) ctx.out(JSON.stringify({ type: 'error', path: e.path, op: e.op, code: e.code ?? null, message: e.message }));
              else ctx.err(`shmpipe backup: cannot read ${e.path}: ${e.message}`);
            },
          }),
        );
      const run = (): Promise<BackupResult> =>
        stream === null ? files() : runStreamBackup(ctx, stream, { host, tags, signal, onProgress, ...tune }).then((s) => ({ ...s, parent: null, unreadable: 0, warnings: 0 }));
      const r = await run().finally(() => last && progress.end(last)); // also ends a TTY bar's line before an error
      const k = r.commit.counts;
      // Damaged index or snapshot objects the backup went on without (the snapshot is whole).
      for (const w of r.commit.warnings ?? []) {
        if (ctx.global.json) ctx.out(JSON.stringify({ type: 'warning', path: null, op: 'repository', code: 'SHMPIPE_E_INTEGRITY', message: `skipped unreadable ${w}` }));
        else warn(`skipped unreadable ${w} (run 'shmpipe check', then 'shmpipe repair')`);
      }
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
            warnings: r.warnings,
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
      // A file left out, or one that changed while it was read: the snapshot is not all it should be.
      return r.unreadable > 0 || r.warnings > 0 || sel.missing.length > 0 ? 3 : 0;
    };
    return interruptible(ctx, 'shmpipe backup: interrupted; the backup was aborted, nothing was committed', async (signal) => {
      if (every === null) return once(signal);
      for (;;) {
        const started = Date.now();
        try {
          await once(signal);
        } catch (e) {
          if (signal.aborted) throw e;
          const next = new Date(started + every).toISOString();
          const message = (e as Error).message;
          if (ctx.global.json) ctx.out(JSON.stringify({ type: 'run_failed', message, next }));
          else ctx.err(`shmpipe backup: this run failed: ${message}; next run at ${next}`);
        }
        if (!(await idle(started + every - Date.now(), signal))) return 0;
      }
    });
  },
};

/** `--dry-run`: the entries a backup would store and what it would read; nothing written. */
async function dryRunCommand(ctx: CommandContext, sel: Selection, parent: string | null | undefined): Promise<number> {
  const r = await withRepo(ctx, ({ session, repo }) =>
    dryRunBackup(session.client, repo, {
      paths: sel.roots,
      parent,
      host: (ctx.values.host as string | undefined) ?? os.hostname(),
      ...(sel.select !== undefined ? { select: sel.select } : {}),
      onUnreadable: (e) => {
        if (ctx.global.json) ctx.out(JSON.stringify({ type: 'error', path: e.path, op: e.op, code: e.code ?? null, message: e.message }));
        else ctx.err(`shmpipe backup: cannot read ${e.path}: ${e.message}`);
      },
      onEntry: (e, change) => {
        const item = pathText(e.abs);
        if (ctx.global.json) ctx.out(JSON.stringify({ type: 'verbose_status', action: change, kind: e.kind, item, size: Number(e.size) }));
        else if (change !== 'unchanged') ctx.out(`would ${change === 'new' ? 'add' : 'update'} ${e.kind.padEnd(7)} ${item}`);
      },
    }),
  );
  if (ctx.global.json) {
    ctx.out(JSON.stringify({ type: 'summary', dry_run: true, ...r }));
  } else {
    if (r.parent !== null) ctx.out(`parent:     ${r.parent}`);
    ctx.out(`dry run: would store ${r.entries} entries: files ${r.files_new} new, ${r.files_changed} changed, ${r.files_unchanged} unchanged; ${r.dirs} dirs, ${r.others} others`);
    ctx.out(`would read ${formatBytes(r.bytes_to_read)}; nothing was written`);
  }
  return r.unreadable > 0 || sel.missing.length > 0 ? 3 : 0;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--every`: a whole number and a unit (s, m, h, d), at least 10 s; null when not given. */
function parseEvery(v: string | undefined): number | null {
  if (v === undefined) return null;
  const m = /^([1-9][0-9]{0,6})([smhd])$/.exec(v);
  const ms = m ? Number(m[1]) * UNITS[m[2]!]! : NaN;
  if (!(ms >= 10_000)) throw new UsageError(`--every needs an interval such as 15m, 1h or 1d (at least 10s), got '${v}'`);
  return ms;
}

/** Waits `ms` (from now); false if `signal` fired first (a stop request while idle). */
function idle(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', stop);
      resolve(ok);
    };
    const stop = (): void => done(false);
    const t = setTimeout(() => done(true), Math.max(0, ms));
    signal.addEventListener('abort', stop);
  });
}
