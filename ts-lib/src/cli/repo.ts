/**
 * What the backup commands (init, backup, snapshots, restore, check, stats) share: the
 * repository and its password, the session that reaches it, and plain messages for the
 * failures a user can act on.
 *
 * The repository lives in the sidecar's store. A private sidecar is started on `--repo URL`
 * (else SHMPIPE_REPO, else the embedded default directory; credentials.ts) as its
 * SHMPIPE_STORE; a running sidecar (`--sidecar SOCKET`, SHMPIPE_SIDECAR_SOCKET) serves the
 * repository in its own store, so `--repo` with it is a usage error.
 */

import { ShmpipeError } from '../errors';
import { PasswordError, resolvePassword, resolveRepo } from '../backup/credentials';
import { close, repoInit, repoOpen, type Handle, type RepoParams } from '../backup/ops';
import { Progress } from '../backup/progress';
import { CommandError, UsageError, type CommandContext, type Options } from './command';
import { isEmptyFilter, NO_FILTER, resolveSnapshotInfo, type SnapshotFilter } from './filter';
import { openSession, type CliSession } from './session';

/** The options of every command that opens the repository. */
export const REPO_OPTIONS: Options = {
  repo: {
    type: 'string',
    short: 'r',
    value: 'URL',
    complete: 'dir',
    group: 'repository options',
    help: 'the repository: file:///dir, s3://bucket/prefix or a directory (default: SHMPIPE_REPO, else the local default directory); not with --sidecar, whose store holds the repository',
  },
  'password-file': {
    type: 'string',
    short: 'p',
    value: 'FILE',
    complete: 'file',
    group: 'repository options',
    help: "read the repository password from FILE (default: SHMPIPE_PASSWORD, else a prompt on a terminal)",
  },
  'limit-upload': { type: 'string', value: 'RATE', env: 'SHMPIPE_LIMIT_UPLOAD', group: 'repository options', help: 'limit uploads to the repository to this many KiB/s (a private sidecar: a running one has its own limits)' },
  'limit-download': { type: 'string', value: 'RATE', env: 'SHMPIPE_LIMIT_DOWNLOAD', group: 'repository options', help: 'limit downloads from the repository to this many KiB/s (a private sidecar: a running one has its own limits)' },
};

/** The private sidecar's environment for `--limit-upload`/`--limit-download` (checked). */
function limitsEnv(ctx: CommandContext, named: string | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [flag, name] of [['limit-upload', 'SHMPIPE_LIMIT_UPLOAD'], ['limit-download', 'SHMPIPE_LIMIT_DOWNLOAD']] as const) {
    const v = ctx.values[flag] as string | undefined;
    if (v === undefined) continue;
    if (!/^[1-9][0-9]{0,12}$/.test(v)) throw new UsageError(`--${flag} needs a whole number of KiB/s (at least 1), got '${v}'`);
    if (named !== undefined) ctx.err(`shmpipe: --${flag} applies to a private sidecar; the running one uses its own limits`);
    else env[name] = v;
  }
  return env;
}

/**
 * Slots of a CLI session: a file of up to 2 MiB is one FILE_PUT. The pool's pages are resident
 * only while slots are used (the client maps it lazily, the sidecar gives idle slots back), so
 * what a session costs is the slots in flight at once, and every one of them is also copied by
 * the sidecar (FILE_WRITE) or filled from its read-ahead (restore). Measured on the perf:backup
 * mixed set (issue #15, summed PSS of the CLI and its sidecar): 48 x 4 MiB 273-282 MB for the
 * backup and 256-278 MB for the restore; 48 x 2 MiB 222-228 and 192 MB at the same CPU per GB;
 * fewer slots (32, 24) cut memory less and the files in flight (backup.ts sizes them from the
 * grant window) more.
 */
const SLOT_SIZE = 2 << 20;
const SLOT_COUNT = 48;

export interface RepoSession {
  session: CliSession;
  repo: Handle;
  /** Where the repository is, for messages. */
  where: string;
  close(): Promise<void>;
}

/** A ShmpipeError as one line a user can act on (the code stays in the text for scripts). */
export function explain(e: unknown, where: string): Error {
  // A local filesystem failure (the restore target, a source root): its message says it all.
  const errno = e as NodeJS.ErrnoException;
  if (!(e instanceof ShmpipeError) && typeof errno?.code === 'string' && typeof errno.syscall === 'string') return new CommandError(errno.message);
  if (!(e instanceof ShmpipeError)) return e as Error;
  const detail = (): string => e.message.replace(/^[a-z_]+ failed: SHMPIPE_E_[A-Z_]+ \(status -?\d+\)(: )?/, '');
  switch (e.code) {
    case 'SHMPIPE_E_WRONG_PASSWORD':
      return new CommandError(`wrong password for repository ${where}`);
    case 'SHMPIPE_E_NOT_A_REPOSITORY':
      return new CommandError(`there is no repository at ${where}: create one with 'shmpipe init'`);
    case 'SHMPIPE_E_REPO_EXISTS':
      return new CommandError(`a repository already exists at ${where}`, { cause: e });
    case 'SHMPIPE_E_LOCKED':
      return new CommandError(`repository ${where} is locked by another process: ${detail()}`);
    case 'SHMPIPE_E_REPO_LIMIT':
      return new CommandError(`repository ${where} asks for more than this sidecar allows, or a new key is too weak: ${detail()}`);
    case 'SHMPIPE_E_LOCK_LOST':
      return new CommandError(`lost the lock on repository ${where}, so nothing more was written (no snapshot): ${detail()}`);
    case 'SHMPIPE_E_REFUSED':
      return new CommandError(`refused: ${detail().replace(/^refused: /, '')}`);
    case 'SHMPIPE_E_REPO_VERSION':
      return new CommandError(`repository ${where} has a format this sidecar cannot read: ${detail()}`);
    case 'SHMPIPE_E_DISCONNECTED':
      return new CommandError(`the sidecar went away (${e.message.replace(/^the sidecar is gone \((.*)\)$/, '$1')}); nothing was committed by this run, the repository stays consistent (run 'shmpipe check')`);
    default:
      return new CommandError(`${e.message} (${e.code})`);
  }
}

/**
 * Opens the session and the repository (or creates it: `init`). Private sidecars get
 * `sidecarEnv` besides the store (e.g. a larger read reserve for restore).
 */
/** A second repository (`copy --from-repo`): always a private sidecar, its own password sources. */
export interface OtherRepo {
  repo: string;
  passwordFile?: string | undefined;
  /** The environment variable holding its password. */
  passwordEnv: string;
}

export async function openRepo(ctx: CommandContext, o: { init?: RepoParams; sidecarEnv?: Record<string, string>; other?: OtherRepo } = {}): Promise<RepoSession> {
  const flag = o.other !== undefined ? o.other.repo : (ctx.values.repo as string | undefined);
  const named = o.other !== undefined ? undefined : ctx.global.sidecar || process.env.SHMPIPE_SIDECAR_SOCKET || undefined;
  if (flag !== undefined && named !== undefined) {
    throw new UsageError('--repo configures a private sidecar; a running sidecar (--sidecar or SHMPIPE_SIDECAR_SOCKET) serves the repository in its own store');
  }
  if (flag === '') throw new UsageError('--repo needs a URL or a directory (file:///dir, s3://bucket/prefix, ./dir)');
  const url = named === undefined ? resolveRepo(flag) : null;
  const where = url ?? `the store of the sidecar at ${named}`;
  let password: string;
  try {
    password =
      o.other !== undefined
        ? await resolvePassword({ passwordFile: o.other.passwordFile, env: { SHMPIPE_PASSWORD: process.env[o.other.passwordEnv] } })
        : await resolvePassword({ passwordFile: ctx.values['password-file'] as string | undefined, confirm: o.init !== undefined });
  } catch (e) {
    if (e instanceof PasswordError) throw new CommandError(e.message);
    throw e;
  }
  let session: CliSession;
  try {
    session = await openSession({
      sidecar: named,
      verbose: ctx.global.verbose,
      sidecarEnv: { ...(url !== null ? { SHMPIPE_STORE: url } : {}), ...limitsEnv(ctx, named), ...o.sidecarEnv },
      slotSize: SLOT_SIZE,
      slotCount: SLOT_COUNT,
    });
  } catch (e) {
    throw explain(e, where);
  }
  let repo: Handle;
  try {
    repo = o.init !== undefined ? await repoInit(session.client, password, o.init) : await repoOpen(session.client, password, { noCache: ctx.global.noCache === true });
  } catch (e) {
    await session.close().catch(() => {});
    throw explain(e, where);
  }
  return {
    session,
    repo,
    where,
    async close() {
      await close(session.client, repo).catch(() => {});
      await session.close();
    },
  };
}

/** Runs `f` with the repository open, closing everything afterwards; errors explained. */
export async function withRepo<T>(ctx: CommandContext, f: (r: RepoSession) => Promise<T>, o: { init?: RepoParams; sidecarEnv?: Record<string, string> } = {}): Promise<T> {
  const r = await openRepo(ctx, o);
  try {
    return await f(r);
  } catch (e) {
    throw explain(e, r.where);
  } finally {
    await r.close().catch(() => {});
  }
}

/** Progress of a long command: JSON lines on stdout with `--json`, else a bar on a TTY stderr. */
export function progressFor(ctx: CommandContext, verb: string): Progress {
  const sink = ctx.global.json ? { isTTY: false, write: (s: string) => void process.stdout.write(s) } : { isTTY: process.stderr.isTTY === true, write: (s: string) => void process.stderr.write(s) };
  return new Progress(verb, sink, ctx.global.json);
}

/** MB/s (10^6 bytes) of `bytes` in `ms`, two decimals. */
export function mbps(bytes: number, ms: number): number {
  return ms > 0 ? Math.round((bytes / 1e6 / (ms / 1000)) * 100) / 100 : 0;
}

/**
 * `latest` (the newest snapshot passing `filter`), a full id, or a unique prefix of one (at
 * least 4 hex digits) → the snapshot's id (filter.ts).
 */
export async function resolveSnapshot(r: RepoSession, arg: string, filter: SnapshotFilter = NO_FILTER): Promise<string> {
  if (/^[0-9a-f]{64}$/.test(arg) && isEmptyFilter(filter)) return arg;
  return (await resolveSnapshotInfo(r, arg, filter)).id;
}
