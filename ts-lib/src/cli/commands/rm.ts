/** `shmpipe rm <key>`: deletes an object (no error when there is none). */

import type { Command } from '../command';
import { positionals, STORE_OPTIONS, withStore } from '../store';

export const rm: Command = {
  name: 'rm',
  summary: 'delete an object',
  args: '<key>',
  options: STORE_OPTIONS,
  async run(ctx) {
    const [key] = positionals(ctx, ['<key>']) as [string];
    await withStore(ctx, (s) => s.client.delete(key));
    if (ctx.global.json) ctx.out(JSON.stringify({ key, deleted: true }));
    return 0;
  },
};
