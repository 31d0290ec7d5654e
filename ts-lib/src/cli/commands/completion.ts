/** `shmpipe completion bash|zsh|fish`: the shell's completion script on stdout. */

import { completionScript, SHELLS, type Shell } from '../completion';
import { UsageError, type Command } from '../command';

export const completion: Command = {
  name: 'completion',
  summary: 'print a shell completion script (bash, zsh or fish)',
  args: '<bash|zsh|fish>',
  description:
    'The script completes commands, their flags, and flag values (files, directories, fixed choices).\n\n' +
    'bash: source <(shmpipe completion bash), or save it as /etc/bash_completion.d/shmpipe. ' +
    'zsh: save it as _shmpipe in a directory of $fpath. ' +
    'fish: save it as ~/.config/fish/completions/shmpipe.fish.',
  complete: SHELLS,
  options: {},
  async run(ctx) {
    const [shell, ...rest] = ctx.positionals;
    if (shell === undefined || rest.length > 0 || !(SHELLS as readonly string[]).includes(shell)) {
      throw new UsageError(`name one shell: ${SHELLS.join(', ')}`);
    }
    process.stdout.write(completionScript(ctx.program, shell as Shell));
    return 0;
  },
};
