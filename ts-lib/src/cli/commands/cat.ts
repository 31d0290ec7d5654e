/**
 * `shmpipe cat TYPE [ID]`: one repository object decrypted, for debugging (restic's `cat`):
 * `config`; `snapshot ID|latest`; `index`, `pack`, `lock`, `key` by id or unique prefix;
 * `tree ID` (a tree blob's entries) and `blob ID` (its plaintext, written raw) by full id. The
 * sidecar's `cat` job does the reading and decrypting. Text: indented JSON; `--json`: one
 * compact JSON value per line (a tree: one entry per line).
 */

import { runJob, jobLines } from '../../backup/ops';
import { CommandError, UsageError, type Command } from '../command';
import { FILTER_OPTIONS, filterFrom, resolveSnapshotInfo } from '../filter';
import { REPO_OPTIONS, withRepo, type RepoSession } from '../repo';
import { writeAll } from '../archive';

const TYPES = ['config', 'snapshot', 'index', 'pack', 'blob', 'tree', 'lock', 'key'] as const;
/** Where objects of a type live in the store (for id prefixes). */
const PREFIX: Record<string, string> = { index: 'index/', pack: 'packs/', lock: 'locks/', key: 'keys/' };

/** A full id, or the one object of `type` whose id starts with `arg`. */
async function resolveId(r: RepoSession, type: string, arg: string): Promise<string> {
  if (/^[0-9a-f]{64}$/.test(arg)) return arg;
  const prefix = PREFIX[type];
  if (prefix === undefined || !/^[0-9a-f]{4,63}$/.test(arg)) throw new UsageError(`cat ${type} needs an id of 64 hex digits${prefix !== undefined ? ' (or a unique prefix of 4 or more)' : ''}, got '${arg}'`);
  const found: string[] = [];
  for await (const o of r.session.client.list(type === 'pack' ? `${prefix}${arg.slice(0, 2)}/` : prefix)) {
    const id = o.key.slice(o.key.lastIndexOf('/') + 1);
    if (id.startsWith(arg)) found.push(id);
  }
  if (found.length === 1) return found[0]!;
  throw new CommandError(found.length === 0 ? `no ${type} ${arg} in ${r.where}` : `${type} prefix ${arg} is ambiguous (${found.length} objects)`);
}

export const cat: Command = {
  name: 'cat',
  summary: 'print a repository object, decrypted (config, snapshot, index, pack, blob, tree, lock, key)',
  args: '<type> [id]',
  description: 'For debugging. Secrets (the master key, the id key, the chunker seed) are never shown. A pack shows its blob table; a blob is written as its raw plaintext.',
  examples: ['shmpipe cat config', 'shmpipe cat snapshot latest', 'shmpipe cat blob 5a1f…(64 hex digits) > chunk.bin'],
  complete: TYPES,
  options: { ...FILTER_OPTIONS, ...REPO_OPTIONS },
  async run(ctx) {
    const [type, idArg, ...rest] = ctx.positionals;
    if (type === undefined || !(TYPES as readonly string[]).includes(type)) throw new UsageError(`name a type: ${TYPES.join(', ')}`);
    if (rest.length > 0 || (type === 'config') !== (idArg === undefined)) throw new UsageError(type === 'config' ? 'cat config takes no id' : `cat ${type} needs one id`);
    await withRepo(ctx, async (r) => {
      const c = r.session.client;
      let id: string | undefined;
      if (type === 'snapshot') id = (await resolveSnapshotInfo(r, idArg!, filterFrom(ctx))).id;
      else if (idArg !== undefined) id = await resolveId(r, type, idArg);
      const request = { job: 'cat', type, ...(id !== undefined ? { id } : {}) };
      if (type === 'blob') {
        for await (const l of jobLines(c, r.repo, request)) await writeAll(process.stdout, Buffer.from(String(l.data), 'hex'));
        return;
      }
      const lines = await runJob(c, r.repo, request);
      if (ctx.global.json) for (const l of lines) ctx.out(JSON.stringify(l));
      else ctx.out(JSON.stringify(type === 'tree' ? lines : lines[0], null, 2));
    });
    return 0;
  },
};
