/**
 * `shmpipe init`: creates the repository (REPO_INIT) in the store the session reaches.
 * `--exists-ok` makes it idempotent for deployments (a Kubernetes init container runs it on
 * every pod start): an existing repository is fine if the password opens it.
 */

import { ShmpipeError } from '../../errors';
import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, withRepo } from '../repo';

export const init: Command = {
  name: 'init',
  summary: 'create a repository (asks for a new password)',
  description: 'The password comes from --password-file, SHMPIPE_PASSWORD, or a prompt (asked twice).',
  options: {
    'compression-level': { type: 'string', value: 'N', help: 'zstd level of the repository, -7..19 (0: no compression)' },
    'exists-ok': { type: 'boolean', default: false, help: 'succeed if the repository exists and the password opens it (for deployments that run init on every start)' },
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const level = ctx.values['compression-level'] as string | undefined;
    if (level !== undefined && !/^-?\d+$/.test(level)) throw new UsageError('--compression-level needs an integer in -7..19 (0 = off)');
    let where: string;
    let existed = false;
    try {
      where = await withRepo(ctx, async (r) => r.where, { init: level !== undefined ? { compression_level: Number(level) } : {} });
    } catch (e) {
      const exists = e instanceof Error && e.cause instanceof ShmpipeError && e.cause.code === 'SHMPIPE_E_REPO_EXISTS';
      if (!exists || ctx.values['exists-ok'] !== true) throw e;
      // Opening it checks the password: a deployment with the wrong secret fails here, early.
      where = await withRepo(ctx, async (r) => r.where);
      existed = true;
    }
    if (ctx.global.json) ctx.out(JSON.stringify({ type: 'init', repository: where, existed }));
    else ctx.out(existed ? `repository at ${where} exists and the password opens it` : `created repository at ${where}`);
    return 0;
  },
};
