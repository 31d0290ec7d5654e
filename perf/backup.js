#!/usr/bin/env node
// perf:backup — shmpipe against restic on the same generated data set, in one run: each tool
// initialises a fresh local repository, backs the set up (a first backup: nothing to skip), and
// restores the snapshot to a fresh directory; every restore is checked against the source (types,
// sizes, SHA-256 of every file, symlink targets, modes, mtimes) and a wrong one fails the run
// loudly (exit 1, after the figures). Prints a table, then one JSON object as the last line.
// Measures, never asserts the targets (they are printed beside the figures).
//
//   npm run perf:backup                        # = npm run build && node perf/backup.js
//   node perf/backup.js [--gib 2] [--dir DIR] [--repeat 1] [--only shm,restic] [--keep] [--rebackup]
//                       [--shm-cli ts-lib/dist/cli.js] [--restic restic] [--seed 1]
//
// Environment: SHMPIPE_PERF_BACKUP_GIB (data set size, default 2 GiB), SHMPIPE_PERF_BACKUP_DIR
// (work directory, default $TMPDIR/shmpipe-perf-backup; the data set is cached there, keyed by
// size and seed, and reused by later runs), SHMPIPE_PERF_BACKUP_SHM_CLI (the shmpipe command).
// SHMPIPE_* settings of the sidecar (e.g. SHMPIPE_WORKER_THREADS) pass through to the private
// sidecar the CLI starts. --rebackup also times a second backup of the unchanged set right after
// the first (each tool's default: files unchanged against the parent snapshot are not re-read) and
// reports how much it added to the repository.
//
// What is timed: each tool's `backup` and `restore` commands from spawn to exit (process start,
// the private sidecar's start for shmpipe, everything). Not timed: `init`, a `sync` before and
// after each timed step (so one step's dirty pages are not flushed during the next), the warm-up,
// the check of the restore. Warm-up: we cannot drop the page cache here, so every file of the set
// is read once right before each backup, and both tools read their sources from the page cache.
// The repositories, the restores and the data set all live in the work directory (one disk).
// Both tools write their repositories as they do by default (restic and the sidecar's file://
// store both fsync what they write); neither fsyncs restored files.
//
// CPU is user + sys of the whole process tree (shmpipe: the CLI's node process and its sidecar),
// peak RSS the largest sum over the tree of RssAnon + RssFile at one sampling instant (every
// 20 ms; shared memory excluded) — see lib/proc-tree.js. MB = 10^6 bytes; throughput is the data
// set's logical bytes (every file, duplicates included) over wall time.
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { ensureDataset, describeDataset, readAll, verifyTree, GiB, MiB } = require('./lib/backup-dataset');
const { measure } = require('./lib/proc-tree');

const root = path.resolve(__dirname, '..');
const MB = 1e6;
const GB = 1e9;

const { values: opt } = parseArgs({
  options: {
    gib: { type: 'string', default: process.env.SHMPIPE_PERF_BACKUP_GIB || '2' },
    dir: { type: 'string', default: process.env.SHMPIPE_PERF_BACKUP_DIR || path.join(os.tmpdir(), 'shmpipe-perf-backup') },
    seed: { type: 'string', default: '1' },
    repeat: { type: 'string', default: '1' },
    only: { type: 'string', default: 'shm,restic' },
    // The package's bin as a user runs it: its shebang passes node's flags (--max-semi-space-size).
    'shm-cli': { type: 'string', default: process.env.SHMPIPE_PERF_BACKUP_SHM_CLI || path.join(root, 'ts-lib', 'dist', 'cli.js') },
    restic: { type: 'string', default: 'restic' },
    keep: { type: 'boolean', default: false },
    rebackup: { type: 'boolean', default: false },
  },
});
const TOTAL = Math.round(Number(opt.gib) * GiB);
const SEED = Number(opt.seed);
const REPEAT = Math.max(1, Number(opt.repeat));
const WORK = path.resolve(opt.dir);
const PASSWORD = 'perf-backup-password';
const TOOLS = opt.only.split(',').filter(Boolean);

const log = (s = '') => console.log(s);
const fix = (x, d = 2) => (x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toFixed(d)));
const load1 = () => fix(os.loadavg()[0]);

// ---- restic ------------------------------------------------------------------------------------

function which(cmd) {
  if (cmd.includes('/')) return fs.existsSync(cmd) ? cmd : null;
  for (const d of (process.env.PATH || '').split(':')) if (d && fs.existsSync(path.join(d, cmd))) return path.join(d, cmd);
  return null;
}

/** restic on PATH, else Debian's package installed (we run as root here; no sudo). */
function ensureRestic() {
  let bin = which(opt.restic);
  if (!bin && opt.restic === 'restic') {
    log('restic is missing: apt-get install -y restic');
    const install = () => spawnSync('apt-get', ['install', '-y', 'restic'], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status;
    if (install() !== 0) {
      spawnSync('apt-get', ['update'], { stdio: ['ignore', 'inherit', 'inherit'] });
      if (install() !== 0) throw new Error('could not install restic with apt-get (install it, or pass --restic /path/to/restic)');
    }
    bin = which('restic');
  }
  if (!bin) throw new Error(`restic not found (${opt.restic})`);
  const version = execFileSync(bin, ['version'], { encoding: 'utf8' }).trim();
  return { bin, version };
}

// ---- the two tools -----------------------------------------------------------------------------

/** The last JSON object of a type in JSON-lines output. */
function lastJson(stdout, type) {
  const lines = stdout.trim().split('\n').reverse();
  for (const l of lines) {
    try {
      const o = JSON.parse(l);
      if (!type || o.type === type || o.message_type === type) return o;
    } catch {
      // not JSON
    }
  }
  return null;
}

function makeTools(resticBin) {
  const [shmCmd, ...shmArgs] = opt['shm-cli'].split(' ').filter(Boolean);
  const shmEnv = (repo) => {
    const env = { ...process.env, SHMPIPE_REPO: repo, SHMPIPE_PASSWORD: PASSWORD };
    delete env.SHMPIPE_SIDECAR_SOCKET; // the CLI must start its own, private sidecar
    delete env.SHMPIPE_PASSWORD_FILE;
    return env;
  };
  const resticEnv = () => ({ ...process.env, RESTIC_PASSWORD: PASSWORD, RESTIC_PROGRESS_FPS: '4' });
  return {
    shm: {
      title: 'shmpipe',
      // The CLI's node process is the agent; the sidecar is its child.
      label: (comm, depth) => (depth === 0 ? 'agent' : comm === 'shmpipe-sidecar' ? 'sidecar' : comm),
      init: (repo) => [shmCmd, [...shmArgs, 'init'], { env: shmEnv(repo) }],
      backup: (repo, cache, src) => [shmCmd, [...shmArgs, 'backup', src, '--json'], { env: shmEnv(repo) }],
      restore: (repo, cache, target) => [shmCmd, [...shmArgs, 'restore', 'latest', target, '--json'], { env: shmEnv(repo) }],
      summary: (stdout) => {
        const s = lastJson(stdout, 'summary');
        return s && { snapshot: s.snapshot, files_new: s.files_new, bytes_added: s.bytes_added_packed ?? s.bytes_added, reported_s: s.duration_ms !== undefined ? s.duration_ms / 1000 : s.duration_s };
      },
    },
    restic: {
      title: 'restic',
      label: () => 'restic',
      init: (repo, cache) => [resticBin, ['-r', repo, '--cache-dir', cache, 'init'], { env: resticEnv() }],
      backup: (repo, cache, src) => [resticBin, ['-r', repo, '--cache-dir', cache, 'backup', src, '--json'], { env: resticEnv() }],
      restore: (repo, cache, target) => [resticBin, ['-r', repo, '--cache-dir', cache, 'restore', 'latest', '--target', target], { env: resticEnv() }],
      summary: (stdout) => {
        const s = lastJson(stdout, 'summary');
        return s && { snapshot: s.snapshot_id, files_new: s.files_new, bytes_added: s.data_added, reported_s: s.total_duration };
      },
    },
  };
}

// ---- helpers -----------------------------------------------------------------------------------

/** Bytes on disk (allocated blocks) and apparent bytes of a tree, like `du -s -B1` / `du -sb`. */
function du(dir) {
  let disk = 0;
  let apparent = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop();
    for (const de of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, de.name);
      const st = fs.lstatSync(p);
      disk += st.blocks * 512;
      apparent += st.size;
      if (de.isDirectory()) stack.push(p);
    }
  }
  return { disk, apparent };
}

function sync() {
  spawnSync('sync', [], { stdio: 'ignore' });
}

/** Where a tool put the restored tree under `target`: the source's absolute path below it
 * (restic), its last component (shmpipe), or the target itself. */
function restoredRoot(target, src, manifest) {
  const probe = manifest.entries.find((e) => e.kind === 'file').rel;
  for (const c of [path.join(target, src), path.join(target, path.basename(src)), target]) {
    if (fs.existsSync(path.join(c, probe))) return c;
  }
  return null;
}

class RunFailed extends Error {}

/** Runs one untimed command, failing loudly. */
async function runPlain(what, [cmd, args, o]) {
  const r = await measure(cmd, args, o);
  if (r.code !== 0) throw new RunFailed(`${what} failed (exit ${r.code ?? r.signal}):\n${(r.stderr || r.stdout).trim().slice(-4000)}`);
  return r;
}

/** Runs one timed step; returns its measurement, failing loudly on a non-zero exit. */
async function runTimed(what, tool, [cmd, args, o]) {
  const load = load1();
  const r = await measure(cmd, args, o, { label: tool.label });
  r.load = load;
  if (r.code !== 0) throw new RunFailed(`${what} failed (exit ${r.code ?? r.signal}):\n${(r.stderr || r.stdout).trim().slice(-4000)}`);
  return r;
}

/** CPU seconds of the processes a label names (summed over all of them), from the samples. */
function cpuOf(r, name) {
  return r.procs.filter((p) => p.name === name).reduce((a, p) => a + p.cpu, 0);
}
function peakOf(r, name) {
  return r.procs.filter((p) => p.name === name).reduce((a, p) => Math.max(a, p.peak), 0);
}

// ---- one round of one tool ---------------------------------------------------------------------

async function runTool(name, tool, ds, round) {
  // Nothing is deleted between timed steps (see cleanup below): every round has its own dirs.
  const base = path.join(WORK, `run-${name}-${round}`);
  const repo = path.join(base, 'repo');
  const cache = path.join(base, 'cache');
  const target = path.join(base, 'restore');
  fs.mkdirSync(cache, { recursive: true });
  fs.mkdirSync(target, { recursive: true });
  {
    await runPlain(`${tool.title} init`, tool.init(repo, cache));
    // Warm-up: the whole set read once (page cache), then flush whatever is dirty.
    const w0 = process.hrtime.bigint();
    readAll(ds.dir, ds.manifest);
    const warmS = Number(process.hrtime.bigint() - w0) / 1e9;
    sync();

    const backup = await runTimed(`${tool.title} backup`, tool, tool.backup(repo, cache, ds.dir));
    backup.summary = tool.summary(backup.stdout);
    sync();
    const size = du(repo);
    const r = { name, round, warmS, backup, rebackup: null, restore: null, repo: size, repoAfter: null, check: null, restoredAt: null, error: null };
    const line = (phase, m) =>
      `  ${tool.title.padEnd(7)} ${phase.padEnd(7)} ${m.wall.toFixed(2).padStart(7)} s  ${(ds.manifest.bytes / m.wall / MB).toFixed(0).padStart(5)} MB/s  CPU ${m.cpu.toFixed(1).padStart(5)} s  peak RSS ${(m.peakRss / MB).toFixed(0).padStart(4)} MB  (load ${m.load})`;
    log(`round ${round}: ${tool.title} (warm-up read ${warmS.toFixed(1)} s)`);
    log(line('backup', backup));
    if (opt.rebackup) {
      r.rebackup = await runTimed(`${tool.title} re-backup`, tool, tool.backup(repo, cache, ds.dir));
      sync();
      r.repoAfter = du(repo);
      log(`${line('re-bkp', r.rebackup)}, added ${((r.repoAfter.disk - size.disk) / MB).toFixed(1)} MB`);
    }

    // A failed restore still leaves the backup's figures.
    try {
      r.restore = await runTimed(`${tool.title} restore`, tool, tool.restore(repo, cache, target));
    } catch (e) {
      if (!(e instanceof RunFailed)) throw e;
      r.error = e.message;
      log(`!!! ${e.message}`);
      return r;
    }
    sync();
    r.restoredAt = restoredRoot(target, ds.dir, ds.manifest);
    r.check = r.restoredAt ? verifyTree(r.restoredAt, ds.manifest) : { ok: false, checked: 0, problems: [`nothing of the source found under ${target}`], counts: {} };
    log(line('restore', r.restore));
    log(`  ${tool.title.padEnd(7)} repo ${(size.disk / MB).toFixed(1)} MB on disk; restore check: ${r.check.ok ? `ok, ${r.check.checked} entries` : `FAILED ${JSON.stringify(r.check.counts)}`}`);
    return r;
  }
}

// ---- cleaning up: between rounds only, then a pause --------------------------------------------
//
// This disk is ext4 without a journal, whose inode allocator skips inodes freed in the last
// 60 s (ext4 recently_deleted(): 60 s, 360 s while the inode table block is dirty) and pays a
// buffer lookup for each one it skips. Deleting a restored tree of ~10k files right before the
// other tool's restore made that restore spend most of its time in the kernel (find_inode_bit /
// recently_deleted, measured with perf). So nothing is deleted between the timed steps of a
// round: a round keeps its repositories and restores until it ends; the next round (or run)
// deletes them, syncs, and waits out the window before timing anything.

const STAMP = () => path.join(WORK, 'last-cleanup');
const QUIET_S = 65;

function cleanup() {
  const old = fs.readdirSync(WORK).filter((n) => n.startsWith('run-'));
  for (const n of old) fs.rmSync(path.join(WORK, n), { recursive: true, force: true });
  if (old.length) {
    sync();
    fs.writeFileSync(STAMP(), String(Date.now()));
  }
  return old.length;
}

async function waitOutDeletions() {
  const removed = cleanup();
  let last = 0;
  try {
    last = Number(fs.readFileSync(STAMP(), 'utf8'));
  } catch {
    // never cleaned up here
  }
  const wait = QUIET_S - (Date.now() - last) / 1000;
  if (wait > 0) {
    log(`${removed ? `removed ${removed} leftover run dirs; ` : ''}waiting ${wait.toFixed(0)} s: ext4 (no journal) skips recently freed inodes when creating files, which would slow the restores`);
    await new Promise((r) => setTimeout(r, wait * 1000));
  }
}

// ---- main --------------------------------------------------------------------------------------

async function main() {
  const loadStart = os.loadavg().map((x) => fix(x));
  fs.mkdirSync(WORK, { recursive: true });
  const [dev, fsType] = spawnSync('df', ['--output=source,fstype', WORK], { encoding: 'utf8' }).stdout.trim().split('\n').pop().trim().split(/\s+/);
  if (fsType === 'tmpfs') log(`warning: ${WORK} is on tmpfs: the figures will not be a disk's (pass --dir on a disk)`);

  const restic = TOOLS.includes('restic') ? ensureRestic() : null;
  const tools = makeTools(restic?.bin ?? 'restic');
  const cliFile = opt['shm-cli'].split(' ').filter(Boolean).find((a) => a.endsWith('.js'));
  if (TOOLS.includes('shm') && cliFile && !fs.existsSync(cliFile)) throw new Error(`${cliFile} is missing: npm run build`);

  const t0 = process.hrtime.bigint();
  const ds = ensureDataset(WORK, TOTAL, SEED, log);
  const genS = Number(process.hrtime.bigint() - t0) / 1e9;
  const d = describeDataset(ds.manifest);
  const cls = (k) => `${k} ${d.cls[k][0]} files ${(d.cls[k][1] / MiB).toFixed(0)} MiB`;
  log(
    `data set: ${(ds.manifest.bytes / GiB).toFixed(2)} GiB (${(ds.manifest.bytes / MB).toFixed(0)} MB) in ${ds.manifest.files} files — ` +
      `${cls('random')}, ${cls('logs')}, ${cls('small')}, ${cls('dup')}; ${d.dirs} dirs, ${d.links} symlinks` +
      ` (${ds.reused ? 'cached' : `generated in ${genS.toFixed(0)} s`}) at ${ds.dir}`,
  );
  log(`work dir ${WORK}: ${dev} (${fsType}) — data set, repositories and restores on one disk; ${os.cpus().length} CPUs; load average ${loadStart.join(' ')}`);
  log(`warm-up: the whole set read once (page cache) right before each backup; sync (untimed) around every timed step; ${restic ? restic.version : ''}`);
  log(`shmpipe: ${opt['shm-cli']}${Object.keys(process.env).filter((k) => k.startsWith('SHMPIPE_') && !k.startsWith('SHMPIPE_PERF_')).map((k) => ` ${k}=${process.env[k]}`).join('')}`);
  log('');

  await waitOutDeletions();
  const runs = Object.fromEntries(TOOLS.map((t) => [t, []]));
  /** tool → the message of its failed step (the tool is then left out of later rounds). */
  const failed = {};
  for (let round = 1; round <= REPEAT; round++) {
    if (round > 1) {
      // A round keeps ~3x the set on disk (two repositories, two restores): free the last
      // round's before the next one, then wait out ext4's window (see cleanup()).
      await waitOutDeletions();
    }
    const { bavail, bsize } = fs.statfsSync(WORK);
    const need = 3.5 * ds.manifest.bytes;
    if (bavail * bsize < need) throw new Error(`only ${((bavail * bsize) / GB).toFixed(1)} GB free under ${WORK}; a round needs ~${(need / GB).toFixed(1)} GB`);
    // Alternate the order between rounds: restic first in odd rounds.
    const others = TOOLS.filter((t) => t !== 'restic');
    const order = !TOOLS.includes('restic') ? TOOLS : round % 2 === 1 ? ['restic', ...others] : [...others, 'restic'];
    for (const name of order.filter((t) => !failed[t])) {
      try {
        const r = await runTool(name, tools[name], ds, round);
        runs[name].push(r);
        if (r.error) failed[name] = r.error;
      } catch (e) {
        if (!(e instanceof RunFailed)) throw e;
        failed[name] = e.message;
        log(`!!! ${e.message}`);
      }
    }
  }
  const failure = Object.keys(failed).length ? Object.values(failed).join('\n') : null;

  // The median run per tool and phase (by wall time).
  const median = (all, phase) => {
    const list = all.filter((x) => x[phase]);
    return list.length ? [...list].sort((a, b) => a[phase].wall - b[phase].wall)[Math.floor(list.length / 2)] : null;
  };
  const res = {};
  for (const name of TOOLS) {
    const b = median(runs[name], 'backup');
    const r = median(runs[name], 'restore');
    if (!b) continue;
    const bytes = ds.manifest.bytes;
    const rr = r ? r.restore : null;
    const procs = [...b.backup.procs, ...(rr ? rr.procs : [])];
    res[name] = {
      backupS: b.backup.wall,
      backupMbps: bytes / b.backup.wall / MB,
      backupTbh: ((bytes / b.backup.wall) * 3600) / 1e12,
      backupCpu: b.backup.cpu / (bytes / GB),
      restoreS: rr ? rr.wall : null,
      restoreMbps: rr ? bytes / rr.wall / MB : null,
      restoreCpu: rr ? rr.cpu / (bytes / GB) : null,
      backupRss: b.backup.peakRss / MB,
      restoreRss: rr ? rr.peakRss / MB : null,
      peakRss: Math.max(b.backup.peakRss, rr ? rr.peakRss : 0) / MB,
      hwm: Math.max(...procs.map((p) => p.hwm)) / MB,
      shmem: Math.max(b.backup.peakShmem, rr ? rr.peakShmem : 0) / MB,
      repoMb: b.repo.disk / MB,
      rebackupS: b.rebackup ? b.rebackup.wall : null,
      rebackupAddedMb: b.repoAfter ? (b.repoAfter.disk - b.repo.disk) / MB : null,
      repoApparentMb: b.repo.apparent / MB,
      added: b.backup.summary?.bytes_added ?? null,
      reportedS: b.backup.summary?.reported_s ?? null,
      b: b.backup,
      r: rr,
      // A restore that failed or was not checked is not ok.
      ok: runs[name].every((x) => x.check?.ok === true),
      problems: runs[name].flatMap((x) => (x.check ? x.check.problems : [x.error ?? 'no restore'])),
    };
  }

  // ---- the table ----
  const S = res.shm;
  const R = res.restic;
  const ratio = (a, b) => (a !== undefined && b !== undefined && a !== null && b !== null ? a / b : null);
  const f = (x, d = 1) => (x === null || x === undefined ? '—' : x.toFixed(d));
  const rows = [
    ['backup wall time, s', (t) => t.backupS, 2, null],
    ['backup MB/s', (t) => t.backupMbps, 0, '≥ 2x'],
    ['backup TB/h', (t) => t.backupTbh, 2, '≥ 1.3 TB/h'],
    ['backup CPU-s/GB', (t) => t.backupCpu, 2, null],
    ['restore wall time, s', (t) => t.restoreS, 2, null],
    ['restore MB/s', (t) => t.restoreMbps, 0, '≥ 1.5x'],
    ['restore CPU-s/GB', (t) => t.restoreCpu, 2, null],
    ['peak RSS MB (backup)', (t) => t.backupRss, 0, null],
    ['peak RSS MB (restore)', (t) => t.restoreRss, 0, null],
    ['peak RSS MB', (t) => t.peakRss, 0, '≤ 1x'],
    ['repository MB on disk', (t) => t.repoMb, 1, '≤ 1.05x'],
  ];
  if (opt.rebackup) rows.push(['re-backup wall time, s', (t) => t.rebackupS, 2, null], ['re-backup added MB', (t) => t.rebackupAddedMb, 2, '< 1 % of the repo']);
  log('');
  log(`${''.padEnd(24)}${'shmpipe'.padStart(10)}${'restic'.padStart(10)}${'shm/restic'.padStart(12)}   target`);
  for (const [label, get, dp, target] of rows) {
    const a = S ? get(S) : null;
    const b = R ? get(R) : null;
    log(`${label.padEnd(24)}${f(a, dp).padStart(10)}${f(b, dp).padStart(10)}${f(ratio(a, b), 2).padStart(12)}   ${target ?? ''}`);
  }
  log('');
  if (S) {
    log(
      `shmpipe split: backup CPU agent ${cpuOf(S.b, 'agent').toFixed(1)} s + sidecar ${cpuOf(S.b, 'sidecar').toFixed(1)} s (tree ${S.b.cpu.toFixed(1)} s); ` +
        (S.r ? `restore agent ${cpuOf(S.r, 'agent').toFixed(1)} s + sidecar ${cpuOf(S.r, 'sidecar').toFixed(1)} s (tree ${S.r.cpu.toFixed(1)} s); ` : '') +
        `peak RSS agent ${(peakOf(S.b, 'agent') / MB).toFixed(0)} / sidecar ${(peakOf(S.b, 'sidecar') / MB).toFixed(0)} MB (backup), ` +
        (S.r ? `${(peakOf(S.r, 'agent') / MB).toFixed(0)} / ${(peakOf(S.r, 'sidecar') / MB).toFixed(0)} MB (restore); ` : '') +
        `shared memory resident up to ${S.shmem.toFixed(0)} MB (not counted)`,
    );
  }
  for (const [n, t] of Object.entries(res)) {
    log(
      `${tools[n].title}: reports ${t.reportedS !== null ? `${Number(t.reportedS).toFixed(2)} s` : '—'} for the backup and ${t.added !== null ? `${(t.added / MB).toFixed(0)} MB` : '—'} added; ` +
        `repository ${t.repoApparentMb.toFixed(0)} MB apparent; VmHWM (includes shared memory) ${t.hwm.toFixed(0)} MB; ` +
        `${t.b.samples} + ${t.r ? t.r.samples : 0} RSS samples; restore ${t.ok ? 'verified' : 'WRONG'}`,
    );
  }
  const loadEnd = os.loadavg().map((x) => fix(x));
  if (opt.keep) log(`kept: ${WORK}/run-*`);
  else cleanup();
  log(`load average at start ${loadStart.join(' ')}, at end ${loadEnd.join(' ')}; ${REPEAT > 1 ? `median of ${REPEAT} rounds, order alternating` : `one round, ${TOOLS.includes('restic') ? 'restic first' : TOOLS.join(', ')}`}`);

  const summary = {
    dataset_bytes: ds.manifest.bytes,
    dataset_files: ds.manifest.files,
    dataset_gib: fix(ds.manifest.bytes / GiB, 3),
    shm_backup_mbps: fix(S?.backupMbps, 1),
    restic_backup_mbps: fix(R?.backupMbps, 1),
    shm_restore_mbps: fix(S?.restoreMbps, 1),
    restic_restore_mbps: fix(R?.restoreMbps, 1),
    shm_peak_rss_mb: fix(S?.peakRss, 1),
    restic_peak_rss_mb: fix(R?.peakRss, 1),
    shm_repo_mb: fix(S?.repoMb, 1),
    restic_repo_mb: fix(R?.repoMb, 1),
    backup_ratio: fix(ratio(S?.backupMbps, R?.backupMbps), 3),
    restore_ratio: fix(ratio(S?.restoreMbps, R?.restoreMbps), 3),
    rss_ratio: fix(ratio(S?.peakRss, R?.peakRss), 3),
    repo_ratio: fix(ratio(S?.repoMb, R?.repoMb), 3),
    shm_backup_s: fix(S?.backupS, 3),
    restic_backup_s: fix(R?.backupS, 3),
    shm_restore_s: fix(S?.restoreS, 3),
    restic_restore_s: fix(R?.restoreS, 3),
    shm_backup_tb_per_h: fix(S?.backupTbh, 3),
    restic_backup_tb_per_h: fix(R?.backupTbh, 3),
    shm_backup_cpu_s_per_gb: fix(S?.backupCpu, 3),
    restic_backup_cpu_s_per_gb: fix(R?.backupCpu, 3),
    shm_restore_cpu_s_per_gb: fix(S?.restoreCpu, 3),
    restic_restore_cpu_s_per_gb: fix(R?.restoreCpu, 3),
    shm_backup_cpu_agent_s: S ? fix(cpuOf(S.b, 'agent')) : null,
    shm_backup_cpu_sidecar_s: S ? fix(cpuOf(S.b, 'sidecar')) : null,
    shm_restore_cpu_agent_s: S?.r ? fix(cpuOf(S.r, 'agent')) : null,
    shm_restore_cpu_sidecar_s: S?.r ? fix(cpuOf(S.r, 'sidecar')) : null,
    shm_backup_peak_rss_mb: fix(S?.backupRss, 1),
    shm_restore_peak_rss_mb: fix(S?.restoreRss, 1),
    restic_backup_peak_rss_mb: fix(R?.backupRss, 1),
    restic_restore_peak_rss_mb: fix(R?.restoreRss, 1),
    restic_vmhwm_mb: fix(R?.hwm, 1),
    shm_rebackup_s: fix(S?.rebackupS, 3),
    restic_rebackup_s: fix(R?.rebackupS, 3),
    shm_rebackup_added_mb: fix(S?.rebackupAddedMb, 2),
    restic_rebackup_added_mb: fix(R?.rebackupAddedMb, 2),
    shm_restore_ok: S ? S.ok : null,
    restic_restore_ok: R ? R.ok : null,
    targets_met: S && R ? { backup_2x: S.backupMbps >= 2 * R.backupMbps, restore_1_5x: S.restoreMbps !== null && R.restoreMbps !== null && S.restoreMbps >= 1.5 * R.restoreMbps, repo_le_restic_5pct: S.repoMb <= 1.05 * R.repoMb, rss_le_restic: S.peakRss <= R.peakRss } : null,
    restic_version: restic ? restic.version.split(' ')[1] : null,
    repeat: REPEAT,
    warm: 'read-once-before-each-backup',
    load_avg_start: loadStart[0],
    load_avg_end: loadEnd[0],
    load_avg_start_1_5_15: loadStart,
    load_avg_end_1_5_15: loadEnd,
    failed: Object.keys(failed).length ? Object.fromEntries(Object.entries(failed).map(([k, v]) => [k, v.replace(/\s*\n\s*/g, ' ').slice(0, 300)])) : null,
  };
  const wrong = Object.entries(res).filter(([n, t]) => !t.ok && !failed[n]);
  for (const [n, t] of wrong) {
    console.error(`\n!!! ${tools[n].title} RESTORE IS WRONG: ${t.problems.length} problem(s), first ones:\n  ${t.problems.slice(0, 20).join('\n  ')}`);
  }
  for (const [n, m] of Object.entries(failed)) console.error(`\n!!! ${tools[n].title}: ${m}`);
  console.log(JSON.stringify(summary));
  if (wrong.length || failure) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
