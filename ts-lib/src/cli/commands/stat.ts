/** `shmpipe stat <key>`: size, CRC-32C and modification time of an object. */

import type { Command } from '../command';
import { positionals, STORE_OPTIONS, withStore } from '../store';

export const stat: Command = {
  name: 'stat',
  summary: 'show the size, checksum and modification time of an object',
  args: '<key>',
  options: STORE_OPTIONS,
  async run(ctx) {
    const [key] = positionals(ctx, ['<key>']) as [string];
    const i = await withStore(ctx, (s) => s.client.stat(key));
    if (ctx.global.json) ctx.out(JSON.stringify(i));
    else ctx.out(`${i.key}: ${i.size} bytes, crc32c ${i.checksum.toString(16).padStart(8, '0')}, modified ${new Date(i.mtimeMs).toISOString()}`);
    return 0;
  },
};
