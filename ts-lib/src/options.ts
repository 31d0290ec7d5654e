/**
 * connect() options: the zod schema (strict: unknown keys are errors), defaults, and the
 * translation of validation failures into one SHMPIPE_E_INVALID_ARGUMENT ShmpipeError whose
 * message names every bad option.
 */

import { z } from 'zod';
import { ShmpipeError } from './errors';
import { MAX_RING_CAPACITY, MAX_SLOT_COUNT, MAX_SLOT_SIZE, MIN_RING_CAPACITY, PAGE_SIZE } from './protocol';

/** The smallest unresponsiveMs: twice the heartbeat's period bound (SPEC §3). */
const MIN_UNRESPONSIVE_MS = 200;

/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

const int = (what: string) => z.number({ message: `${what} must be a number` }).int({ message: `${what} must be an integer` });

const ringCapacity = (name: string) =>
  int(name)
    .min(MIN_RING_CAPACITY, { message: `${name} must be at least ${MIN_RING_CAPACITY}` })
    .max(MAX_RING_CAPACITY, { message: `${name} must be at most ${MAX_RING_CAPACITY}` })
    .refine((n) => (n & (n - 1)) === 0, { message: `${name} must be a power of two` });

export const optionsSchema = z
  .object({
    socketPath: z
      .string({
        error: (iss) => (iss.input === undefined ? 'socketPath is required' : 'socketPath must be a string (the sidecar socket path)'),
      })
      .min(1, { message: 'socketPath must not be empty' })
      .refine((s) => !s.includes('\0'), { message: 'socketPath must not contain NUL bytes' })
      .refine((s) => Buffer.byteLength(s) <= MAX_SOCKET_PATH_BYTES, {
        message: `socketPath must be at most ${MAX_SOCKET_PATH_BYTES} bytes (a Unix socket path limit)`,
      }),
    slotCount: int('slotCount')
      .min(1, { message: 'slotCount must be at least 1' })
      .max(MAX_SLOT_COUNT, { message: `slotCount must be at most ${MAX_SLOT_COUNT}` })
      .default(64),
    slotSize: int('slotSize')
      .min(PAGE_SIZE, { message: `slotSize must be at least ${PAGE_SIZE}` })
      .max(MAX_SLOT_SIZE, { message: `slotSize must be at most ${MAX_SLOT_SIZE} (1 GiB)` })
      .refine((n) => n % PAGE_SIZE === 0, { message: `slotSize must be a multiple of ${PAGE_SIZE}` })
      .default(1 << 20),
    sqCapacity: ringCapacity('sqCapacity').default(1024),
    cqCapacity: ringCapacity('cqCapacity').default(1024),
    maxQueued: int('maxQueued')
      .min(0, { message: 'maxQueued must not be negative' })
      .max(2 ** 31 - 1, { message: 'maxQueued must be below 2^31' })
      .default(1_000_000),
    clientName: z
      .string({ message: 'clientName must be a string' })
      .max(256, { message: 'clientName must be at most 256 characters' })
      .optional(),
    connectTimeoutMs: int('connectTimeoutMs')
      .min(1, { message: 'connectTimeoutMs must be at least 1' })
      .max(2 ** 31 - 1, { message: 'connectTimeoutMs must be below 2^31' })
      .default(5000),
    // While calls are pending and the sidecar's heartbeat (SPEC §3: at least every 100 ms) does
    // not move for this long, every pending call rejects with SHMPIPE_E_UNRESPONSIVE and the
    // client closes. 0 turns it off.
    unresponsiveMs: int('unresponsiveMs')
      .min(0, { message: 'unresponsiveMs must not be negative' })
      .max(2 ** 31 - 1, { message: 'unresponsiveMs must be below 2^31' })
      .refine((n) => n === 0 || n >= MIN_UNRESPONSIVE_MS, {
        message: `unresponsiveMs must be 0 (off) or at least ${MIN_UNRESPONSIVE_MS} (the heartbeat moves every 100 ms)`,
      })
      .default(5000),
  })
  .strict();

export type ConnectOptions = z.input<typeof optionsSchema>;
export type ResolvedOptions = z.output<typeof optionsSchema>;

export function parseOptions(input: unknown): ResolvedOptions {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'connect(options): options must be an object with at least socketPath');
  }
  const r = optionsSchema.safeParse(input);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    if (i.code === 'unrecognized_keys') return `unknown option(s): ${i.keys.join(', ')}`;
    return i.message;
  });
  throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `connect(options): ${problems.join('; ')}`);
}
