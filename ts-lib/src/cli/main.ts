/**
 * `shmpipe` — the agent's command line. Parses global options, dispatches to a command in
 * ./commands, and maps failures onto exit codes: 0 ok, 1 error, 2 usage, 3 partial (a command
 * that finished but could not process everything says so itself), 128+n interrupted by signal n.
 */

import { parseArgs } from 'node:util';
import { ShmpipeError } from '../errors';
import { CommandError, UsageError, type Command, type GlobalOptions } from './command';
import { backup } from './commands/backup';
import { check } from './commands/check';
import { get } from './commands/get';
import { init } from './commands/init';
import { ls } from './commands/ls';
import { put } from './commands/put';
import { restore } from './commands/restore';
import { rm } from './commands/rm';
import { stat } from './commands/stat';
import { sidecarStats } from './commands/sidecar-stats';
import { snapshots } from './commands/snapshots';
import { stats } from './commands/stats';

const COMMANDS: readonly Command[] = [init, backup, snapshots, restore, check, stats, put, get, ls, stat, rm, sidecarStats];

const GLOBAL_OPTIONS = {
  sidecar: { type: 'string' },
  json: { type: 'boolean', default: false },
  verbose: { type: 'boolean', short: 'v', default: false },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', default: false },
} as const;

const VERSION = '0.1.0';

function help(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'shmpipe — backup agent for the shmpipe sidecar',
    '',
    'usage: shmpipe <command> [options]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'global options:',
    '  --sidecar SOCKET  use a running sidecar (default: SHMPIPE_SIDECAR_SOCKET, else start a private one)',
    '  --repo URL        backup commands: the repository (default: SHMPIPE_REPO, else the local default directory)',
    '  --password-file F backup commands: the repository password (default: SHMPIPE_PASSWORD, else a prompt)',
    '  --json            machine-readable output',
    '  -v, --verbose     show the sidecar log',
    '  -h, --help        this help; `shmpipe <command> --help` for a command',
    '  --version         print the version',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const out = (l: string) => process.stdout.write(l + '\n');
  const err = (l: string) => process.stderr.write(l + '\n');
  const name = argv.find((a) => !a.startsWith('-'));
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    const g = parseArgs({ args: argv, options: GLOBAL_OPTIONS, strict: false, allowPositionals: true }).values;
    if (g.version) {
      out(VERSION);
      return 0;
    }
    if (name === undefined || g.help) {
      out(help());
      return name === undefined && !g.help ? 2 : 0;
    }
    err(`shmpipe: unknown command '${name}'\n\n${help()}`);
    return 2;
  }
  const rest = argv.filter((a, i) => i !== argv.indexOf(command.name));
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: { ...GLOBAL_OPTIONS, ...command.options }, strict: true, allowPositionals: true });
  } catch (e) {
    err(`shmpipe ${command.name}: ${(e as Error).message}\nusage: ${command.usage}`);
    return 2;
  }
  const v = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (v.help) {
    out(`usage: ${command.usage}\n\n${command.summary}`);
    return 0;
  }
  const global: GlobalOptions = { sidecar: v.sidecar as string | undefined, json: v.json === true, verbose: v.verbose === true };
  try {
    return await command.run({ global, values: v, positionals: parsed.positionals, out, err });
  } catch (e) {
    if (e instanceof UsageError) {
      err(`shmpipe ${command.name}: ${e.message}\nusage: ${command.usage}`);
      return 2;
    }
    if (e instanceof CommandError) {
      err(`shmpipe ${command.name}: ${e.message}`);
      return 1;
    }
    if (e instanceof ShmpipeError) {
      err(`shmpipe ${command.name}: ${e.message} (${e.code})`);
      return 1;
    }
    err(`shmpipe ${command.name}: ${(e as Error)?.stack ?? String(e)}`);
    return 1;
  }
}
