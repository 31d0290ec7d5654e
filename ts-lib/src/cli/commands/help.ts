/** `shmpipe help [COMMAND]`: the program's help, or one command's (as `shmpipe COMMAND --help`). */

import { UsageError, type Command } from '../command';
import { commandHelp, programHelp, programJson } from '../help';

export const help: Command = {
  name: 'help',
  summary: 'show the commands, or the options of one command',
  args: '[command]',
  description: 'With --json, prints every command and option definition (what the help, the completions and the man pages are generated from).',
  complete: 'command',
  options: {},
  async run(ctx) {
    const p = ctx.program;
    if (ctx.positionals.length > 1) throw new UsageError(`expected at most one command, got ${ctx.positionals.length} arguments`);
    const [name] = ctx.positionals;
    if (name === undefined) {
      ctx.out(ctx.global.json ? JSON.stringify(programJson(p)) : programHelp(p));
      return 0;
    }
    const c = p.commands.find((x) => x.name === name);
    if (c === undefined) throw new UsageError(`unknown command '${name}' (commands: ${p.commands.map((x) => x.name).join(', ')})`);
    if (ctx.global.json) {
      const doc = programJson(p) as { commands: { name: string }[] };
      ctx.out(JSON.stringify(doc.commands.find((x) => x.name === name)));
    } else {
      ctx.out(commandHelp(p, c));
    }
    return 0;
  },
};
