/**
 * The command line parser: node's `parseArgs` over the options a command declares
 * (command.ts), plus what `parseArgs` does not do — a value from the option's `SHMPIPE_*`
 * variable when the flag is absent, and `choices`. `parseArgs` still serves: the declarations
 * carry everything help and completions need, and the parser itself needs nothing more than
 * strict long/short flags, repeats and `--` (which it has).
 */

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError, type Options } from './command';

export type Values = Record<string, string | boolean | string[] | undefined>;

/** The `parseArgs` config of declared options. */
export function parseArgsOptions(options: Options): NonNullable<ParseArgsConfig['options']> {
  const config: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, o] of Object.entries(options)) {
    const c: NonNullable<ParseArgsConfig['options']>[string] = { type: o.type };
    if (o.short !== undefined) c.short = o.short;
    if (o.type === 'string' && o.multiple) c.multiple = true;
    if (o.default !== undefined) c.default = o.default;
    config[name] = c;
  }
  return config;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['0', 'false', 'no', 'off', '']);

/** Fills absent options from their environment variables, then checks `choices`. */
export function applyEnvAndChoices(options: Options, values: Values, env: NodeJS.ProcessEnv, explicit: ReadonlySet<string>): void {
  for (const [name, o] of Object.entries(options)) {
    const fromEnv = o.env !== undefined && !explicit.has(name) ? env[o.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') {
      if (o.type === 'boolean') {
        const v = fromEnv.toLowerCase();
        if (!TRUE.has(v) && !FALSE.has(v)) throw new UsageError(`${o.env} must be 1/true/yes or 0/false/no, got '${fromEnv}'`);
        values[name] = TRUE.has(v);
      } else {
        values[name] = o.multiple ? [fromEnv] : fromEnv;
      }
    }
    if (o.type === 'string' && o.choices !== undefined) {
      const v = values[name];
      for (const x of Array.isArray(v) ? v : typeof v === 'string' ? [v] : []) {
        if (!o.choices.includes(x)) {
          const from = fromEnv !== undefined && fromEnv !== '' ? ` (from ${o.env})` : '';
          throw new UsageError(`--${name} must be one of ${o.choices.join(', ')}, got '${x}'${from}`);
        }
      }
    }
  }
}

/** Parses `args` against `options` (strict: an unknown flag is a UsageError). */
export function parse(args: string[], options: Options, env: NodeJS.ProcessEnv = process.env): { values: Values; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args, options: parseArgsOptions(options), strict: true, allowPositionals: true, tokens: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const explicit = new Set(parsed.tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : [])));
  const values = { ...parsed.values } as Values;
  applyEnvAndChoices(options, values, env, explicit);
  return { values, positionals: parsed.positionals };
}
