/** `shmpipe init`: creates the repository (REPO_INIT) in the store the session reaches. */

import { UsageError, type Command } from '../command';
import { REPO_OPTIONS, REPO_USAGE, withRepo } from '../repo';

export const init: Command = {
  name: 'init',
  summary: 'create a repository (asks for a new password)',
  usage: `shmpipe init [--compression-level N] ${REPO_USAGE}`,
  options: { ...REPO_OPTIONS, 'compression-level': { type: 'string' } },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const level = ctx.values['compression-level'] as string | undefined;
    if (level !== undefined && !/^-?\d+$/.test(level)) throw new UsageError('--compression-level needs an integer in -7..19 (0 = off)');
    const where = await withRepo(ctx, async (r) => r.where, { init: level !== undefined ? { compression_level: Number(level) } : {} });
    if (ctx.global.json) ctx.out(JSON.stringify({ type: 'init', repository: where }));
    else ctx.out(`created repository at ${where}`);
    return 0;
  },
};
