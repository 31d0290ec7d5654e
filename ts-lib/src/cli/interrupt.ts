/**
 * SIGINT/SIGTERM during a long command (backup, restore): instead of dying with work half done,
 * the command is told through an AbortSignal, stops, cleans up (BACKUP_ABORT, the private
 * sidecar stopped) and exits non-zero. In a container the agent is PID 1, which gets no default
 * signal handling at all: without this, SIGTERM would be ignored until the kill.
 */

import { ShmpipeError } from '../errors';

export interface Interrupt {
  readonly signal: AbortSignal;
  /** The exit code for an interrupted command (128 + signal number), or null. */
  exitCode(): number | null;
  dispose(): void;
}

const CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

export function onInterrupt(): Interrupt {
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
