/**
 * `shmpipe generate --man DIR --bash-completion FILE …`: restic's verb for writing the man
 * pages and completion files (for packagers). `shmpipe completion SHELL` prints one script.
 */

import fs from 'node:fs';
import path from 'node:path';
import { completionScript, type Shell } from '../completion';
import { UsageError, type Command } from '../command';
import { commandPage, programPage } from '../man';

/** The pages' date: SOURCE_DATE_EPOCH (reproducible builds), else today. */
function pageDate(): string {
  const epoch = Number(process.env.SOURCE_DATE_EPOCH);
  return new Date(Number.isFinite(epoch) && epoch > 0 ? epoch * 1000 : Date.now()).toISOString().slice(0, 10);
}

export const generate: Command = {
  name: 'generate',
  summary: 'write the man pages and shell completion files',
  description: 'Writes what packagers install: shmpipe.1 and one shmpipe-COMMAND.1 per command into the --man directory, and the completion script of each shell named. At least one option is required.',
  examples: ['shmpipe generate --man /usr/local/share/man/man1', 'shmpipe generate --bash-completion /etc/bash_completion.d/shmpipe'],
  options: {
    man: { type: 'string', value: 'DIR', complete: 'dir', help: 'write the man pages into this directory (created if missing)' },
    'bash-completion': { type: 'string', value: 'FILE', complete: 'file', help: 'write the bash completion script to this file' },
    'zsh-completion': { type: 'string', value: 'FILE', complete: 'file', help: 'write the zsh completion script to this file' },
    'fish-completion': { type: 'string', value: 'FILE', complete: 'file', help: 'write the fish completion script to this file' },
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const p = ctx.program;
    const written: string[] = [];
    const man = ctx.values.man as string | undefined;
    if (man !== undefined) {
      fs.mkdirSync(man, { recursive: true });
      const date = pageDate();
      const pages: [string, string][] = [[`${p.name}.1`, programPage(p, date)], ...p.commands.map((c): [string, string] => [`${p.name}-${c.name}.1`, commandPage(p, c, date)])];
      for (const [file, text] of pages) {
        fs.writeFileSync(path.join(man, file), text);
        written.push(path.join(man, file));
      }
    }
    for (const shell of ['bash', 'zsh', 'fish'] as Shell[]) {
      const file = ctx.values[`${shell}-completion`] as string | undefined;
      if (file === undefined) continue;
      fs.writeFileSync(file, completionScript(p, shell));
      written.push(file);
    }
    if (written.length === 0) throw new UsageError('name what to write: --man DIR, --bash-completion FILE, --zsh-completion FILE or --fish-completion FILE');
    if (ctx.global.json) ctx.out(JSON.stringify({ type: 'generate', written }));
    else for (const f of written) ctx.out(`wrote ${f}`);
    return 0;
  },
};
