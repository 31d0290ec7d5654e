/**
 * `shmpipe version`: the CLI's version, the sidecar's (`shmpipe-sidecar --version` of the binary
 * a private sidecar would run), and — when a repository is named (`--repo`, SHMPIPE_REPO) and
 * reachable — its format version, read from its config object (plain JSON: no password needed).
 */

import { execFileSync } from 'node:child_process';
import { resolveRepo } from '../../backup/credentials';
import { findSidecarBinary } from '../../sidecar-process';
import { UsageError, type Command } from '../command';
import { openSession } from '../session';

/** The sidecar binary's version, or null (not found, or it failed). */
function sidecarVersion(): string | null {
  try {
    const out = execFileSync(findSidecarBinary(), ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
    return out.trim().replace(/^shmpipe-sidecar\s+/, '');
  } catch {
    return null;
  }
}

/** The `version` field of the repository's config, or null when it cannot be read. */
async function repositoryFormat(url: string, verbose: boolean): Promise<number | null> {
  let s;
  try {
    s = await openSession({ verbose, sidecarEnv: { SHMPIPE_STORE: url } });
  } catch {
    return null;
  }
  try {
    const parts: Buffer[] = [];
    for await (const ch of s.client.openRead('config')) parts.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
    const v = (JSON.parse(Buffer.concat(parts).toString('utf8')) as { version?: unknown }).version;
    return typeof v === 'number' ? v : null;
  } catch {
    return null;
  } finally {
    await s.close().catch(() => {});
  }
}

export const version: Command = {
  name: 'version',
  summary: 'print the versions of the CLI, the sidecar and the repository format',
  description: 'The repository format is read from the repository named by --repo or SHMPIPE_REPO (only its plain config object: no password is asked); without one it is left out.',
  options: {
    repo: { type: 'string', short: 'r', value: 'URL', complete: 'dir', help: 'also show the format version of this repository (default: SHMPIPE_REPO, if set)' },
  },
  async run(ctx) {
    if (ctx.positionals.length > 0) throw new UsageError(`unexpected argument '${ctx.positionals[0]}'`);
    const flag = (ctx.values.repo as string | undefined) ?? process.env.SHMPIPE_REPO;
    const url = flag !== undefined && flag !== '' ? resolveRepo(flag) : null;
    const doc = {
      version: ctx.program.version,
      sidecar: sidecarVersion(),
      repository: url,
      repository_format: url !== null ? await repositoryFormat(url, ctx.global.verbose) : null,
      node: process.version,
      platform: `${process.platform}/${process.arch}`,
    };
    if (ctx.global.json) {
      ctx.out(JSON.stringify({ type: 'version', ...doc }));
      return 0;
    }
    ctx.out(`${ctx.program.name} ${doc.version} (node ${doc.node}, ${doc.platform})`);
    ctx.out(`sidecar ${doc.sidecar ?? '(not found)'}`);
    if (url !== null) ctx.out(`repository ${url}: ${doc.repository_format !== null ? `format version ${doc.repository_format}` : 'not readable (no repository there?)'}`);
    return 0;
  },
};
