/**
 * The unresponsive-sidecar watchdog. The sidecar's dispatcher advances `sidecar_heartbeat` in
 * the segment header at least every 100 ms while the session is alive (SPEC §3), whether or not
 * it has work. While calls are pending, the client reads that counter on a timer; when it has not
 * moved for `unresponsiveMs`, the sidecar is stopped or wedged (SIGSTOP, a stuck dispatcher, a
 * frozen container) — which control-socket EOF cannot tell, since the process still exists — and
 * the client gives up on it: every pending call rejects with SHMPIPE_E_UNRESPONSIVE.
 *
 * Cheap by construction: one Atomics.load of a header word per check, a check every
 * `unresponsiveMs / 8`, and no timer at all while nothing is pending, so an idle client neither
 * wakes the sidecar (a load wakes nobody) nor keeps a timer running. Silence is counted per
 * check, at most two periods per check: a check that comes much later than planned (this
 * process was stopped with the sidecar, the machine was suspended, the event loop blocked)
 * cannot by itself blame the sidecar, while checks that are merely late under load still add up.
 *
 * While armed, its timer also keeps the event loop alive: an unref()'d client relies on that to
 * stay up while calls are pending (client.ts).
 */

import { HEADER } from './protocol';

/** How often the timer fires while something is pending, as a fraction of the deadline. */
const CHECKS_PER_DEADLINE = 8;
/** With the deadline off, the timer only keeps the loop alive: fire rarely. */
const KEEPALIVE_MS = 60_000;

export class Watchdog {
  private timer: NodeJS.Timeout | null = null;
  private readonly period: number;
  private lastBeat = 0n;
  /** How long the heartbeat has stood still, as counted (ms). */
  private silent = 0;
  private lastCheck = 0;
  /** Whether the timer must exist while nothing is watched (deadline 0): an unref()'d client. */
  private keepAlive = false;

  /**
   * @param deadlineMs 0: never give up (the timer then only keeps an unref'd client alive)
   * @param busy whether calls are pending
   * @param onUnresponsive called once, with the silent time, when the deadline passed
   */
  constructor(
    private readonly b64: BigUint64Array,
    readonly deadlineMs: number,
    private readonly busy: () => boolean,
    private readonly onUnresponsive: (silentMs: number) => void,
  ) {
    this.period = deadlineMs > 0 ? Math.max(10, Math.floor(deadlineMs / CHECKS_PER_DEADLINE)) : KEEPALIVE_MS;
  }

  /** Calls became pending: start watching unless already watching. */
  arm(): void {
    if (this.timer !== null || (this.deadlineMs === 0 && !this.keepAlive)) return;
    this.restartClock(performance.now());
    this.timer = setTimeout(this.check, this.period);
  }

  /** Stops watching (nothing pending any more, or the client ended). */
  stop(): void {
    if (this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** With the deadline off, whether a timer must still run while calls are pending. */
  setKeepAlive(on: boolean): void {
    this.keepAlive = on;
    if (this.deadlineMs > 0) return;
    if (!on) this.stop();
    else if (this.busy()) this.arm();
  }

  private restartClock(now: number): void {
    this.lastBeat = Atomics.load(this.b64, HEADER.sidecar_heartbeat / 8);
    this.silent = 0;
    this.lastCheck = now;
  }

  private readonly check = (): void => {
    const timer = this.timer;
    if (timer === null) return;
    if (!this.busy()) {
      this.timer = null; // idle: nothing to watch, nothing to keep alive
      return;
    }
    if (this.deadlineMs > 0) {
      const now = performance.now();
      const gap = now - this.lastCheck;
      this.lastCheck = now;
      // Relaxed on the sidecar's side: only a change matters, any load sees one eventually.
      const beat = Atomics.load(this.b64, HEADER.sidecar_heartbeat / 8);
      if (beat !== this.lastBeat) {
        this.lastBeat = beat;
        this.silent = 0;
      } else {
        this.silent += Math.min(gap, 2 * this.period);
        if (this.silent >= this.deadlineMs) {
          this.timer = null;
          this.onUnresponsive(Math.round(this.silent));
          return;
        }
      }
    }
    timer.refresh();
  };
}
