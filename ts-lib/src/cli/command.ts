/**
 * The shape of a CLI command, and what the dispatcher hands it.
 *
 * A command declares its options once, each with its help text, and everything a user sees
 * about it is generated from that declaration: `shmpipe VERB --help` and `shmpipe help VERB`
 * (help.ts), the shell completions (completion.ts) and the man pages (man.ts). The parser is
 * node's `parseArgs` (parse.ts turns the declarations into its config, then applies what it
 * does not do: `SHMPIPE_*` defaults and `choices`).
 */

/** What completes an option's value or a positional argument. */
export type Completion = 'file' | 'dir' | 'command' | 'none' | readonly string[];

interface OptionBase {
  /** One or two sentences for `--help` and the man page; starts lower case, no final period. */
  help: string;
  /** A one-letter alias (`-v`). */
  short?: string;
  /** The environment variable that gives the value when the flag is absent. */
  env?: string;
  /** The heading it is listed under in `--help` (default: the command's own options). */
  group?: string;
  /** Accepted, but left out of help and completions (compatibility spellings). */
  hidden?: boolean;
}

export interface StringOption extends OptionBase {
  type: 'string';
  /** The value's placeholder in help (`FILE`, `PATTERN`, `N`). */
  value: string;
  /** May be given more than once (the value is then a list). */
  multiple?: boolean;
  default?: string;
  /** The only accepted values (checked by the parser; completed by the shells). */
  choices?: readonly string[];
  /** How shells complete the value (default: nothing; `choices` when given). */
  complete?: Completion;
}

export interface BooleanOption extends OptionBase {
  type: 'boolean';
  default?: boolean;
}

export type OptionSpec = StringOption | BooleanOption;
export type Options = Record<string, OptionSpec>;

export interface GlobalOptions {
  sidecar?: string | undefined;
  json: boolean;
  verbose: boolean;
  /** `--no-cache`: open repositories without the local metadata cache. */
  noCache?: boolean;
}

/** The whole command line program: what help, completions and man pages are made from. */
export interface Program {
  name: string;
  version: string;
  summary: string;
  commands: readonly Command[];
  globalOptions: Options;
}

export interface CommandContext {
  global: GlobalOptions;
  /** Values of the command's own options (per `Command.options`). */
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** The program the command runs in (help, completion and man read it). */
  program: Program;
  out(line: string): void;
  err(line: string): void;
}

export interface Command {
  name: string;
  /** One line, starts lower case: the command list in `shmpipe help`. */
  summary: string;
  /** The positional arguments for the synopsis, e.g. `<snapshot> <target>` or `<path>...`. */
  args?: string;
  /** Paragraphs (separated by a blank line) for `--help` and the man page. */
  description?: string;
  /** Lines of `command  # what it does` shown under "examples". */
  examples?: readonly string[];
  /** How shells complete the positional arguments. */
  complete?: Completion;
  options: Options;
  /** Resolves with the process exit code. */
  run(ctx: CommandContext): Promise<number>;
}

/** `shmpipe VERB [options] ARGS`: the one-line synopsis of a command. */
export function synopsis(c: Command, program = 'shmpipe'): string {
  // Every command takes the global options, so there are always some.
  return `${program} ${c.name} [options]${c.args ? ` ${c.args}` : ''}`;
}

/** A usage mistake: printed with the command's usage, exit code 2. */
export class UsageError extends Error {}

/** A failure the user can act on: printed as one line (no stack), exit code 1. */
export class CommandError extends Error {}
