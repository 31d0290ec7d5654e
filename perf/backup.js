#!/usr/bin/env node
// perf:backup — shmpipe against its peers on the same generated data sets, in one run: restic
// v0.18.1 (pinned, built into the perf cache when missing), rustic 0.11.4 (pinned, where it could
// be built) and Debian's restic 0.14 (an extra column, only when installed). For each data set
// (a 2 GiB mixed set; 100,000 small files of 0..16 KiB) each tool initialises a fresh local
// repository, backs the set up (a first backup), backs it up again unchanged (the no-change
// incremental: files unchanged against the parent snapshot are not re-read), and restores the
// snapshot to a fresh directory; every restore is checked against the source (types, sizes,
// SHA-256 of every file, symlink targets, modes, mtimes) and a wrong one fails the run loudly
// (exit 1, after the figures). Prints the tools' versions, one table per set with the ratios to
// restic 0.18.1 beside the targets of issue #15, then one JSON object as the last line.
// Measures, never asserts the targets.
//
//   npm run perf:backup                        # = npm run build && node perf/backup.js
//   node perf/backup.js [--sets mixed,small] [--gib 2] [--small-files 100000] [--dir DIR]
//                       [--repeat 1] [--only shm,restic,rustic,restic014] [--keep] [--seed 1]
//                       [--shm-cli ts-lib/dist/cli.js] [--restic BIN] [--rustic BIN] [--no-rustic-build]
//
// Environment: SHMPIPE_PERF_BACKUP_GIB (mixed set size, default 2 GiB), SHMPIPE_PERF_BACKUP_SMALL_FILES
// (default 100000), SHMPIPE_PERF_BACKUP_DIR (work directory, default $TMPDIR/shmpipe-perf-backup;
// the data sets are cached there, keyed by size and seed, and reused by later runs),
// SHMPIPE_PERF_BACKUP_SHM_CLI (the shmpipe command), SHMPIPE_PERF_CACHE (where the pinned peers
// are built, default ~/.cache/shmpipe-perf). SHMPIPE_* settings of the sidecar (e.g.
// SHMPIPE_WORKER_THREADS) pass through to the private sidecar the CLI starts.
//
// What is timed: each tool's `backup`, second `backup` and `restore` commands from spawn to exit
// (process start, key derivation, the private sidecar's start for shmpipe, everything). Not timed:
// `init`, a `sync` before and after each timed step (so one step's dirty pages are not flushed
// during the next), the warm-up, the check of the restore. Warm-up: we cannot drop the page
// cache here, so every file of the set is read once right before each first backup, and every
// tool reads its sources from the page cache. The repositories, the restores and the data sets
// all live in the work directory (one disk). Every tool writes its repository as it does by
// default (restic, rustic and the sidecar's file:// store fsync what they write); none fsyncs
// restored files.
//
// Memory is the peak of the summed PSS of the whole process tree (shmpipe: the CLI's node process,
// its sidecar and the shared segment, counted once), sampled every 50 ms by lib/pss.js, the same
// sampler for every tool. CPU is user + sys of the whole process tree (lib/proc-tree.js).
// MB = 10^6 bytes; throughput is the data set's logical bytes (every file, duplicates included)
// over wall time.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { ensureDataset, describeDataset, readAll, verifyTree, GiB, MiB } = require('./lib/backup-dataset');
const { measure } = require('./lib/proc-tree');
const { ensureRestic, ensureRustic, debianRestic } = require('./lib/peers');

const root = path.resolve(__dirname, '..');
const MB = 1e6;
const GB = 1e9;

const { values: opt } = parseArgs({
  options: {
    sets: { type: 'string', default: 'mixed,small' },
    gib: { type: 'string', default: process.env.SHMPIPE_PERF_BACKUP_GIB || '2' },
    'small-files': { type: 'string', default: process.env.SHMPIPE_PERF_BACKUP_SMALL_FILES || '100000' },
    dir: { type: 'string', default: process.env.SHMPIPE_PERF_BACKUP_DIR || path.join(os.tmpdir(), 'shmpipe-perf-backup') },
    seed: { type: 'string', default: '1' },
    repeat: { type: 'string', default: '1' },
    only: { type: 'string', default: 'shm,restic,rustic,restic014' },
    // The package's bin as a user runs it: its shebang passes node's flags (--max-semi-space-size).
    'shm-cli': { type: 'string', default: process.env.SHMPIPE_PERF_BACKUP_SHM_CLI || path.join(root, 'ts-lib', 'dist', 'cli.js') },
    restic: { type: 'string' },
    rustic: { type: 'string' },
    'no-rustic-build': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
const SETS = opt.sets.split(',').filter(Boolean);
const MIXED_BYTES = Math.round(Number(opt.gib) * GiB);
const SMALL_FILES = Math.round(Number(opt['small-files']));
const SEED = Number(opt.seed);
const REPEAT = Math.max(1, Number(opt.repeat));
const WORK = path.resolve(opt.dir);
const PASSWORD = 'perf-backup-password';
const WANT = opt.only.split(',').filter(Boolean);

const log = (s = '') => console.log(s);
const fix = (x, d = 2) => (x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toFixed(d)));
const load1 = () => fix(os.loadavg()[0]);

// ---- the tools ---------------------------------------------------------------------------------

/** The last JSON object of a type in JSON-lines output (or the last JSON document). */
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

function makeTools(peers) {
  const [shmCmd, ...shmArgs] = opt['shm-cli'].split(' ').filter(Boolean);
  const shmEnv = (repo) => {
    const env = { ...process.env, SHMPIPE_REPO: repo, SHMPIPE_PASSWORD: PASSWORD };
    delete env.SHMPIPE_SIDECAR_SOCKET; // the CLI must start its own, private sidecar
    delete env.SHMPIPE_PASSWORD_FILE;
    return env;
  };
  const resticEnv = () => ({ ...process.env, RESTIC_PASSWORD: PASSWORD, RESTIC_PROGRESS_FPS: '4' });
  const restic = (title, bin) => ({
    title,
    label: () => 'restic',
    init: (repo, cache) => [bin, ['-r', repo, '--cache-dir', cache, 'init'], { env: resticEnv() }],
    backup: (repo, cache, src) => [bin, ['-r', repo, '--cache-dir', cache, 'backup', src, '--json'], { env: resticEnv() }],
    restore: (repo, cache, target) => [bin, ['-r', repo, '--cache-dir', cache, 'restore', 'latest', '--target', target], { env: resticEnv() }],
    summary: (stdout) => {
      const s = lastJson(stdout, 'summary');
      return s && { snapshot: s.snapshot_id, files_new: s.files_new, bytes_added: s.data_added, reported_s: s.total_duration };
    },
  });
  const rusticEnv = () => {
    const env = { ...process.env, RUSTIC_PASSWORD: PASSWORD };
    delete env.RUSTIC_REPOSITORY;
    return env;
  };
  const rusticArgs = (repo, cache) => ['-r', repo, '--cache-dir', cache, '--no-progress'];
  const tools = {
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
  };
  if (peers.restic) tools.restic = restic(`restic ${peers.restic.version.split(' ')[1] ?? ''}`.trim(), peers.restic.bin);
  if (peers.rustic?.bin) {
    tools.rustic = {
      title: `rustic ${(peers.rustic.version || '').split(' ')[1] ?? ''}`.trim(),
      label: () => 'rustic',
      init: (repo, cache) => [peers.rustic.bin, [...rusticArgs(repo, cache), 'init'], { env: rusticEnv() }],
      backup: (repo, cache, src) => [peers.rustic.bin, [...rusticArgs(repo, cache), 'backup', src, '--json'], { env: rusticEnv() }],
      restore: (repo, cache, target) => [peers.rustic.bin, [...rusticArgs(repo, cache), 'restore', 'latest', target], { env: rusticEnv() }],
      summary: (stdout) => {
        let s = null;
        try {
          s = JSON.parse(stdout);
        } catch {
          s = lastJson(stdout);
        }
        const m = s?.summary;
        return m && { snapshot: s.id, files_new: m.files_new, bytes_added: m.data_added, reported_s: m.total_duration };
      },
    };
  }
  if (peers.restic014) tools.restic014 = { ...restic(`${peers.restic014.version.split(' ').slice(0, 2).join(' ')} (Debian)`, peers.restic014.bin) };
  return tools;
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
  const r = await measure(cmd, args, o, { label: tool.label, pssIntervalMs: 50 });
  r.load = load;
  if (r.code !== 0) throw new RunFailed(`${what} failed (exit ${r.code ?? r.signal}):\n${(r.stderr || r.stdout).trim().slice(-4000)}`);
  return r;
}

/** CPU seconds of the processes a label names (summed over all of them), from the samples. */
function cpuOf(r, name) {
  return r.procs.filter((p) => p.name === name).reduce((a, p) => a + p.cpu, 0);
}

// ---- one data set, one round, one tool ---------------------------------------------------------

async function runTool(name, tool, set, ds, round) {
  // Nothing is deleted between timed steps (see cleanup below): every round has its own dirs.
  const base = path.join(WORK, `run-${set}-${name}-${round}`);
  const repo = path.join(base, 'repo');
  const cache = path.join(base, 'cache');
  const target = path.join(base, 'restore');
  fs.mkdirSync(cache, { recursive: true });
  fs.mkdirSync(target, { recursive: true });
  await runPlain(`${tool.title} init`, tool.init(repo, cache));
  // Warm-up: the whole set read once (page cache), then flush whatever is dirty.
  const w0 = process.hrtime.bigint();
  readAll(ds.dir, ds.manifest);
  const warmS = Number(process.hrtime.bigint() - w0) / 1e9;
  sync();

  const r = { name, round, warmS, backup: null, rebackup: null, restore: null, repo: null, repoAfter: null, check: null, restoredAt: null, error: null };
  const line = (phase, m, extra = '') =>
    `  ${tool.title.padEnd(22)} ${phase.padEnd(8)} ${m.wall.toFixed(2).padStart(7)} s  ${(ds.manifest.bytes / m.wall / MB).toFixed(0).padStart(6)} MB/s  CPU ${m.cpu.toFixed(1).padStart(5)} s  PSS ${(m.peakPss / MB).toFixed(0).padStart(4)} MB  (load ${m.load})${extra}`;
  log(`${set}, round ${round}: ${tool.title} (warm-up read ${warmS.toFixed(1)} s)`);
  try {
    r.backup = await runTimed(`${tool.title} backup`, tool, tool.backup(repo, cache, ds.dir));
    r.backup.summary = tool.summary(r.backup.stdout);
    sync();
    r.repo = du(repo);
    log(line('backup', r.backup));
    r.rebackup = await runTimed(`${tool.title} re-backup`, tool, tool.backup(repo, cache, ds.dir));
    sync();
    r.repoAfter = du(repo);
    log(line('re-bkp', r.rebackup, `, added ${((r.repoAfter.disk - r.repo.disk) / MB).toFixed(2)} MB`));
    r.restore = await runTimed(`${tool.title} restore`, tool, tool.restore(repo, cache, target));
  } catch (e) {
    // A failed step still leaves the figures of the ones before it.
    if (!(e instanceof RunFailed)) throw e;
    r.error = e.message;
    log(`!!! ${e.message}`);
    return r;
  }
  sync();
  r.restoredAt = restoredRoot(target, ds.dir, ds.manifest);
  r.check = r.restoredAt ? verifyTree(r.restoredAt, ds.manifest) : { ok: false, checked: 0, problems: [`nothing of the source found under ${target}`], counts: {} };
  log(line('restore', r.restore));
  log(`  ${tool.title.padEnd(22)} repo ${(r.repo.disk / MB).toFixed(1)} MB on disk; restore check: ${r.check.ok ? `ok, ${r.check.checked} entries` : `FAILED ${JSON.stringify(r.check.counts)}`}`);
  return r;
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

/** Per set: what is compared, how (higher is better or lower), and the issue's target ratio. */
const ROWS = [
  { key: 'backupS', label: 'backup wall time, s', dp: 2 },
  { key: 'backupMbps', json: 'backup', label: 'backup MB/s', dp: 0, ratio: 'shm/peer', target: { mixed: 2, small: 2 }, targetText: '≥ 2x' },
  { key: 'backupCpu', label: 'backup CPU-s/GB', dp: 2 },
  { key: 'rebackupS', json: 'no_change_backup_speedup', label: 'no-change backup, s', dp: 2, ratio: 'peer/shm', target: { mixed: 2, small: 2 }, targetText: '≥ 2x faster' },
  { key: 'rebackupAddedMb', label: 'no-change backup added MB', dp: 2 },
  { key: 'restoreS', label: 'restore wall time, s', dp: 2 },
  { key: 'restoreMbps', json: 'restore', label: 'restore MB/s', dp: 0, ratio: 'shm/peer', target: { mixed: 1.5, small: 1.5 }, targetText: '≥ 1.5x' },
  { key: 'restoreCpu', label: 'restore CPU-s/GB', dp: 2 },
  { key: 'peakPss', json: 'peak_pss', label: 'peak memory MB (PSS)', dp: 0, ratio: 'shm/peer', target: { mixed: 1 }, targetText: '≤ 1x', lower: true },
  { key: 'repoMb', json: 'repo_size', label: 'repository MB on disk', dp: 1, ratio: 'shm/peer', target: { mixed: 1.05 }, targetText: '≤ 1.05x', lower: true },
];

function ratioOf(row, shm, peer) {
  const a = shm?.[row.key];
  const b = peer?.[row.key];
  if (a === null || a === undefined || b === null || b === undefined || !a || !b) return null;
  return row.ratio === 'peer/shm' ? b / a : a / b;
}

function summarise(ds, list) {
  const median = (phase) => {
    const l = list.filter((x) => x[phase]);
    return l.length ? [...l].sort((a, b) => a[phase].wall - b[phase].wall)[Math.floor(l.length / 2)][phase] : null;
  };
  const b = median('backup');
  if (!b) return null;
  const rb = median('rebackup');
  const rr = median('restore');
  const first = list.find((x) => x.backup === b);
  const bytes = ds.manifest.bytes;
  const all = [b, rb, rr].filter(Boolean);
  return {
    backupS: b.wall,
    backupMbps: bytes / b.wall / MB,
    backupCpu: b.cpu / (bytes / GB),
    rebackupS: rb ? rb.wall : null,
    rebackupAddedMb: first?.repoAfter ? (first.repoAfter.disk - first.repo.disk) / MB : null,
    restoreS: rr ? rr.wall : null,
    restoreMbps: rr ? bytes / rr.wall / MB : null,
    restoreCpu: rr ? rr.cpu / (bytes / GB) : null,
    peakPss: Math.max(...all.map((m) => m.peakPss)) / MB,
    backupPss: b.peakPss / MB,
    rebackupPss: rb ? rb.peakPss / MB : null,
    restorePss: rr ? rr.peakPss / MB : null,
    peakRss: Math.max(...all.map((m) => m.peakRss)) / MB,
    pssByLabel: Object.fromEntries(Object.entries(all.reduce((acc, m) => {
      for (const [k, v] of Object.entries(m.pssByLabel)) acc[k] = Math.max(acc[k] ?? 0, v);
      return acc;
    }, {})).map(([k, v]) => [k, fix(v / MB, 1)])),
    repoMb: first ? first.repo.disk / MB : null,
    repoApparentMb: first ? first.repo.apparent / MB : null,
    added: b.summary?.bytes_added ?? null,
    reportedS: b.summary?.reported_s ?? null,
    cpu: {
      backupAgent: fix(cpuOf(b, 'agent')),
      backupSidecar: fix(cpuOf(b, 'sidecar')),
      restoreAgent: rr ? fix(cpuOf(rr, 'agent')) : null,
      restoreSidecar: rr ? fix(cpuOf(rr, 'sidecar')) : null,
    },
    // A restore that failed or was not checked is not ok.
    ok: list.every((x) => x.check?.ok === true),
    problems: list.flatMap((x) => (x.check ? x.check.problems : [x.error ?? 'no restore'])),
  };
}

async function main() {
  const loadStart = os.loadavg().map((x) => fix(x));
  fs.mkdirSync(WORK, { recursive: true });
  const [dev, fsType] = spawnSync('df', ['--output=source,fstype', WORK], { encoding: 'utf8' }).stdout.trim().split('\n').pop().trim().split(/\s+/);
  if (fsType === 'tmpfs') log(`warning: ${WORK} is on tmpfs: the figures will not be a disk's (pass --dir on a disk)`);

  // ---- the peers, pinned ----
  const peers = {};
  const absent = {};
  if (WANT.includes('restic')) peers.restic = ensureRestic(log, opt.restic);
  if (WANT.includes('rustic')) {
    const r = ensureRustic(log, { build: !opt['no-rustic-build'], explicit: opt.rustic });
    if (r.bin) peers.rustic = r;
    else absent.rustic = r.why;
  }
  if (WANT.includes('restic014')) {
    const d = debianRestic();
    if (d) peers.restic014 = d;
    else absent.restic014 = 'not installed (/usr/bin/restic)';
  }
  const tools = makeTools(peers);
  const TOOLS = WANT.filter((t) => tools[t]);
  const cliFile = opt['shm-cli'].split(' ').filter(Boolean).find((a) => a.endsWith('.js'));
  if (TOOLS.includes('shm') && cliFile && !fs.existsSync(cliFile)) throw new Error(`${cliFile} is missing: npm run build`);
  const shmVersion = (() => {
    let rev = '';
    try {
      rev = spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
    } catch {
      // not a git checkout
    }
    return `shmpipe ${require(path.join(root, 'package.json')).version}${rev ? ` (${rev})` : ''}`;
  })();
  const versions = { shm: shmVersion, ...Object.fromEntries(Object.entries(peers).map(([k, v]) => [k, v.version])) };
  log(`tools: ${Object.values(versions).join('; ')}${Object.keys(absent).length ? `; left out: ${Object.entries(absent).map(([k, v]) => `${k} ${v}`).join('; ')}` : ''}`);

  // ---- the data sets ----
  const dsets = {};
  for (const set of SETS) {
    const t0 = process.hrtime.bigint();
    const ds = set === 'small' ? ensureDataset(WORK, SMALL_FILES, SEED, log, 'small') : ensureDataset(WORK, MIXED_BYTES, SEED, log);
    const genS = Number(process.hrtime.bigint() - t0) / 1e9;
    const d = describeDataset(ds.manifest);
    const cls = (k) => `${k} ${d.cls[k][0]} files ${(d.cls[k][1] / MiB).toFixed(0)} MiB`;
    log(
      `data set ${set}: ${(ds.manifest.bytes / GiB).toFixed(2)} GiB (${(ds.manifest.bytes / MB).toFixed(0)} MB) in ${ds.manifest.files} files — ` +
        (set === 'small' ? `0..16 KiB each` : `${cls('random')}, ${cls('logs')}, ${cls('small')}, ${cls('dup')}`) +
        `; ${d.dirs} dirs, ${d.links} symlinks (${ds.reused ? 'cached' : `generated in ${genS.toFixed(0)} s`}) at ${ds.dir}`,
    );
    dsets[set] = ds;
  }
  log(`work dir ${WORK}: ${dev} (${fsType}) — data sets, repositories and restores on one disk; ${os.cpus().length} CPUs (${os.cpus()[0]?.model}); load average ${loadStart.join(' ')}`);
  log('warm-up: the whole set read once (page cache) right before each first backup; sync (untimed) around every timed step');
  log(`shmpipe: ${opt['shm-cli']}${Object.keys(process.env).filter((k) => k.startsWith('SHMPIPE_') && !k.startsWith('SHMPIPE_PERF_')).map((k) => ` ${k}=${process.env[k]}`).join('')}`);
  log('');

  await waitOutDeletions();
  /** set → tool → [round results] */
  const runs = Object.fromEntries(SETS.map((s) => [s, Object.fromEntries(TOOLS.map((t) => [t, []]))]));
  /** `${set}/${tool}` → the message of its failed step (left out of later rounds of that set). */
  const failed = {};
  for (let round = 1; round <= REPEAT; round++) {
    if (round > 1) await waitOutDeletions();
    const { bavail, bsize } = fs.statfsSync(WORK);
    const need = SETS.reduce((a, s) => a + (1.7 * TOOLS.length + 0.2) * dsets[s].manifest.bytes, 0);
    if (bavail * bsize < need) throw new Error(`only ${((bavail * bsize) / GB).toFixed(1)} GB free under ${WORK}; a round needs ~${(need / GB).toFixed(1)} GB`);
    // Alternate the order between rounds: restic first in odd rounds, shmpipe first in even ones.
    const order = round % 2 === 1 ? [...TOOLS.filter((t) => t !== 'shm'), ...TOOLS.filter((t) => t === 'shm')] : [...TOOLS.filter((t) => t === 'shm'), ...TOOLS.filter((t) => t !== 'shm')];
    for (const set of SETS) {
      for (const name of order.filter((t) => !failed[`${set}/${t}`])) {
        const r = await runTool(name, tools[name], set, dsets[set], round);
        runs[set][name].push(r);
        if (r.error) failed[`${set}/${name}`] = r.error;
      }
    }
  }

  // ---- the tables ----
  const f = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));
  const peersRun = TOOLS.filter((t) => t !== 'shm');
  const out = { sets: {} };
  for (const set of SETS) {
    const res = Object.fromEntries(TOOLS.map((t) => [t, summarise(dsets[set], runs[set][t])]));
    const S = res.shm;
    const cols = [...TOOLS.map((t) => tools[t].title), ...peersRun.map((t) => `shm/${t}`)];
    const w = Math.max(12, ...cols.map((c) => c.length + 2));
    log('');
    log(`${set}: ${(dsets[set].manifest.bytes / MB).toFixed(0)} MB in ${dsets[set].manifest.files} files`);
    log(`${''.padEnd(28)}${cols.map((c) => c.padStart(w)).join('')}   ${versions.restic ? `target (vs restic ${versions.restic.split(' ')[1]})` : 'target (vs restic, not run)'}`);
    const ratios = {};
    const targetsMet = {};
    for (const row of ROWS) {
      const vals = TOOLS.map((t) => f(res[t]?.[row.key], row.dp));
      const rs = row.ratio ? peersRun.map((t) => ratioOf(row, S, res[t])) : peersRun.map(() => null);
      const target = row.target?.[set];
      log(`${row.label.padEnd(28)}${[...vals, ...rs.map((x) => f(x, 2))].map((c) => c.padStart(w)).join('')}   ${target ? row.targetText : ''}`);
      if (row.ratio) {
        ratios[row.json] = Object.fromEntries(peersRun.map((t, i) => [t, fix(rs[i], 3)]));
        const vsRestic = ratios[row.json].restic;
        if (target && vsRestic !== null && vsRestic !== undefined) targetsMet[row.json] = row.lower ? vsRestic <= target : vsRestic >= target;
      }
    }
    if (S) {
      log(
        `shmpipe split: backup CPU agent ${f(S.cpu.backupAgent)} s + sidecar ${f(S.cpu.backupSidecar)} s; restore agent ${f(S.cpu.restoreAgent)} s + sidecar ${f(S.cpu.restoreSidecar)} s; ` +
          `peak PSS by process ${Object.entries(S.pssByLabel).map(([k, v]) => `${k} ${v} MB`).join(', ')}; peak RSS (shared counted per process) ${f(S.peakRss, 0)} MB`,
      );
    }
    for (const [n, t] of Object.entries(res)) {
      if (!t) continue;
      log(`${tools[n].title}: reports ${t.reportedS !== null ? `${Number(t.reportedS).toFixed(2)} s` : '—'} for the backup and ${t.added !== null ? `${(t.added / MB).toFixed(0)} MB` : '—'} added; repository ${f(t.repoApparentMb, 0)} MB apparent; restore ${t.ok ? 'verified' : 'WRONG'}`);
    }
    out.sets[set] = {
      dataset_bytes: dsets[set].manifest.bytes,
      dataset_files: dsets[set].manifest.files,
      tools: Object.fromEntries(
        Object.entries(res)
          .filter(([, t]) => t)
          .map(([n, t]) => [
            n,
            {
              backup_s: fix(t.backupS, 3),
              backup_mbps: fix(t.backupMbps, 1),
              backup_cpu_s_per_gb: fix(t.backupCpu, 3),
              rebackup_s: fix(t.rebackupS, 3),
              rebackup_added_mb: fix(t.rebackupAddedMb, 2),
              restore_s: fix(t.restoreS, 3),
              restore_mbps: fix(t.restoreMbps, 1),
              restore_cpu_s_per_gb: fix(t.restoreCpu, 3),
              peak_pss_mb: fix(t.peakPss, 1),
              backup_pss_mb: fix(t.backupPss, 1),
              rebackup_pss_mb: fix(t.rebackupPss, 1),
              restore_pss_mb: fix(t.restorePss, 1),
              pss_by_process_mb: t.pssByLabel,
              repo_mb: fix(t.repoMb, 1),
              restore_ok: t.ok,
              ...(n === 'shm' ? { cpu_split_s: t.cpu } : {}),
            },
          ]),
      ),
      ratios,
      targets_met: targetsMet,
    };
    for (const [n, t] of Object.entries(res)) {
      if (t && !t.ok && !failed[`${set}/${n}`]) console.error(`\n!!! ${set}: ${tools[n].title} RESTORE IS WRONG: ${t.problems.length} problem(s), first ones:\n  ${t.problems.slice(0, 20).join('\n  ')}`);
    }
  }
  const loadEnd = os.loadavg().map((x) => fix(x));
  if (opt.keep) log(`kept: ${WORK}/run-*`);
  else cleanup();
  log(`load average at start ${loadStart.join(' ')}, at end ${loadEnd.join(' ')}; ${REPEAT > 1 ? `median of ${REPEAT} rounds, order alternating` : 'one round, peers first'}`);
  for (const [k, m] of Object.entries(failed)) console.error(`\n!!! ${k}: ${m}`);
  const wrong = Object.values(out.sets).some((s) => Object.values(s.tools).some((t) => !t.restore_ok));
  const summary = {
    versions,
    left_out: Object.keys(absent).length ? absent : null,
    ...out,
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? null, mem_gb: fix(os.totalmem() / GB, 1), kernel: os.release(), fs: fsType },
    repeat: REPEAT,
    load_avg_start_1_5_15: loadStart,
    load_avg_end_1_5_15: loadEnd,
    failed: Object.keys(failed).length ? Object.fromEntries(Object.entries(failed).map(([k, v]) => [k, v.replace(/\s*\n\s*/g, ' ').slice(0, 300)])) : null,
  };
  console.log(JSON.stringify(summary));
  if (wrong || Object.keys(failed).length) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
