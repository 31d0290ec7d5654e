/**
 * SIGINT/SIGTERM during a long command (backup, restore): instead of dying with work half done,
 * the command is told through an AbortSignal, stops, cleans up (BACKUP_ABORT, the private
 * sidecar stopped) and exits non-zero. In a container the agent is PID 1, which gets no default
 * signal handling at all: without this, SIGTERM would be ignored until the kill.
 */

import { ShmpipeError } from '../errors';
import type { CommandContext } from './command';

interface Interrupt {
  readonly signal: AbortSignal;
  /** The exit code for an interrupted command (128 + signal number), or null. */
  exitCode(): number | null;
  dispose(): void;
}

const CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

function onInterrupt(): Interrupt {
  const ac = new AbortController();
  let got: string | null = null;
  const handler = (sig: NodeJS.Signals): void => {
    if (got !== null) return;
    got = sig;
    ac.abort(new ShmpipeError('SHMPIPE_E_CANCELLED', `interrupted by ${sig}`));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: ac.signal,
    exitCode: () => (got === null ? null : CODES[got]!),
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/**
 * Runs a long command's body with SIGINT/SIGTERM turned into its `signal`. If it fails after
 * a signal, `what` is printed (what the interruption left behind) and the exit code is 128 + n.
 */
export async function interruptible(ctx: CommandContext, what: string, f: (signal: AbortSignal) => Promise<number>): Promise<number> {
  const interrupt = onInterrupt();
  try {
    return await f(interrupt.signal);
  } catch (e) {
    const code = interrupt.exitCode();
    if (code === null) throw e;
    ctx.err(what);
    return code;
  } finally {
    interrupt.dispose();
  }
}
