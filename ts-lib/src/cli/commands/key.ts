/**
 * `shmpipe key list|add|remove ID|passwd` (restic's `key`): the passwords that open the
 * repository (the sidecar's `key` job). Every key wraps the same master key, so adding or
 * removing one re-encrypts nothing. The new password of `add` and `passwd` comes from
 * `--new-password-file`, else SHMPIPE_NEW_PASSWORD, else a prompt (asked twice). Removing the
 * key in use or the last key is refused. `--json`: `list` prints one array (restic's shape:
 * `current`, `id`, `userName`, `hostName`, `created`), the others one object.
 */

import { PasswordError, resolvePassword } from '../../backup/credentials';
import { runJob } from '../../backup/ops';
import { CommandError, UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

interface KeyLine {
  id: string;
  current: boolean;
  userName: string | null;
  hostName: string | null;
  created_ns: number | null;
  in_config: boolean;
  kdf_m_kib: number;
  kdf_t: number;
}

const created = (k: KeyLine): string | null => (k.created_ns === null ? null : new Date(k.created_ns / 1e6).toISOString());
const restic = (k: KeyLine) => ({ current: k.current, id: k.id, userName: k.userName ?? '', hostName: k.hostName ?? '', created: created(k), in_config: k.in_config });

async function newPassword(file: string | undefined): Promise<string> {
  try {
    return await resolvePassword({ passwordFile: file, env: { SHMPIPE_PASSWORD: process.env.SHMPIPE_NEW_PASSWORD }, confirm: true });
  } catch (e) {
    if (e instanceof PasswordError) throw new CommandError(`new password: ${e.message.replace('SHMPIPE_PASSWORD', 'SHMPIPE_NEW_PASSWORD').replace('--password-file', '--new-password-file')}`);
    throw e;
  }
}

export const key: Command = {
  name: 'key',
  summary: 'list, add, remove or change the passwords (keys) of the repository',
  args: 'list | add | remove <id> | passwd',
  description:
    'Each key is a password that opens the repository; all of them unlock the same master key, which never changes. passwd adds a key for the new password and removes the one in use. The key in use and the last key cannot be removed. A key id may be shortened to a unique prefix (at least 4 hex digits).',
  examples: ['shmpipe key list', 'shmpipe key add --new-password-file ./second', 'shmpipe key remove 4f3a9c01', 'shmpipe key passwd'],
  complete: ['list', 'add', 'remove', 'passwd'],
  options: {
    'new-password-file': { type: 'string', value: 'FILE', complete: 'file', help: 'read the new password from FILE (add, passwd; default: SHMPIPE_NEW_PASSWORD, else a prompt)' },
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const [action, ...rest] = ctx.positionals;
    const want = (n: number, usage: string): void => {
      if (rest.length !== n) throw new UsageError(`usage: shmpipe key ${usage}`);
    };
    let request: Record<string, unknown>;
    switch (action) {
      case 'list':
        want(0, 'list');
        request = { action: 'list' };
        break;
      case 'add':
      case 'passwd':
        want(0, action);
        request = { action, password: await newPassword(ctx.values['new-password-file'] as string | undefined) };
        break;
      case 'remove':
        want(1, 'remove <id>');
        if (!/^[0-9a-f]{4,64}$/i.test(rest[0] as string)) throw new UsageError(`a key id is at least 4 hex digits, got '${rest[0]}'`);
        request = { action, id: (rest[0] as string).toLowerCase() };
        break;
      default:
        throw new UsageError(action === undefined ? 'say what to do: list, add, remove <id> or passwd' : `unknown key action '${action}' (list, add, remove, passwd)`);
    }
    const lines = await withRepo(ctx, async (r) => runJob(r.session.client, r.repo, { job: 'key', ...request }));
    if (action === 'list') {
      const keys = lines as unknown as KeyLine[];
      if (ctx.global.json) ctx.out(JSON.stringify(keys.map(restic)));
      else {
        ctx.out(' ID        User        Host                  Created');
        ctx.out('-------------------------------------------------------------------');
        for (const k of keys) ctx.out(`${k.current ? '*' : ' '}${k.id.slice(0, 8)}  ${(k.userName ?? '').padEnd(10)}  ${(k.hostName ?? (k.in_config ? '(created by init)' : '')).padEnd(20)}  ${created(k) ?? ''}`);
      }
      return 0;
    }
    const out = lines[0] as { added?: KeyLine; removed?: KeyLine };
    if (ctx.global.json) {
      ctx.out(JSON.stringify({ ...(out.added ? { added: restic(out.added) } : {}), ...(out.removed ? { removed: restic(out.removed) } : {}) }));
      return 0;
    }
    if (action === 'add' && out.added) ctx.out(`saved new key as ${out.added.id.slice(0, 8)}`);
    if (action === 'remove' && out.removed) ctx.out(`removed key ${out.removed.id.slice(0, 8)}`);
    if (action === 'passwd' && out.added && out.removed) ctx.out(`saved new password as key ${out.added.id.slice(0, 8)}, removed key ${out.removed.id.slice(0, 8)}`);
    return 0;
  },
};
