/** The shape of a CLI command, and what the dispatcher hands it. */

import type { ParseArgsConfig } from 'node:util';

export interface GlobalOptions {
  sidecar?: string | undefined;
  json: boolean;
  verbose: boolean;
}

export interface CommandContext {
  global: GlobalOptions;
  /** Values of the command's own options (per `Command.options`). */
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  out(line: string): void;
  err(line: string): void;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** Resolves with the process exit code. */
  run(ctx: CommandContext): Promise<number>;
}

/** A usage mistake: printed with the command's usage, exit code 2. */
export class UsageError extends Error {}

/** A failure the user can act on: printed as one line (no stack), exit code 1. */
export class CommandError extends Error {}
