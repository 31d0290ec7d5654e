/**
 * `backup --stdin` and `--stdin-from-command -- CMD ARGS…` (restic's flags): the flags, and
 * running the stream backup (backup/stdin.ts) from standard input or from a command's standard
 * output. The command's stdin and stderr are the CLI's; a non-zero exit (or a signal, or a
 * command that cannot be started) aborts the backup: no snapshot.
 */

import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { runStdinBackup, stdinPath, type StdinBackupResult } from '../backup/stdin';
import type { ProgressCounts } from '../backup/progress';
import { CommandError, UsageError, type CommandContext, type Options } from './command';
import { withRepo } from './repo';

const group = 'stdin options';

export const STDIN_OPTIONS: Options = {
  stdin: { type: 'boolean', default: false, group, help: 'back up the data read from standard input, as one file (see --stdin-filename)' },
  'stdin-filename': { type: 'string', value: 'NAME', default: 'stdin', group, help: 'the name (a relative path) of the file --stdin or --stdin-from-command stores' },
  'stdin-from-command': { type: 'boolean', default: false, group, help: "run the command given after -- and back up its standard output as one file; the command's non-zero exit aborts the backup" },
};

/** Which stream mode the flags ask for (null: a normal backup); usage errors for bad mixes. */
export function stdinMode(ctx: CommandContext): 'stdin' | 'command' | null {
  const stdin = ctx.values.stdin === true;
  const command = ctx.values['stdin-from-command'] === true;
  if (stdin && command) throw new UsageError('--stdin and --stdin-from-command exclude each other');
  if (!stdin && !command) {
    if (ctx.values['stdin-filename'] !== 'stdin') throw new UsageError('--stdin-filename goes with --stdin or --stdin-from-command');
    return null;
  }
  if (stdin && ctx.positionals.length > 0) throw new UsageError('--stdin backs up standard input: name no paths');
  if (command && ctx.positionals.length === 0) throw new UsageError('--stdin-from-command needs the command after --, e.g. -- pg_dump mydb');
  try {
    stdinPath(ctx.values['stdin-filename'] as string);
  } catch (e) {
    throw new UsageError(`--stdin-filename: ${(e as Error).message}`);
  }
  if (stdin && ctx.values['password-file'] === undefined && !process.env.SHMPIPE_PASSWORD) {
    throw new UsageError('--stdin reads the data from standard input, so the password must come from --password-file or SHMPIPE_PASSWORD');
  }
  return stdin ? 'stdin' : 'command';
}

interface Source {
  output: Readable;
  /** Resolves when the producer succeeded. */
  done: Promise<void>;
  /** The producer's failure, once known. */
  failure(): Error | null;
  /** Stops the producer (the backup failed on our side). */
  stop(): void;
}

/** Starts the command: its stdout, and its clean exit. */
function startCommand(argv: string[], signal: AbortSignal): Source {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['inherit', 'pipe', 'inherit'] });
  const kill = (): void => void child.kill('SIGTERM');
  signal.addEventListener('abort', kill);
  let failed: Error | null = null;
  const done = new Promise<void>((resolve, reject) => {
    const fail = (e: Error): void => {
      failed ??= e;
      reject(failed);
    };
    child.on('error', (e) => fail(new CommandError(`cannot run ${argv[0]}: ${e.message}; the backup was aborted, nothing was committed`)));
    child.on('close', (code, sig) => {
      signal.removeEventListener('abort', kill);
      if (code === 0) resolve();
      else fail(new CommandError(`${argv[0]} ${sig ? `was killed by ${sig}` : `exited with status ${code}`}; the backup was aborted, nothing was committed`));
    });
  });
  done.catch(() => {}); // awaited by the backup; a failure before that must not be unhandled
  return { output: child.stdout, done, failure: () => failed, stop: kill };
}

/** Runs the stream backup; the caller prints the summary. */
export async function runStreamBackup(
  ctx: CommandContext,
  mode: 'stdin' | 'command',
  o: { host: string; tags: string[]; signal: AbortSignal; onProgress: (c: ProgressCounts) => void; compressionLevel?: number; packSizeMiB?: number },
): Promise<StdinBackupResult> {
  return withRepo(ctx, async ({ session, repo }) => {
    const source: Source =
      mode === 'stdin' ? { output: process.stdin, done: Promise.resolve(), failure: () => null, stop: () => {} } : startCommand(ctx.positionals, o.signal);
    try {
      return await runStdinBackup(session.client, repo, {
        name: ctx.values['stdin-filename'] as string,
        input: source.output,
        done: source.done,
        host: o.host,
        tags: o.tags,
        signal: o.signal,
        onProgress: o.onProgress,
        ...(o.compressionLevel !== undefined ? { compressionLevel: o.compressionLevel } : {}),
        ...(o.packSizeMiB !== undefined ? { packSizeMiB: o.packSizeMiB } : {}),
      });
    } catch (e) {
      // The command's own failure explains a broken stream better than the stream does.
      throw source.failure() ?? (source.stop(), e);
    }
  });
}
