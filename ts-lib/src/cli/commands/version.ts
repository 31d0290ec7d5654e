/** `shmpipe version`: the CLI's version (the sidecar's and the repository format's: see step 9). */

import { UsageError, type Command } from '../command';

export const version: Command = {
  name: 'version',
  summary: 'print version information',
  options: {},
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const doc = { version: ctx.program.version, node: process.version, platform: process.platform, arch: process.arch };
    if (ctx.global.json) ctx.out(JSON.stringify({ type: 'version', ...doc }));
    else ctx.out(`${ctx.program.name} ${doc.version} (node ${doc.node}, ${doc.platform}/${doc.arch})`);
    return 0;
  },
};
