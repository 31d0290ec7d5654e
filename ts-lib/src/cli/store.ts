/**
 * What the store commands (put, get, ls, rm, stat) share: the `--store URL` option, which picks
 * the store of a private sidecar (SHMPIPE_STORE) and so cannot be combined with a named sidecar,
 * whose store is its own configuration.
 */

import { UsageError, type CommandContext, type Options } from './command';
import { openSession, type CliSession } from './session';

export const STORE_OPTIONS: Options = {
  store: {
    type: 'string',
    value: 'URL',
    group: 'store options',
    help: "the private sidecar's store: file:///dir, s3://bucket/prefix or memory:// (default: SHMPIPE_STORE, else the sidecar's default directory); not with --sidecar",
  },
};

/** Opens the session for a store command, checking `--store` against a named sidecar. */
export async function storeSession(ctx: CommandContext): Promise<CliSession> {
  const store = ctx.values.store as string | undefined;
  const named = ctx.global.sidecar || process.env.SHMPIPE_SIDECAR_SOCKET || undefined;
  if (store !== undefined) {
    if (named !== undefined) {
      throw new UsageError('--store configures a private sidecar; a running sidecar (--sidecar or SHMPIPE_SIDECAR_SOCKET) uses its own store');
    }
    if (store === '') throw new UsageError('--store needs a URL (file:///dir, s3://bucket/prefix)');
  }
  return openSession({ sidecar: named, verbose: ctx.global.verbose, sidecarEnv: store !== undefined ? { SHMPIPE_STORE: store } : {} });
}

/** Exactly `n` positional arguments (named for the message), else a usage error. */
export function positionals(ctx: CommandContext, names: string[], optional = 0): string[] {
  const p = ctx.positionals;
  if (p.length > names.length || p.length < names.length - optional) {
    throw new UsageError(`expected ${names.join(' ')}, got ${p.length} argument(s)`);
  }
  return p;
}

/** Runs `f` with a store session, closing it afterwards. */
export async function withStore<T>(ctx: CommandContext, f: (s: CliSession) => Promise<T>): Promise<T> {
  const s = await storeSession(ctx);
  try {
    return await f(s);
  } finally {
    await s.close();
  }
}
