/** `shmpipe put <file> <key>`: uploads a file into the store (straight from disk into slots). */

import type { Command } from '../command';
import { positionals, STORE_OPTIONS, withStore } from '../store';

export const put: Command = {
  name: 'put',
  summary: 'upload a file into the store under a key',
  args: '<file> <key>',
  complete: 'file',
  options: STORE_OPTIONS,
  async run(ctx) {
    const [file, key] = positionals(ctx, ['<file>', '<key>']) as [string, string];
    const r = await withStore(ctx, (s) => s.client.putFile(file, key));
    if (ctx.global.json) ctx.out(JSON.stringify({ key, ...r }));
    else ctx.out(`${key}: ${r.size} bytes, crc32c ${r.checksum.toString(16).padStart(8, '0')}`);
    return 0;
  },
};
