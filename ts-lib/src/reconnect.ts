/**
 * ResilientClient: a Client that survives a sidecar restart (a crash, or a Kubernetes sidecar
 * container coming back after SIGTERM). It owns one Client at a time; when that session ends
 * with SHMPIPE_E_DISCONNECTED or SHMPIPE_E_SHUTTING_DOWN, or with SHMPIPE_E_UNRESPONSIVE (the
 * sidecar stopped making progress: stopped or wedged; the client closed its end, so the sidecar
 * reclaims the session if it ever resumes), it reconnects to the same socket with capped,
 * jittered exponential backoff. Against a sidecar that is still stopped each attempt waits
 * `connectTimeoutMs` for the handshake, then backs off.
 *
 * What happens to calls across a restart:
 * - Idempotent calls — nop, stats, delay, stat, list, delete, putFile (it re-reads the file
 *   and PUT of the same bytes under the same key is idempotent), getFile (temp file + rename,
 *   so a retry never leaves a partial file) — wait for the new session and are re-submitted.
 * - Calls bound to the lost session — anything naming a Slot it granted (echo, put), writers
 *   and read streams (their handles died with it) — reject with SHMPIPE_E_SESSION_LOST: the
 *   outcome is unknown and the slot's bytes are gone; allocate again and redo the work.
 * - alloc() waits for a session and returns a slot of the current one.
 * When reconnecting gives up (`maxAttempts`), pending and later calls reject with
 * SHMPIPE_E_DISCONNECTED. Events: 'disconnected' (error), 'reconnected' (attempts),
 * 'gave-up' (error).
 */

import { EventEmitter } from 'node:events';
import { z } from 'zod';
import { connect, type Client, type EchoResult, type Stats } from './client';
import { ShmpipeError } from './errors';
import type { ConnectOptions } from './options';
import type { Slot } from './slot';
import type { FileOptions, ListEntry, ListOptions, ObjectInfo, PutResult, ReadOptions, ReadResult, ReadStream, Writer } from './store';

const reconnectSchema = z
  .object({
    initialDelayMs: z.number().int().min(1).max(60_000).default(50),
    maxDelayMs: z.number().int().min(1).max(600_000).default(5_000),
    /** Attempts per outage before giving up; 0 = never give up. */
    maxAttempts: z.number().int().min(0).default(0),
  })
  .strict();

export type ReconnectOptions = z.input<typeof reconnectSchema>;

/** Errors that mean "the session is gone, a new one may work". */
const SESSION_ENDED: ReadonlySet<string> = new Set(['SHMPIPE_E_DISCONNECTED', 'SHMPIPE_E_SHUTTING_DOWN', 'SHMPIPE_E_UNRESPONSIVE']);

function sessionLost(what: string, cause: unknown): ShmpipeError {
  return new ShmpipeError('SHMPIPE_E_SESSION_LOST', `${what}: the sidecar session it belonged to ended; its outcome is unknown — allocate again and redo it`, { cause });
}

export class ResilientClient extends EventEmitter {
  private current: Client | null;
  private waiters: { resolve: (c: Client) => void; reject: (e: ShmpipeError) => void }[] = [];
  private readonly slotSession = new WeakMap<Slot, Client>();
  private closing = false;
  private gaveUp: ShmpipeError | null = null;
  private refed = true;
  /** The wait before the next reconnect attempt, while there is one. */
  private backoff: NodeJS.Timeout | null = null;

  private constructor(
    first: Client,
    private readonly options: ConnectOptions,
    private readonly policy: z.output<typeof reconnectSchema>,
  ) {
    super();
    this.current = first;
    this.watch(first);
  }

  /** Connects (the first attempt is not retried: a wrong path should fail fast). */
  static async connect(options: ConnectOptions, reconnect: ReconnectOptions = {}): Promise<ResilientClient> {
    const parsed = reconnectSchema.safeParse(reconnect);
    if (!parsed.success) {
      throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `reconnect options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    }
    return new ResilientClient(await connect(options), options, parsed.data);
  }

  /** The live session, if there is one right now (for diagnostics). */
  get client(): Client | null {
    return this.current;
  }

  private watch(c: Client): void {
    void c.closed.then((err) => {
      if (this.current !== c || this.closing) return;
      this.current = null;
      if (err === undefined || !SESSION_ENDED.has(err.code)) {
        this.giveUp(err ?? new ShmpipeError('SHMPIPE_E_CLOSED', 'the session was closed'));
        return;
      }
      this.emit('disconnected', err);
      void this.reconnectLoop(err);
    });
  }

  private async reconnectLoop(lastError: ShmpipeError): Promise<void> {
    const { initialDelayMs, maxDelayMs, maxAttempts } = this.policy;
    for (let attempt = 1; !this.closing; attempt++) {
      if (maxAttempts > 0 && attempt > maxAttempts) {
        this.giveUp(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `gave up reconnecting after ${maxAttempts} attempts: ${lastError.message}`, { cause: lastError }));
        return;
      }
      const ceiling = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt - 1, 20));
      // Full jitter: many agents restarting against one sidecar do not reconnect in lockstep.
      await new Promise((r) => {
        this.backoff = setTimeout(r, Math.max(1, Math.round(Math.random() * ceiling)));
        // unref()'d and no call waits for a session: retrying must not hold the process.
        if (!this.refed && this.waiters.length === 0) this.backoff.unref();
      });
      this.backoff = null;
      if (this.closing) return;
      try {
        const c = await connect(this.options);
        if (this.closing) {
          await c.close();
          return;
        }
        if (!this.refed) c.unref();
        this.current = c;
        this.watch(c);
        this.emit('reconnected', attempt);
        for (const w of this.waiters.splice(0)) w.resolve(c);
        return;
      } catch (e) {
        lastError = e instanceof ShmpipeError ? e : new ShmpipeError('SHMPIPE_E_DISCONNECTED', String(e), { cause: e });
      }
    }
  }

  private giveUp(err: ShmpipeError): void {
    this.gaveUp = err;
    this.emit('gave-up', err);
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  /** The current session, waiting for a reconnect when there is none. */
  private session(): Promise<Client> {
    if (this.closing) return Promise.reject(new ShmpipeError('SHMPIPE_E_CLOSED', 'the client is closed'));
    if (this.gaveUp) return Promise.reject(this.gaveUp);
    if (this.current) return Promise.resolve(this.current);
    this.backoff?.ref(); // a call waits for the next session now: keep the process up for it
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Runs `f` on the current session; re-runs it on the next one if the session ends. */
  private async idempotent<T>(f: (c: Client) => Promise<T>): Promise<T> {
    for (;;) {
      const c = await this.session();
      try {
        return await f(c);
      } catch (e) {
        if (!(e instanceof ShmpipeError) || !SESSION_ENDED.has(e.code) || this.closing) throw e;
        // The session ended under the call. Wait until it has fully stopped: `watch`'s handler
        // on `closed` (registered first, so it runs first) then clears `current` and starts
        // reconnecting, and `session()` waits for the next one.
        await c.closed;
      }
    }
  }

  /** Runs `f` on the session that owns `slot`; a lost session is reported, never retried. */
  private async bound<T>(slot: Slot, what: string, f: (c: Client) => Promise<T>): Promise<T> {
    const owner = this.slotSession.get(slot);
    if (owner === undefined) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `${what}: the slot was not allocated by this client`);
    if (owner !== this.current) throw sessionLost(what, undefined);
    try {
      return await f(owner);
    } catch (e) {
      if (e instanceof ShmpipeError && SESSION_ENDED.has(e.code) && !this.closing) throw sessionLost(what, e);
      throw e;
    }
  }

  async alloc(): Promise<Slot> {
    return this.idempotent(async (c) => {
      const slot = await c.alloc();
      this.slotSession.set(slot, c);
      return slot;
    });
  }

  nop(): Promise<void> {
    return this.idempotent((c) => c.nop());
  }

  stats(): Promise<Stats> {
    return this.idempotent((c) => c.stats());
  }

  delay(us: number): Promise<number> {
    return this.idempotent((c) => c.delay(us));
  }

  stat(key: string): Promise<ObjectInfo> {
    return this.idempotent((c) => c.stat(key));
  }

  delete(key: string): Promise<void> {
    return this.idempotent((c) => c.delete(key));
  }

  /** Collects the listing, restarting it from the beginning if the session ends midway. */
  list(prefix = '', options?: ListOptions): Promise<ListEntry[]> {
    return this.idempotent(async (c) => {
      const out: ListEntry[] = [];
      for await (const e of c.list(prefix, options)) out.push(e);
      return out;
    });
  }

  putFile(path: string, key: string, options?: FileOptions): Promise<PutResult> {
    return this.idempotent((c) => c.putFile(path, key, options));
  }

  getFile(key: string, path: string, options?: FileOptions): Promise<ReadResult> {
    return this.idempotent((c) => c.getFile(key, path, options));
  }

  echo(slot: Slot, length: number, offset = 0): Promise<EchoResult> {
    return this.bound(slot, 'echo', (c) => c.echo(slot, length, offset));
  }

  put(key: string, slot: Slot, length: number, offset = 0): Promise<PutResult> {
    return this.bound(slot, 'put', (c) => c.put(key, slot, length, offset));
  }

  /** A writer belongs to one session: if it ends, the writer's calls reject (SESSION_LOST is
   * reported by the writer as SHMPIPE_E_DISCONNECTED; redo the whole upload). */
  async openWrite(key: string): Promise<Writer> {
    return (await this.session()).openWrite(key);
  }

  /** A read stream belongs to one session (see openWrite). */
  async openRead(key: string, options?: ReadOptions): Promise<ReadStream> {
    return (await this.session()).openRead(key, options);
  }

  /**
   * Like Client#unref() for every session of this client: the process may exit while it is open
   * with nothing pending (also while it waits to reconnect with no call waiting). Returns it.
   */
  unref(): this {
    this.refed = false;
    this.current?.unref();
    return this;
  }

  /** Undoes unref() (the default: an open client keeps the process alive). */
  ref(): this {
    this.refed = true;
    this.current?.ref();
    return this;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const err = new ShmpipeError('SHMPIPE_E_CLOSED', 'the client is closed');
    for (const w of this.waiters.splice(0)) w.reject(err);
    const c = this.current;
    this.current = null;
    await c?.close();
  }
}

/** connect() with automatic reconnection; see ResilientClient. */
export function connectResilient(options: ConnectOptions, reconnect?: ReconnectOptions): Promise<ResilientClient> {
  return ResilientClient.connect(options, reconnect);
}
