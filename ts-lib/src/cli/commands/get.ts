/** `shmpipe get <key> <file>`: downloads an object into a file (written only once verified). */

import type { Command } from '../command';
import { positionals, STORE_OPTIONS, withStore } from '../store';

export const get: Command = {
  name: 'get',
  summary: 'download an object into a file (verified before it appears)',
  args: '<key> <file>',
  complete: 'file',
  options: STORE_OPTIONS,
  async run(ctx) {
    const [key, file] = positionals(ctx, ['<key>', '<file>']) as [string, string];
    const r = await withStore(ctx, (s) => s.client.getFile(key, file));
    if (ctx.global.json) ctx.out(JSON.stringify({ key, file, ...r }));
    else ctx.out(`${file}: ${r.size} bytes${r.verified ? ', checksum verified' : ''}`);
    return 0;
  },
};
