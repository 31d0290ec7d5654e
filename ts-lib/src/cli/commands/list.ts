/**
 * `shmpipe list [prefix]`: lists the store's objects (whole path segments of the prefix), in key
 * order — `list packs`, `list snapshots` as restic's `list TYPE`. (`ls` lists a snapshot.)
 */

import type { Command } from '../command';
import { positionals, STORE_OPTIONS, withStore } from '../store';

export const list: Command = {
  name: 'list',
  summary: 'list the store objects under a prefix (e.g. packs, snapshots)',
  args: '[prefix]',
  options: STORE_OPTIONS,
  async run(ctx) {
    const [prefix = ''] = positionals(ctx, ['[prefix]'], 1);
    await withStore(ctx, async (s) => {
      for await (const e of s.client.list(prefix)) {
        if (ctx.global.json) ctx.out(JSON.stringify(e));
        else ctx.out(`${String(e.size).padStart(12)}  ${new Date(e.mtimeMs).toISOString()}  ${e.key}`);
      }
    });
    return 0;
  },
};
