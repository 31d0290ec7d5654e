/**
 * `shmpipe` — the agent's command line. Finds the command (program.ts), parses its options and
 * the global ones (parse.ts), and maps failures onto exit codes: 0 ok, 1 error, 2 usage, 3
 * partial (a command that finished but could not process everything says so itself), 128+n
 * interrupted by signal n.
 */

import { ShmpipeError } from '../errors';
import { CommandError, synopsis, UsageError, type Command, type GlobalOptions, type Program } from './command';
import { commandHelp, programHelp } from './help';
import { parse } from './parse';
import { PROGRAM } from './program';

/** Index of the command name in `argv`: the first word that is not a global option or its value. */
function commandIndex(p: Program, argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return i + 1 < argv.length ? i + 1 : -1;
    if (!a.startsWith('-') || a === '-') return i;
    const name = a.startsWith('--') ? a.slice(2) : (Object.entries(p.globalOptions).find(([, o]) => o.short === a.slice(1))?.[0] ?? '');
    if (!a.includes('=') && p.globalOptions[name]?.type === 'string') i++;
  }
  return -1;
}

export async function main(argv: string[], program: Program = PROGRAM): Promise<number> {
  const out = (l: string) => process.stdout.write(l + '\n');
  const err = (l: string) => process.stderr.write(l + '\n');
  const at = commandIndex(program, argv);
  const name = at >= 0 ? argv[at] : undefined;
  const command = program.commands.find((c) => c.name === name);
  if (!command) {
    let g;
    try {
      g = parse(argv.filter((_, i) => i !== at), program.globalOptions).values;
    } catch (e) {
      err(`${program.name}: ${(e as Error).message}\n\n${programHelp(program)}`);
      return 2;
    }
    if (name !== undefined) {
      err(`${program.name}: unknown command '${name}'\n\n${programHelp(program)}`);
      return 2;
    }
    if (g.version) {
      out(program.version);
      return 0;
    }
    out(programHelp(program));
    return g.help ? 0 : 2;
  }
  return runCommand(program, command, argv.filter((_, i) => i !== at), out, err);
}

async function runCommand(program: Program, command: Command, args: string[], out: (l: string) => void, err: (l: string) => void): Promise<number> {
  const usage = `usage: ${synopsis(command, program.name)}\n('${program.name} help ${command.name}' lists the options)`;
  let parsed;
  try {
    parsed = parse(args, { ...program.globalOptions, ...command.options });
  } catch (e) {
    err(`${program.name} ${command.name}: ${(e as Error).message}\n${usage}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    out(commandHelp(program, command));
    return 0;
  }
  if (v.version) {
    out(program.version);
    return 0;
  }
  const global: GlobalOptions = { sidecar: v.sidecar as string | undefined, json: v.json === true, verbose: v.verbose === true, noCache: v['no-cache'] === true };
  try {
    return await command.run({ global, values: v, positionals: parsed.positionals, program, out, err });
  } catch (e) {
    if (e instanceof UsageError) {
      err(`${program.name} ${command.name}: ${e.message}\n${usage}`);
      return 2;
    }
    if (e instanceof CommandError) {
      err(`${program.name} ${command.name}: ${e.message}`);
      return 1;
    }
    if (e instanceof ShmpipeError) {
      err(`${program.name} ${command.name}: ${e.message} (${e.code})`);
      return 1;
    }
    err(`${program.name} ${command.name}: ${(e as Error)?.stack ?? String(e)}`);
    return 1;
  }
}
