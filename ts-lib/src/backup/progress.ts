/**
 * Progress and the end summary of `shmpipe backup` / `restore`. On a TTY: one line redrawn in
 * place (at most every `intervalMs`) with bytes/s, files and an ETA against the walker's running
 * totals; otherwise (`--json`, pipes, CI): one JSON object per line at the same pace. The
 * formatting is pure so it is testable without a terminal.
 */

import type { SnapshotCounts } from './ops';

export interface ProgressCounts {
  /** Files (and other entries) finished. */
  files: number;
  /** Entries found by the walker so far (`totalKnown` once the walk is over). */
  filesTotal: number;
  bytes: number;
  bytesTotal: number;
  /** Whether the totals are final (the walk finished). */
  totalKnown: boolean;
  errors: number;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${UNITS[u]}`;
}

/** Seconds → "1:02:03" / "2:03". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** The TTY line for `c` after `elapsedS` seconds, at most `width` columns. */
export function progressLine(verb: string, c: ProgressCounts, elapsedS: number, width = 100): string {
  const rate = elapsedS > 0 ? c.bytes / elapsedS : 0;
  const frac = c.bytesTotal > 0 ? Math.min(1, c.bytes / c.bytesTotal) : 0;
  const eta = c.totalKnown && rate > 0 ? `ETA ${formatDuration((c.bytesTotal - c.bytes) / rate)}` : 'ETA --:--';
  const files = `${c.files}${c.totalKnown ? '' : '+'}/${c.filesTotal} files`;
  const tail = ` ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(c.bytes)} ${formatBytes(rate)}/s ${files} ${eta}${c.errors ? ` ${c.errors} errors` : ''}`;
  const barWidth = Math.max(0, Math.min(30, width - tail.length - verb.length - 3));
  const filled = Math.round(frac * barWidth);
  const bar = barWidth > 0 ? ` [${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]` : '';
  return `${verb}${bar}${tail}`.slice(0, width);
}

/** The `--json` progress record. */
export function progressRecord(verb: string, c: ProgressCounts, elapsedS: number): Record<string, unknown> {
  return {
    type: 'progress',
    op: verb,
    elapsed_s: Number(elapsedS.toFixed(3)),
    files: c.files,
    files_total: c.filesTotal,
    bytes: c.bytes,
    bytes_total: c.bytesTotal,
    total_known: c.totalKnown,
    bytes_per_s: elapsedS > 0 ? Math.round(c.bytes / elapsedS) : 0,
    errors: c.errors,
  };
}

export interface ProgressSink {
  isTTY: boolean;
  write(s: string): void;
}

/** Emits progress at most every `intervalMs` (and once more on `end`). */
export class Progress {
  private readonly started = process.hrtime.bigint();
  private last = 0;
  private drawn = false;

  constructor(
    private readonly verb: string,
    private readonly sink: ProgressSink,
    private readonly json: boolean,
    private readonly intervalMs = 250,
  ) {}

  elapsed(): number {
    return Number(process.hrtime.bigint() - this.started) / 1e9;
  }

  update(c: ProgressCounts, force = false): void {
    const now = Date.now();
    if (!force && now - this.last < this.intervalMs) return;
    this.last = now;
    if (this.json) this.sink.write(JSON.stringify(progressRecord(this.verb, c, this.elapsed())) + '\n');
    else if (this.sink.isTTY) {
      this.sink.write(`\r\x1b[2K${progressLine(this.verb, c, this.elapsed())}`);
      this.drawn = true;
    }
  }

  /** Final update; on a TTY ends the redrawn line. */
  end(c: ProgressCounts): void {
    this.update(c, true);
    if (this.drawn) this.sink.write('\n');
  }
}

/** What `shmpipe backup` reports at the end (the commit's counts plus the agent's own). */
export interface BackupSummary extends Omit<SnapshotCounts, 'blobs_added' | 'packs_added'> {
  snapshot: string;
  duration_s: number;
  unreadable: number;
}

export function summaryLines(s: BackupSummary): string[] {
  const rate = s.duration_s > 0 ? s.bytes_read / s.duration_s : 0;
  return [
    `snapshot ${s.snapshot} saved`,
    `files:      ${s.files_new} new, ${s.files_changed} changed, ${s.files_unchanged} unchanged (${s.dirs} dirs, ${s.others} others)`,
    `read:       ${formatBytes(s.bytes_read)}`,
    `added:      ${formatBytes(s.bytes_added)} new data, ${formatBytes(s.bytes_added_packed)} stored (after dedup and compression)`,
    `duration:   ${s.duration_s.toFixed(2)} s, ${formatBytes(rate)}/s (${((rate * 3600) / 1e12).toFixed(2)} TB/h)`,
    ...(s.unreadable > 0 ? [`unreadable: ${s.unreadable} (listed above; not in the snapshot)`] : []),
  ];
}
