#!/usr/bin/env node
// perf:soak — runs the real sidecar (file:// store) under a mixed load for `--minutes` and
// watches it for leaks and lost data:
// - `--clients` clients (default 6) against a sidecar that admits `--max-clients` sessions
//   (default 4). Two keep one resilient session (connectResilient) the whole run and do
//   idempotent store work with files (putFile, getFile, stat, list, delete). The others churn:
//   connect, do a batch (put and get from slots, list, stat, delete; every few batches a backup
//   of a small tree of their own and a restore of it), disconnect — so more clients want a
//   session than the sidecar admits: the one over the limit gets SHMPIPE_E_BUSY, counted, and
//   succeeds once another leaves.
// - The sidecar is restarted twice: SIGTERM (a graceful drain, as Kubernetes does) at a quarter
//   of the run and SIGKILL (a crash) at half of it, on the same socket and store. The
//   resilient clients reconnect by themselves; a churning client's batch cut short by a
//   restart is redone. Errors of a session that ended under a restart are expected; any other
//   error is counted in `errors`.
// - Every second: the sidecar's RSS, threads, open fds and the session segments it maps
//   (/proc/PID/maps), with the sessions open at that moment. An SVG plot of them goes to
//   perf/out/.
// - Every byte stored is verified: each object when read back in its batch, and at the end
//   every object that should exist (read whole and compared); each backup by restoring it
//   and comparing every file. `lost_bytes`: bytes of objects missing or different at the end.
// Last line: {minutes, ops, errors, clients_max, sidecar_restarts, rss_growth_pct,
// threads_growth, fds_growth, segments_leaked, lost_bytes, …}. rss_growth_pct compares the
// median RSS of the first and the last fifth of the time after the last restart's warm-up;
// threads_growth and fds_growth compare the idle sidecar at the start with the idle sidecar
// at the end (every client gone, idle blocking threads expired); segments_leaked counts what
// any sidecar still maps or what /dev/shm still names once every client is gone.
// Targets (issue 16): 0 errors, 0 growth in threads, fds and segments, RSS growth < 5 % over
// 30 minutes, 0 lost bytes. Needs `npm run build` first. Measures, never asserts.
//
//   npm run perf:soak -- --minutes 30 [--clients 6] [--max-clients 4] [--dir DIR] [--keep]
'use strict';

const crypto = require('node:crypto');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const root = path.resolve(__dirname, '..');
const { connectResilient } = require(path.join(root, 'ts-lib', 'dist', 'index.js'));
const B = require(path.join(root, 'ts-lib', 'dist', 'backup.js'));
const { sidecarBin } = require('./lib/sidecar');
const { prng } = require('./lib/prng');

const { values: opt } = parseArgs({
  options: {
    minutes: { type: 'string', default: '2' },
    clients: { type: 'string', default: '6' },
    'max-clients': { type: 'string', default: '4' },
    dir: { type: 'string', default: os.tmpdir() },
    keep: { type: 'boolean', default: false },
  },
});
const MINUTES = Number(opt.minutes);
const CLIENTS = Number(opt.clients);
const MAX_CLIENTS = Number(opt['max-clients']);
if (!(MINUTES > 0) || !(CLIENTS >= 3) || !(MAX_CLIENTS >= 2) || CLIENTS <= MAX_CLIENTS) {
  console.error('usage: perf/soak.js --minutes N (> 0) [--clients C (>= 3)] [--max-clients K (2 <= K < C)]');
  process.exit(2);
}
const RESILIENT = 2;
const KiB = 1024;
const MiB = 1024 * 1024;
const PASSWORD = 'soak';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

// ---- the sidecar -------------------------------------------------------------------------------

const work = fs.mkdtempSync(path.join(opt.dir, 'shmpipe-soak-'));
const socketPath = path.join(work, 'sidecar.sock');
const storeDir = path.join(work, 'store');
const pids = [];
let sidecar = null;
let sidecarGeneration = 0;
let restarting = false;

function canConnect() {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

async function startSidecar() {
  const proc = spawn(sidecarBin, [], {
    env: {
      PATH: process.env.PATH,
      SHMPIPE_SOCKET: socketPath,
      SHMPIPE_STORE: `file://${storeDir}`,
      SHMPIPE_MAX_CLIENTS: String(MAX_CLIENTS),
      SHMPIPE_ADMIN_ADDR: 'off',
      SHMPIPE_LOG: 'warn',
      SHMPIPE_SHUTDOWN_GRACE: '5',
      // The soak's repository uses a 1 MiB KDF, below the floor a real init enforces.
      SHMPIPE_TEST_ALLOW_WEAK_KDF: '1',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`the sidecar exited at start: ${proc.exitCode}`);
    if (await canConnect()) break;
    if (i > 1500) throw new Error('the sidecar did not listen within 30 s');
    await sleep(20);
  }
  pids.push(proc.pid);
  sidecarGeneration++;
  return { proc, pid: proc.pid, exited };
}

async function restart(signal) {
  restarting = true;
  const old = sidecar;
  old.proc.kill(signal);
  await old.exited;
  sidecar = await startSidecar();
  restarting = false;
}

// ---- what the sidecar holds (/proc) ------------------------------------------------------------

/** A session segment as /proc/PID/maps names it (POSIX shm, a SHMPIPE_SEGMENT_DIR file, a memfd). */
const SEGMENT_NAME = /(\/shmpipe-\d+-[0-9a-f]+|\/memfd:shmpipe[^/]*)( \(deleted\))?$/;

function readProc(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)[1]) * KiB;
    const threads = fs.readdirSync(`/proc/${pid}/task`).length;
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    const inodes = new Set();
    for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 6 && SEGMENT_NAME.test(f.slice(5).join(' '))) inodes.add(f[4]);
    }
    return { rss, threads, fds, segments: inodes.size };
  } catch {
    return null; // exited meanwhile (a restart)
  }
}

/** Segment names any of our sidecars left in /dev/shm. */
function shmNames() {
  return fs.readdirSync('/dev/shm').filter((n) => pids.some((p) => n.startsWith(`shmpipe-${p}-`)));
}

// ---- counters ----------------------------------------------------------------------------------

const counts = { ops: 0, busy: 0, expected: 0, errors: 0, backups: 0, restores: 0, bytesPut: 0, bytesGot: 0 };
const errorSamples = [];
let sessions = 0;
let sessionsMax = 0;

function unexpected(where, e) {
  counts.errors++;
  if (errorSamples.length < 20) errorSamples.push(`${where}: ${e && e.code ? `${e.code}: ` : ''}${e && e.message ? e.message : String(e)}`);
}

/** Whether an error is what a restart does to work in flight (it started in another generation). */
const SESSION_ENDED = new Set(['SHMPIPE_E_DISCONNECTED', 'SHMPIPE_E_SHUTTING_DOWN', 'SHMPIPE_E_SESSION_LOST', 'SHMPIPE_E_CANCELLED']);
function restartCasualty(e, generation) {
  return e && SESSION_ENDED.has(e.code) && (restarting || generation !== sidecarGeneration);
}

// ---- the data: every object is a function of its key, so it can be checked anywhere ----------

/** The bytes of object `key` (size and content from the key's hash). */
function objectBytes(key, maxSize) {
  const h = crypto.createHash('sha256').update(key).digest();
  const size = h.readUInt32LE(0) % (maxSize + 1);
  const rand = prng(h.readUInt32LE(4));
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i + 4 <= size; i += 4) b.writeUInt32LE((rand() * 2 ** 32) >>> 0, i);
  for (let i = size - (size % 4); i < size; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** Objects that should exist at the end: key -> sha256 and size. */
const live = new Map();

// ---- clients -----------------------------------------------------------------------------------

const deadline = Date.now() + MINUTES * 60_000;
const running = () => Date.now() < deadline;

/** A churning client: connect (waiting for a place), a batch, disconnect; repeat. */
async function churner(id) {
  const dir = path.join(work, `client-${id}`);
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(tree, { recursive: true });
  let n = 0;
  let treeRound = 0;
  let busyWait = 10;
  while (running()) {
    const generation = sidecarGeneration;
    let c;
    try {
      // From the backup bundle: its ops take slots of a client built alongside them.
      c = await B.connect({ socketPath, slotCount: 16, slotSize: 256 * KiB, clientName: `soak-churn-${id}`, connectTimeoutMs: 10_000 });
    } catch (e) {
      if (e.code === 'SHMPIPE_E_BUSY') {
        // Over the session limit: a clear refusal; wait for another client to leave.
        if (!/too many clients/.test(e.message)) unexpected(`churner ${id} connect`, e);
        counts.busy++;
        await sleep(busyWait * (0.5 + Math.random()));
        busyWait = Math.min(busyWait * 2, 400);
      } else if (restarting || generation !== sidecarGeneration || e.code === 'SHMPIPE_E_DISCONNECTED') {
        // Refused while the sidecar restarts (no socket, or one about to close).
        if (!(restarting || generation !== sidecarGeneration)) unexpected(`churner ${id} connect`, e);
        else counts.expected++;
        await sleep(50);
      } else {
        unexpected(`churner ${id} connect`, e);
        await sleep(100);
      }
      continue;
    }
    busyWait = 10;
    sessions++;
    sessionsMax = Math.max(sessionsMax, sessions);
    const pending = new Map(); // keys written in this batch, recorded as live only when confirmed
    try {
      for (let k = 0; k < 8 && running(); k++, n++) {
        const key = `soak/churn-${id}/${n}`;
        const data = objectBytes(key, 200 * KiB);
        const s = await c.alloc();
        data.copy(s.buffer);
        pending.set(key, data);
        await c.put(key, s, data.length);
        counts.ops++;
        counts.bytesPut += data.length;
        live.set(key, { sha: sha256(data), size: data.length });
        pending.delete(key);
        const parts = [];
        for await (const ch of c.openRead(key)) parts.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
        const got = Buffer.concat(parts);
        counts.ops++;
        counts.bytesGot += got.length;
        if (!got.equals(data)) unexpected(`churner ${id} get ${key}`, new Error(`read back ${got.length} bytes differing from the ${data.length} put`));
        const st = await c.stat(key);
        counts.ops++;
        if (st.size !== data.length) unexpected(`churner ${id} stat ${key}`, new Error(`size ${st.size}, put ${data.length}`));
        if (n % 3 === 2) {
          // Delete the oldest object of this client still listed.
          const keys = [];
          for await (const e of c.list(`soak/churn-${id}`)) keys.push(e.key);
          counts.ops++;
          const old = keys.filter((x) => x !== key).sort((a, b) => Number(a.split('/').pop()) - Number(b.split('/').pop()))[0];
          if (old !== undefined) {
            await c.delete(old);
            live.delete(old);
            counts.ops++;
          }
        }
      }
      if (treeRound++ % 4 === 0 && running()) {
        await backupAndRestore(c, id, tree, dir, treeRound);
      }
    } catch (e) {
      for (const k of pending.keys()) live.delete(k); // unknown outcome: not counted as stored
      if (restartCasualty(e, generation)) counts.expected++;
      else unexpected(`churner ${id}`, e);
    } finally {
      sessions--;
      await c.close().catch(() => {});
    }
  }
}

/** Changes a few files of the client's tree, backs it up, restores it, compares every file. */
async function backupAndRestore(c, id, tree, dir, round) {
  const rand = prng(id * 1000 + round);
  for (let i = 0; i < 12; i++) {
    const f = path.join(tree, `f${i}`);
    if (!fs.existsSync(f) || rand() < 0.3) fs.writeFileSync(f, objectBytes(`tree-${id}-${round}-${i}`, 96 * KiB));
  }
  const repo = await B.ops.repoOpen(c, PASSWORD);
  try {
    const b = await B.runBackup(c, repo, { paths: [tree], host: `soak-${id}` });
    counts.backups++;
    counts.ops++;
    const target = path.join(dir, `restore-${round}`);
    const r = await B.runRestore(c, repo, { snapshot: b.commit.id, target });
    counts.restores++;
    counts.ops++;
    if (r.failed !== 0) unexpected(`churner ${id} restore`, new Error(`${r.failed} files failed`));
    for (const name of fs.readdirSync(tree)) {
      const want = fs.readFileSync(path.join(tree, name));
      const got = path.join(target, 'tree', name);
      if (!fs.existsSync(got) || !fs.readFileSync(got).equals(want)) unexpected(`churner ${id} restore`, new Error(`${name} differs after restore`));
    }
    fs.rmSync(target, { recursive: true, force: true });
  } finally {
    await B.ops.close(c, repo).catch(() => {});
  }
}

/** A resilient client: one session the whole run (reconnecting after restarts), files in and out. */
async function resilient(id) {
  const dir = path.join(work, `resilient-${id}`);
  fs.mkdirSync(dir, { recursive: true });
  let c;
  for (;;) {
    try {
      c = await connectResilient({ socketPath, slotCount: 16, slotSize: 1 * MiB, clientName: `soak-resilient-${id}` }, { initialDelayMs: 20, maxDelayMs: 500 });
      break;
    } catch (e) {
      if (e.code !== 'SHMPIPE_E_BUSY') throw e;
      counts.busy++;
      await sleep(20);
    }
  }
  let reconnects = 0;
  c.on('reconnected', () => reconnects++);
  sessions++;
  sessionsMax = Math.max(sessionsMax, sessions);
  let n = 0;
  try {
    while (running()) {
      const key = `soak/resilient-${id}/${n++}`;
      const data = objectBytes(key, 3 * MiB);
      const src = path.join(dir, 'up');
      const down = path.join(dir, 'down');
      fs.writeFileSync(src, data);
      try {
        await c.putFile(src, key);
        counts.ops++;
        counts.bytesPut += data.length;
        live.set(key, { sha: sha256(data), size: data.length });
        await c.getFile(key, down);
        counts.ops++;
        counts.bytesGot += data.length;
        if (!fs.readFileSync(down).equals(data)) unexpected(`resilient ${id} getFile ${key}`, new Error('differs'));
        await c.stat(key);
        counts.ops++;
        if (n % 2 === 0) {
          const keys = (await c.list(`soak/resilient-${id}`)).map((e) => e.key);
          counts.ops++;
          const victim = keys.find((k) => k !== key);
          if (victim) {
            await c.delete(victim);
            live.delete(victim);
            counts.ops++;
          }
        }
      } catch (e) {
        // Resilient calls ride out restarts; anything that still fails is unexpected.
        unexpected(`resilient ${id}`, e);
      }
    }
  } finally {
    sessions--;
    await c.close();
  }
  return reconnects;
}

// ---- sampling and the plot ----------------------------------------------------------------------

const samples = [];
const t0 = Date.now();
const restarts = [];
function sample() {
  if (!sidecar) return;
  const p = readProc(sidecar.pid);
  if (p) samples.push({ t: (Date.now() - t0) / 1000, ...p, sessions, pid: sidecar.pid });
}

function svg(series, marks) {
  const W = 900;
  const H = 170;
  const panels = [
    ['rss', 'RSS (MiB)', (s) => s.rss / MiB],
    ['threads', 'threads', (s) => s.threads],
    ['fds', 'open fds', (s) => s.fds],
    ['segments', 'segments mapped', (s) => s.segments],
    ['sessions', 'sessions', (s) => s.sessions],
  ];
  const tMax = Math.max(1, ...series.map((s) => s.t));
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H * panels.length}" font-family="sans-serif" font-size="12">\n`;
  out += `<rect width="100%" height="100%" fill="white"/>\n`;
  panels.forEach(([, label, f], i) => {
    const y0 = i * H;
    const vals = series.map(f);
    const vMax = Math.max(1, ...vals) * 1.1;
    const x = (t) => 60 + ((W - 80) * t) / tMax;
    const y = (v) => y0 + H - 25 - ((H - 45) * v) / vMax;
    out += `<text x="10" y="${y0 + 15}">${label} (max ${Math.max(0, ...vals).toFixed(label.startsWith('RSS') ? 1 : 0)})</text>\n`;
    out += `<line x1="60" y1="${y(0)}" x2="${W - 20}" y2="${y(0)}" stroke="#999"/>\n`;
    out += `<text x="55" y="${y(vMax / 1.1) + 4}" text-anchor="end">${(vMax / 1.1).toFixed(0)}</text><text x="55" y="${y(0) + 4}" text-anchor="end">0</text>\n`;
    for (const m of marks) out += `<line x1="${x(m.t)}" y1="${y0 + 20}" x2="${x(m.t)}" y2="${y(0)}" stroke="#d33" stroke-dasharray="4 3"/><text x="${x(m.t) + 3}" y="${y0 + 30}" fill="#d33">${m.label}</text>\n`;
    // One polyline per sidecar process (a restart starts a new line).
    const byPid = new Map();
    series.forEach((s, k) => {
      if (!byPid.has(s.pid)) byPid.set(s.pid, []);
      byPid.get(s.pid).push(`${x(s.t).toFixed(1)},${y(vals[k]).toFixed(1)}`);
    });
    for (const pts of byPid.values()) out += `<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="${pts.join(' ')}"/>\n`;
    if (i === panels.length - 1) out += `<text x="${W / 2}" y="${y0 + H - 5}" text-anchor="middle">seconds</text>\n`;
  });
  return `${out}</svg>\n`;
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)];
};

// ---- the run ----------------------------------------------------------------------------------

async function main() {
  sidecar = await startSidecar();
  // Idle figures of a fresh sidecar, before any client.
  await sleep(500);
  const idleStart = readProc(sidecar.pid);
  {
    const c = await B.connect({ socketPath, slotCount: 4, slotSize: 64 * KiB, clientName: 'soak-init' });
    await B.ops.repoInit(c, PASSWORD, { kdf_m_kib: 1024, kdf_t: 1 });
    await c.close();
  }
  const sampler = setInterval(sample, 1000);
  const runMs = MINUTES * 60_000;
  const plan = [
    { at: runMs * 0.25, signal: 'SIGTERM' },
    { at: runMs * 0.5, signal: 'SIGKILL' },
  ];
  const restarter = (async () => {
    for (const r of plan) {
      const wait = t0 + r.at - Date.now();
      if (wait > 0) await sleep(wait);
      restarts.push({ t: (Date.now() - t0) / 1000, label: r.signal });
      await restart(r.signal);
    }
  })();
  const workers = [];
  for (let i = 0; i < RESILIENT; i++) workers.push(resilient(i));
  for (let i = RESILIENT; i < CLIENTS; i++) workers.push(churner(i));
  const results = await Promise.allSettled(workers);
  await restarter;
  for (const r of results) if (r.status === 'rejected') unexpected('client', r.reason);
  const reconnects = results.slice(0, RESILIENT).reduce((a, r) => a + (r.status === 'fulfilled' ? r.value : 0), 0);
  clearInterval(sampler);
  const endOfLoad = (Date.now() - t0) / 1000;

  // Every object that should exist, read whole and compared.
  let lostBytes = 0;
  let verified = 0;
  {
    const c = await B.connect({ socketPath, slotCount: 8, slotSize: 1 * MiB, clientName: 'soak-verify' });
    for (const [key, want] of live) {
      try {
        const parts = [];
        for await (const ch of c.openRead(key)) parts.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
        const got = Buffer.concat(parts);
        if (got.length !== want.size || sha256(got) !== want.sha) lostBytes += want.size;
        else verified += got.length;
      } catch (e) {
        lostBytes += want.size;
        if (e.code !== 'SHMPIPE_E_NOT_FOUND') unexpected(`verify ${key}`, e);
      }
    }
    const repo = await B.ops.repoOpen(c, PASSWORD);
    const check = await B.ops.check(c, repo, { readData: true });
    if (!check.ok) unexpected('check --read-data', new Error(JSON.stringify(check.errors).slice(0, 500)));
    await B.ops.close(c, repo);
    await c.close();
  }

  // Idle again: no session, no segment, blocking threads expired (tokio keeps idle ones 10 s).
  const settle = Date.now() + 20_000;
  let idleEnd = readProc(sidecar.pid);
  while (Date.now() < settle && (idleEnd.segments > 0 || idleEnd.threads > idleStart.threads || idleEnd.fds > idleStart.fds)) {
    await sleep(250);
    idleEnd = readProc(sidecar.pid);
  }
  const leftNames = shmNames();
  const segmentsLeaked = idleEnd.segments + leftNames.length;

  // RSS growth of the last sidecar under load: first fifth vs last fifth after its warm-up.
  const last = samples.filter((s) => s.pid === sidecar.pid && s.t <= endOfLoad);
  const warm = last.length ? last[0].t + Math.min(60, (endOfLoad - last[0].t) * 0.2) : 0;
  const steady = last.filter((s) => s.t >= warm);
  const fifth = Math.max(1, Math.floor(steady.length / 5));
  const rssFirst = median(steady.slice(0, fifth).map((s) => s.rss));
  const rssLast = median(steady.slice(-fifth).map((s) => s.rss));
  const rssGrowthPct = steady.length >= 2 ? ((rssLast - rssFirst) / rssFirst) * 100 : null;

  fs.mkdirSync(path.join(root, 'perf', 'out'), { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const plot = path.join(root, 'perf', 'out', `soak-${stamp}.svg`);
  fs.writeFileSync(plot, svg(samples, restarts));
  fs.writeFileSync(plot.replace(/\.svg$/, '.json'), JSON.stringify({ samples, restarts }, null, 0));

  await new Promise((resolve) => {
    sidecar.proc.once('exit', resolve);
    sidecar.proc.kill('SIGTERM');
  });
  if (!opt.keep) fs.rmSync(work, { recursive: true, force: true });

  const mb = (b) => (b / MiB).toFixed(1);
  const rows = [
    ['duration', `${MINUTES} min (load ${endOfLoad.toFixed(0)} s)`],
    ['ops (put, get, stat, list, delete, backup, restore)', counts.ops],
    ['backups / restores verified', `${counts.backups} / ${counts.restores}`],
    ['bytes put / read back', `${mb(counts.bytesPut)} / ${mb(counts.bytesGot)} MiB`],
    ['objects verified at the end', `${live.size} (${mb(verified)} MiB)`],
    ['unexpected errors', counts.errors],
    ['restart casualties (expected), over-limit refusals', `${counts.expected}, ${counts.busy}`],
    ['sessions max (limit)', `${sessionsMax} (${MAX_CLIENTS})`],
    ['sidecar restarts (resilient reconnects)', `${restarts.length} (${reconnects})`],
    ['RSS after warm-up: first → last fifth', `${mb(rssFirst)} → ${mb(rssLast)} MiB (${rssGrowthPct === null ? 'n/a' : rssGrowthPct.toFixed(1)} %)`],
    ['idle threads start → end', `${idleStart.threads} → ${idleEnd.threads}`],
    ['idle fds start → end', `${idleStart.fds} → ${idleEnd.fds}`],
    ['segments left (mapped, /dev/shm)', `${idleEnd.segments}, ${leftNames.length}`],
    ['lost bytes', lostBytes],
    ['plot', path.relative(root, plot)],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
  for (const e of errorSamples) console.log(`error: ${e}`);
  console.log(
    JSON.stringify({
      minutes: MINUTES,
      ops: counts.ops,
      errors: counts.errors,
      clients_max: sessionsMax,
      sidecar_restarts: restarts.length,
      rss_growth_pct: rssGrowthPct === null ? null : Number(rssGrowthPct.toFixed(2)),
      threads_growth: idleEnd.threads - idleStart.threads,
      fds_growth: idleEnd.fds - idleStart.fds,
      segments_leaked: segmentsLeaked,
      lost_bytes: lostBytes,
      clients: CLIENTS,
      max_clients: MAX_CLIENTS,
      busy_refusals: counts.busy,
      restart_casualties: counts.expected,
      backups: counts.backups,
      restores: counts.restores,
      bytes_put: counts.bytesPut,
      plot: path.relative(root, plot),
    }),
  );
}

main().catch((e) => {
  console.error(e);
  try {
    sidecar?.proc.kill('SIGKILL');
  } catch {
    // gone
  }
  process.exit(1);
});
