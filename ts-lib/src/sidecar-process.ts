/**
 * Starting a private sidecar: the CLI (and any embedding program) runs its own
 * `shmpipe-sidecar` on a socket in a fresh 0700 temp directory when no running sidecar is named.
 * Public API: `startSidecar()`. The binary is found via `SHMPIPE_SIDECAR_BIN`, then next to this
 * package's build (`target/release/shmpipe-sidecar`), then on `PATH`.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ShmpipeError } from './errors';

export interface SidecarProcessOptions {
  /** Extra environment for the sidecar (SHMPIPE_* settings). */
  env?: Record<string, string>;
  /** How long to wait for the socket to accept connections (ms). */
  startTimeoutMs?: number;
  /** Where the sidecar's stderr goes: inherit it (e.g. for --verbose) or keep the tail for errors. */
  stderr?: 'inherit' | 'capture';
}

export interface SidecarProcess {
  readonly pid: number;
  readonly socketPath: string;
  /** SIGTERM (the sidecar drains), SIGKILL after `graceMs`; removes the temp directory. */
  stop(graceMs?: number): Promise<void>;
  /** Resolves with the exit code/signal when the process ends, for whatever reason. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last part of what the sidecar wrote to stderr (when captured). */
  stderrTail(): string;
}

/** Locates the sidecar binary; throws SHMPIPE_E_INVALID_ARGUMENT naming where it looked. */
export function findSidecarBinary(): string {
  const candidates: string[] = [];
  if (process.env.SHMPIPE_SIDECAR_BIN) candidates.push(process.env.SHMPIPE_SIDECAR_BIN);
  // dist/ sits in ts-lib/, which sits at the repository root next to target/.
  candidates.push(path.resolve(__dirname, '..', '..', 'target', 'release', 'shmpipe-sidecar'));
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir) candidates.push(path.join(dir, 'shmpipe-sidecar'));
  }
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      return c;
    } catch {
      // try the next
    }
  }
  throw new ShmpipeError(
    'SHMPIPE_E_INVALID_ARGUMENT',
    `shmpipe-sidecar not found (looked in SHMPIPE_SIDECAR_BIN, ${candidates[1]}, and PATH): build it with npm run build, or pass --sidecar SOCKET`,
  );
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startSidecar(options: SidecarProcessOptions = {}): Promise<SidecarProcess> {
  const bin = findSidecarBinary();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-'));
  fs.chmodSync(dir, 0o700);
  const socketPath = path.join(dir, 'sidecar.sock');
  const env: Record<string, string> = { ...(process.env as Record<string, string>), SHMPIPE_SOCKET: socketPath, SHMPIPE_ADMIN_ADDR: 'off' };
  Object.assign(env, options.env ?? {});
  const child: ChildProcess = spawn(bin, [], { env, stdio: ['ignore', 'ignore', options.stderr === 'inherit' ? 'inherit' : 'pipe'] });
  let tail = '';
  child.stderr?.on('data', (d: Buffer) => {
    tail = (tail + d.toString('utf8')).slice(-8192);
  });
  let ended: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      ended = { code, signal };
      resolve(ended);
    });
    child.once('error', () => {
      ended = { code: null, signal: null };
      resolve(ended);
    });
  });
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });

  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  while (!(fs.existsSync(socketPath) && (await canConnect(socketPath)))) {
    if (ended !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      cleanup();
      const why = ended !== null ? `exited (${JSON.stringify(ended)})` : 'did not listen in time';
      throw new ShmpipeError('SHMPIPE_E_DISCONNECTED', `the private sidecar ${why}: ${tail.trim()}`);
    }
    await sleep(10);
  }

  return {
    pid: child.pid ?? -1,
    socketPath,
    exited,
    stderrTail: () => tail,
    async stop(graceMs = 10_000) {
      if (ended === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      cleanup();
    },
  };
}
