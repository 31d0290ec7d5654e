/**
 * `shmpipe unlock [--remove-all]` (restic's `unlock`): removes stale repository locks — not
 * refreshed for 30 minutes, or left on this host by a process that no longer exists — and
 * locks that cannot be read (the sidecar's `unlock` job). Live locks stay unless
 * `--remove-all`. `--json`: one `{"removed": [...], "kept": [...]}` object (SPEC §7.3 jobs).
 */

import { runJob } from '../../backup/ops';
import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

interface LockLine {
  id: string;
  lock: { kind: string; host: string; pid: number; purpose: string } | null;
  error: string | null;
  age_s: number | null;
  staleness: string | null;
}

const describe = (l: LockLine): string =>
  l.lock === null
    ? `${l.id.slice(0, 8)} (unreadable: ${l.error ?? '?'})`
    : `${l.id.slice(0, 8)} ${l.lock.kind.toLowerCase()} lock by ${l.lock.host} pid ${l.lock.pid} (${l.lock.purpose}), refreshed ${l.age_s ?? '?'}s ago${l.staleness !== null && l.staleness !== 'live' ? `, ${l.staleness.replace('_', ' ')}` : ''}`;

export const unlock: Command = {
  name: 'unlock',
  summary: 'remove stale locks (all locks with --remove-all)',
  description:
    'A lock is stale when it was not refreshed for 30 minutes, or when it was taken on this host by a process that no longer exists. Locks that cannot be read are removed too. A live lock belongs to a running backup, prune or key change: it is kept, unless --remove-all (only when you know no other process uses the repository).',
  examples: ['shmpipe unlock', 'shmpipe unlock --remove-all   # after making sure nothing else runs'],
  options: {
    'remove-all': { type: 'boolean', default: false, help: 'remove every lock, live ones included' },
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const [report] = await withRepo(ctx, async (r) => runJob(r.session.client, r.repo, { job: 'unlock', remove_all: ctx.values['remove-all'] === true }));
    const removed = (report?.removed ?? []) as LockLine[];
    const kept = (report?.kept ?? []) as LockLine[];
    if (ctx.global.json) {
      ctx.out(JSON.stringify({ removed, kept }));
      return 0;
    }
    for (const l of removed) ctx.out(`removed ${describe(l)}`);
    for (const l of kept) ctx.out(`kept live ${describe(l)} (use --remove-all to remove it)`);
    ctx.out(`successfully removed ${removed.length} lock(s)${kept.length > 0 ? `, ${kept.length} live lock(s) kept` : ''}`);
    return 0;
  },
};
