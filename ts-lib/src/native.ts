/**
 * The one module that loads the native addon (ts-lib/build/shmpipe_addon.node). Every wrapper
 * validates its arguments before the native call, so the C++ side never sees a bad value, and
 * turns native exceptions into ShmpipeError. Nothing else in ts-lib touches the addon.
 */

import * as path from 'node:path';
import { errorFromNative, ShmpipeError } from './errors';

interface Addon {
  connect(socketPath: string, frame: Buffer, timeoutMs: number): Promise<{ sock: number; reply: string; fds: number[] }>;
  map(fd: number, size: number, populate?: number): ArrayBuffer;
  watch(fd: number, callback: (err: Error | null) => void): object;
  unwatch(handle: object): void;
  watchRef(handle: object, ref: boolean): void;
  ring(fd: number): void;
  close(fd: number): void;
  setTimes(target: number | Buffer, seconds: number, nanoseconds: number, noFollow: boolean): void;
  noop(): void;
}

/** The handle watch() returns; opaque to JS. */
export type WatchHandle = { readonly __brand: 'WatchHandle' };

// Resolved at run time relative to this file: dist/index.js (the bundle) and src/*.ts both sit
// one level below ts-lib/, beside build/.
const ADDON_PATH = path.join(__dirname, '..', 'build', 'shmpipe_addon.node');

let addon: Addon | undefined;
function load(): Addon {
  if (addon === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      addon = require(ADDON_PATH) as Addon;
    } catch (e) {
      throw new ShmpipeError('SHMPIPE_E_INTERNAL', `cannot load the shmpipe addon at ${ADDON_PATH} (run npm run build:addon)`, { cause: e });
    }
  }
  return addon;
}

const isFd = (fd: unknown): fd is number => Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) < 2 ** 31;

function assertFd(fd: unknown, what: string): asserts fd is number {
  if (!isFd(fd)) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `${what}: ${String(fd)} is not a file descriptor`);
}

export interface Connected {
  sock: number;
  reply: string;
  fds: number[];
}

/**
 * Connects to the control socket, sends `frame` (already length-prefixed) and receives one
 * reply frame with its file descriptors. Runs on the libuv thread pool.
 */
export async function connect(socketPath: string, frame: Buffer, timeoutMs: number): Promise<Connected> {
  if (typeof socketPath !== 'string' || socketPath.length === 0 || !Buffer.isBuffer(frame) || !Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'native.connect: bad arguments');
  }
  const a = load();
  try {
    return await a.connect(socketPath, frame, timeoutMs);
  } catch (e) {
    throw errorFromNative(e, `connect to ${socketPath}`);
  }
}

/**
 * Maps `size` bytes of `fd` read/write and shared; the memory lives until the buffer is
 * collected. The first `populate` bytes (default: all) are faulted in now; the rest on first use.
 */
export function map(fd: number, size: number, populate = size): ArrayBuffer {
  assertFd(fd, 'map');
  if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) {
    throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `map: size ${size} is not a positive multiple of 4096`);
  }
  if (!Number.isSafeInteger(populate) || populate < 0 || populate > size) {
    throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `map: populate ${populate} is not in 0..${size}`);
  }
  try {
    return load().map(fd, size, populate);
  } catch (e) {
    throw errorFromNative(e, 'map the segment');
  }
}

/** Calls `callback` on the event loop whenever the eventfd `fd` becomes readable (and resets it). */
export function watch(fd: number, callback: (err: Error | null) => void): WatchHandle {
  assertFd(fd, 'watch');
  if (typeof callback !== 'function') throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'watch: callback must be a function');
  try {
    return load().watch(fd, callback) as WatchHandle;
  } catch (e) {
    throw errorFromNative(e, 'watch the doorbell');
  }
}

export function unwatch(handle: WatchHandle): void {
  if (handle === null || typeof handle !== 'object') throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'unwatch: bad handle');
  load().unwatch(handle);
}

/** Whether the watcher keeps the event loop (the process, the worker) alive; it does at first. */
export function watchRef(handle: WatchHandle, ref: boolean): void {
  if (handle === null || typeof handle !== 'object' || typeof ref !== 'boolean') throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'watchRef: bad arguments');
  load().watchRef(handle, ref);
}

/** Rings an eventfd doorbell (adds 1). */
export function ring(fd: number): void {
  // Hot path: fds are validated once at connect; this only guards against corruption.
  if (!isFd(fd)) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `ring: ${String(fd)} is not a file descriptor`);
  try {
    load().ring(fd);
  } catch (e) {
    throw errorFromNative(e, 'ring the doorbell');
  }
}

export function close(fd: number): void {
  assertFd(fd, 'close');
  try {
    load().close(fd);
  } catch (e) {
    throw errorFromNative(e, 'close');
  }
}

/** Nanoseconds per second. */
const NS = 1_000_000_000n;

/**
 * Sets the access and modification time of an open file (`fd`) or a path (bytes; `noFollow`:
 * of a symlink itself) to `ns` nanoseconds since the epoch, exactly (negative: before 1970).
 * A failure is thrown like a node:fs error (`code` = errno name, `syscall`, `errno`).
 */
export function setTimes(target: number | Buffer, ns: bigint, noFollow = false): void {
  if (typeof target === 'number') assertFd(target, 'setTimes');
  else if (!Buffer.isBuffer(target) || target.length === 0 || target.includes(0)) {
    throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'setTimes: the path must be a non-empty Buffer without NUL bytes');
  }
  if (typeof ns !== 'bigint' || ns < -(2n ** 63n) || ns >= 2n ** 63n) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `setTimes: ${String(ns)} is not an i64 of nanoseconds`);
  if (typeof noFollow !== 'boolean') throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'setTimes: noFollow must be a boolean');
  // Floor division, so the nanosecond part is 0..1e9 also before 1970.
  let sec = ns / NS;
  let nsec = ns % NS;
  if (nsec < 0n) {
    sec -= 1n;
    nsec += NS;
  }
  load().setTimes(target, Number(sec), Number(nsec), noFollow);
}

/** An empty native call, for measuring the Node-API call cost (perf/). */
export function noop(): void {
  load().noop();
}

/** The *at() file-system calls of fsops.cc, untyped: ts-lib/src/backup/fsops.ts types and
 * validates them (restore and backup are their only users). */
export function fsAddon(): unknown {
  return (load() as unknown as { fs: unknown }).fs;
}
