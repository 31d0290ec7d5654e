/**
 * How a CLI command reaches a sidecar: the running one named by `--sidecar` or
 * `SHMPIPE_SIDECAR_SOCKET` (as in Kubernetes), else a private one started for this command and
 * stopped (drained) when it ends.
 */

import { connect, type Client } from '../client';
import { startSidecar, type SidecarProcess } from '../sidecar-process';

export interface SessionOptions {
  sidecar?: string | undefined;
  verbose?: boolean;
  /** Environment for a private sidecar (e.g. SHMPIPE_STORE). Ignored for a running one. */
  sidecarEnv?: Record<string, string>;
  slotCount?: number;
  slotSize?: number;
}

export interface CliSession {
  client: Client;
  /** The private sidecar, when this command started one. */
  own: SidecarProcess | null;
  close(): Promise<void>;
}

export async function openSession(o: SessionOptions): Promise<CliSession> {
  const named = o.sidecar || process.env.SHMPIPE_SIDECAR_SOCKET || undefined;
  const own = named ? null : await startSidecar({ env: o.sidecarEnv ?? {}, stderr: o.verbose ? 'inherit' : 'capture' });
  const socketPath = named ?? own!.socketPath;
  let client: Client;
  try {
    client = await connect({
      socketPath,
      clientName: `shmpipe-cli-${process.pid}`,
      ...(o.slotCount !== undefined ? { slotCount: o.slotCount } : {}),
      ...(o.slotSize !== undefined ? { slotSize: o.slotSize } : {}),
    });
  } catch (e) {
    await own?.stop();
    throw e;
  }
  return {
    client,
    own,
    async close() {
      await client.close();
      await own?.stop();
    },
  };
}
