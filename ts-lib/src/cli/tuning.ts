/**
 * The tuning flags restic has (`--compression`, `--pack-size`, `--read-concurrency`), each with
 * its `SHMPIPE_*` variable, and what they become for the backup pipeline.
 */

import { UsageError, type CommandContext, type Options } from './command';

const group = 'tuning options';

export const COMPRESSION_LEVELS: Record<string, number | undefined> = { off: 0, auto: undefined, max: 19 };

export const TUNING_OPTIONS: Options = {
  compression: {
    type: 'string',
    value: 'MODE',
    choices: ['off', 'auto', 'max'],
    env: 'SHMPIPE_COMPRESSION',
    group,
    help: "compression of new data: off, auto (the repository's setting, zstd 1 by default) or max (zstd 19: smallest, slowest)",
  },
  'pack-size': { type: 'string', value: 'MIB', env: 'SHMPIPE_PACK_SIZE', group, help: "target size of new pack files in MiB, 1..128 (default: the repository's, 16)" },
  'read-concurrency': { type: 'string', value: 'N', env: 'SHMPIPE_READ_CONCURRENCY', group, help: 'read at most N files at once (default: as many as the slots allow, up to 64)' },
};

function int(ctx: CommandContext, name: string, min: number, max: number): number | undefined {
  const v = ctx.values[name] as string | undefined;
  if (v === undefined) return undefined;
  const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`--${name} needs a whole number in ${min}..${max}, got '${v}'${process.env[`SHMPIPE_${name.toUpperCase().replace(/-/g, '_')}`] === v ? ` (from SHMPIPE_${name.toUpperCase().replace(/-/g, '_')})` : ''}`);
  return n;
}

/** The flags as backup options (undefined: not given). */
export function tuning(ctx: CommandContext): { compressionLevel?: number; packSizeMiB?: number; readConcurrency?: number } {
  const level = COMPRESSION_LEVELS[(ctx.values.compression as string | undefined) ?? 'auto'];
  const pack = int(ctx, 'pack-size', 1, 128);
  const reads = int(ctx, 'read-concurrency', 1, 1024);
  return { ...(level !== undefined ? { compressionLevel: level } : {}), ...(pack !== undefined ? { packSizeMiB: pack } : {}), ...(reads !== undefined ? { readConcurrency: reads } : {}) };
}
