/**
 * `shmpipe find PATTERN...`: entries whose path matches a pattern (restic's patterns,
 * pattern.ts, against `/NAME/...` paths: `*.go` matches any name, `/docs/*.txt` is anchored), in
 * every snapshot passing the filters or those named by `--snapshot`, newest snapshot first
 * (`--reverse`: oldest first). `--oldest`/`--newest` bound the entries' modification times.
 * `--json`: one document, restic's `[{"matches":[node…],"hits":N,"snapshot":ID}…]`.
 */

import { PatternList, PatternError } from '../../backup/pattern';
import { entries, snapshots as listSnapshots } from '../../backup/ops';
import { UsageError, type Command } from '../command';
import { FILTER_OPTIONS, filterFrom, matchesFilter, pickSnapshot } from '../filter';
import { displayPath, longLine, nodeJson, shortTime } from '../nodes';
import { REPO_OPTIONS, withRepo } from '../repo';

/** restic's time formats (local time unless a zone is given), and ISO 8601. */
export function parseTime(s: string): number {
  const m = /^(\d{4})-(\d\d)-(\d\d)(?: (\d\d):(\d\d)(?::(\d\d))?)?$/.exec(s) ?? /^(\d\d)\.(\d\d)\.(\d{4})(?: (\d\d):(\d\d)(?::(\d\d))?)?$/.exec(s);
  if (m) {
    const european = s.includes('.');
    const [y, mo, d] = european ? [m[3], m[2], m[1]] : [m[1], m[2], m[3]];
    const t = new Date(Number(y), Number(mo) - 1, Number(d), Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)).getTime();
    if (!Number.isNaN(t)) return t;
  }
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new UsageError(`cannot read the time '${s}': give e.g. 2024-01-31, '2024-01-31 14:05' or 2024-01-31T14:05:00Z`);
  return t;
}

export const find: Command = {
  name: 'find',
  summary: 'find files and directories in snapshots by pattern',
  args: '<pattern>...',
  description: "Patterns are restic's (as for --exclude) matched against the paths ls shows; any pattern matching selects an entry.",
  examples: ["shmpipe find '*.conf'", "shmpipe find --host web-1 --newest 2024-01-31 '/etc/**/*.pem'", "shmpipe find -i --json 'readme*'"],
  options: {
    snapshot: { type: 'string', short: 's', value: 'ID', multiple: true, help: 'search only this snapshot (repeatable; an id, prefix or latest)' },
    oldest: { type: 'string', short: 'O', value: 'TIME', help: 'only entries modified at or after TIME' },
    newest: { type: 'string', short: 'N', value: 'TIME', help: 'only entries modified at or before TIME' },
    'ignore-case': { type: 'boolean', short: 'i', default: false, help: 'ignore case in patterns and paths' },
    reverse: { type: 'boolean', short: 'R', default: false, help: 'oldest snapshot first (default: newest first)' },
    long: { type: 'boolean', short: 'l', default: false, help: 'show mode, owner, size and modification time' },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    if (ctx.positionals.length === 0) throw new UsageError('name at least one pattern');
    let patterns: PatternList;
    try {
      patterns = new PatternList(ctx.positionals, ctx.values['ignore-case'] === true);
    } catch (e) {
      if (e instanceof PatternError) throw new UsageError(e.message);
      throw e;
    }
    const oldest = ctx.values.oldest !== undefined ? BigInt(parseTime(ctx.values.oldest as string)) * 1_000_000n : null;
    const newest = ctx.values.newest !== undefined ? BigInt(parseTime(ctx.values.newest as string)) * 1_000_000n : null;
    if (oldest !== null && newest !== null && oldest > newest) throw new UsageError('--oldest must be before --newest');
    const filter = filterFrom(ctx);
    const found: { snapshot: string; matches: Record<string, unknown>[] }[] = [];
    await withRepo(ctx, async (r) => {
      const all = await listSnapshots(r.session.client, r.repo);
      const named = (ctx.values.snapshot as string[] | undefined) ?? [];
      let chosen = named.length > 0 ? [...new Set(named.map((a) => pickSnapshot(all, a, filter, r.where)))] : all.filter((s) => matchesFilter(s, filter));
      chosen = [...chosen].sort((a, b) => all.indexOf(a) - all.indexOf(b));
      if (ctx.values.reverse !== true) chosen.reverse();
      for (const s of chosen) {
        let hits: Record<string, unknown>[] | null = null;
        for await (const e of await entries(r.session.client, r.repo, s.id)) {
          const shown = displayPath(e.path);
          if (!patterns.matches(shown)) continue;
          if ((oldest !== null && e.mtimeNs < oldest) || (newest !== null && e.mtimeNs > newest)) continue;
          if (hits === null) {
            hits = [];
            found.push({ snapshot: s.id, matches: hits });
            if (!ctx.global.json) {
              if (found.length > 1) ctx.out('');
              ctx.out(`Found matching entries in snapshot ${s.id.slice(0, 8)} from ${shortTime(BigInt(s.time_ns))}`);
            }
          }
          if (ctx.global.json) hits.push(nodeJson(e));
          else ctx.out(ctx.values.long === true ? longLine(e) : shown);
        }
      }
    });
    if (ctx.global.json) ctx.out(JSON.stringify(found.map((f) => ({ matches: f.matches, hits: f.matches.length, snapshot: f.snapshot }))));
    return 0;
  },
};
