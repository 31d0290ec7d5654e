#!/usr/bin/env node
// perf:scale — shmpipe and restic v0.18.1 on a tree of many small files (issue #13 item 5), in
// one run: each tool initialises a fresh local repository and then, timed:
//   1. first backup of the tree;
//   2. no-change incremental backup (every file unchanged against the parent: not read);
//   3. restore of the latest snapshot to a fresh directory (checked: every file's bytes);
//   4. forget --keep-last 1 --prune, after an untimed third backup that excludes 10 % of the
//      tree (top directories d0*), so prune has that 10 % to drop — when `shmpipe forget` exists
//      (the prune helper's verbs); otherwise skipped with a note.
// For each step: wall time (spawn to exit) and peak memory as the summed PSS of the whole
// process tree (shmpipe: the CLI's node process, its private sidecar and the shared segment,
// counted once; lib/pss.js through lib/proc-tree.js, sampled every 50 ms), with the agent's and
// the sidecar's own peaks beside it. Prints a table with the ratios shmpipe/restic, then one JSON
// object as the last line. Measures, never asserts.
//
//   npm run perf:scale                       # = npm run build && node perf/scale.js
//   node perf/scale.js [--files 1000000] [--dir DIR] [--seed 1] [--only shm,restic] [--keep]
//                      [--shm-cli ts-lib/dist/cli.js] [--restic BIN]
//
// The tree (generated once into DIR and reused while its manifest matches): N files of
// 64..2047 bytes (text: the file's number repeated, then a few random bytes, so no two files
// are equal and each is one chunk), 100 to a directory, d00..d99/sNNNN. Both tools keep their
// caches in DIR (restic --cache-dir; shmpipe's under XDG_CACHE_HOME). A `sync` runs before each
// timed step; the page cache is not dropped (every file is read once before the first backup).
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { measure } = require('./lib/proc-tree');
const { ensureRestic } = require('./lib/peers');
const { prng } = require('./lib/prng');

const root = path.resolve(__dirname, '..');
const MB = 1e6;
const VERSION = 1;
const PASSWORD = 'perf-scale-password';

const { values: opt } = parseArgs({
  options: {
    files: { type: 'string', default: process.env.SHMPIPE_PERF_SCALE_FILES || '1000000' },
    dir: { type: 'string', default: process.env.SHMPIPE_PERF_SCALE_DIR || path.join(os.tmpdir(), 'shmpipe-perf-scale') },
    seed: { type: 'string', default: '1' },
    only: { type: 'string', default: 'shm,restic' },
    'shm-cli': { type: 'string', default: path.join(root, 'ts-lib', 'dist', 'cli.js') },
    restic: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
});
const N = Math.max(100, Math.round(Number(opt.files)));
const SEED = Number(opt.seed);
const WORK = path.resolve(opt.dir);
const log = (s) => process.stderr.write(`${s}\n`);

// ---- the data set -------------------------------------------------------------------------------

/** File `i`'s relative path and bytes (deterministic in `i` and the seed). */
function fileOf(i, r) {
  const k = Math.floor(i / 100);
  const rel = `d${String(k % 100).padStart(2, '0')}/s${String(Math.floor(k / 100)).padStart(4, '0')}/f${i}.txt`;
  const size = 64 + Math.floor(r() * 1984);
  const head = Buffer.from(`file ${i} of the perf:scale set, seed ${SEED}\n`.repeat(Math.ceil(size / 40))).subarray(0, size - 16);
  const tail = Buffer.alloc(16);
  for (let j = 0; j < 16; j++) tail[j] = Math.floor(r() * 256);
  return { rel, data: Buffer.concat([head, tail]) };
}

function* files() {
  const r = prng(SEED ^ 0x5ca1e);
  for (let i = 0; i < N; i++) yield fileOf(i, r);
}

/** The tree under WORK for (N, seed), generated unless its marker says it is complete. */
function ensureTree() {
  const dir = path.join(WORK, `tree-v${VERSION}-${N}-${SEED}`);
  const marker = `${dir}.complete.json`;
  if (fs.existsSync(marker)) {
    log(`data set: reusing ${dir}`);
    return { dir, ...JSON.parse(fs.readFileSync(marker, 'utf8')) };
  }
  fs.rmSync(dir, { recursive: true, force: true });
  log(`data set: generating ${N} files in ${dir}`);
  let bytes = 0;
  let lastDir = '';
  const t0 = Date.now();
  let n = 0;
  for (const f of files()) {
    const d = path.join(dir, path.dirname(f.rel));
    if (d !== lastDir) fs.mkdirSync((lastDir = d), { recursive: true });
    fs.writeFileSync(path.join(dir, f.rel), f.data);
    bytes += f.data.length;
    if (++n % 100000 === 0) log(`  ${n} files (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  const info = { files: N, bytes };
  fs.writeFileSync(marker, JSON.stringify(info));
  return { dir, ...info };
}

/** Every file's bytes equal the generated ones (restores are checked in full). */
function verifyRestore(restored) {
  let bad = 0;
  let first = null;
  for (const f of files()) {
    let got;
    try {
      got = fs.readFileSync(path.join(restored, f.rel));
    } catch (e) {
      got = null;
    }
    if (got === null || !got.equals(f.data)) {
      bad++;
      first ??= f.rel;
    }
  }
  return bad === 0 ? null : `${bad} of ${N} files differ or are missing (first: ${first})`;
}

function readAll(dir) {
  const buf = Buffer.alloc(4096);
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const fd = fs.openSync(p, 'r');
        fs.readSync(fd, buf, 0, buf.length, 0);
        fs.closeSync(fd);
      }
    }
  };
  walk(dir);
}

// ---- the tools ----------------------------------------------------------------------------------

function hasVerb(cli, verb) {
  const r = spawnSync(process.execPath, [cli, 'help'], { encoding: 'utf8' });
  return new RegExp(`^\\s+${verb}\\b`, 'm').test(`${r.stdout}${r.stderr}`);
}

function makeTools(restic, base) {
  const shmEnv = (repo) => {
    const env = { ...process.env, SHMPIPE_REPO: repo, SHMPIPE_PASSWORD: PASSWORD, XDG_CACHE_HOME: path.join(base, 'shm', 'cache') };
    delete env.SHMPIPE_SIDECAR_SOCKET;
    delete env.SHMPIPE_PASSWORD_FILE;
    delete env.SHMPIPE_CACHE_DIR;
    return env;
  };
  const cli = opt['shm-cli'];
  const shm = (repo, ...args) => [process.execPath, [cli, ...args], { env: shmEnv(repo) }];
  const resticEnv = { ...process.env, RESTIC_PASSWORD: PASSWORD, RESTIC_PROGRESS_FPS: '1' };
  const rcache = path.join(base, 'restic', 'cache');
  const rs = (repo, ...args) => [restic?.bin, ['-r', repo, '--cache-dir', rcache, ...args], { env: resticEnv }];
  return {
    shm: {
      title: 'shmpipe',
      label: (comm, depth) => (depth === 0 ? 'agent' : comm === 'shmpipe-sidecar' ? 'sidecar' : comm),
      init: (repo) => shm(repo, 'init'),
      backup: (repo, src, exclude) => shm(repo, 'backup', src, '--json', ...(exclude ? ['--exclude', exclude] : [])),
      restore: (repo, target) => shm(repo, 'restore', 'latest', target, '--json'),
      forgetPrune: hasVerb(cli, 'forget') ? (repo) => shm(repo, 'forget', '--keep-last', '1', '--prune', '--json') : null,
      restored: (target, src) => path.join(target, path.basename(src)),
    },
    restic: {
      title: `restic ${restic?.version?.split(' ')[1] ?? ''}`.trim(),
      label: () => 'restic',
      init: (repo) => rs(repo, 'init'),
      backup: (repo, src, exclude) => rs(repo, 'backup', src, '--json', ...(exclude ? ['--exclude', exclude] : [])),
      restore: (repo, target) => rs(repo, 'restore', 'latest', '--target', target),
      forgetPrune: (repo) => rs(repo, 'forget', '--keep-last', '1', '--prune'),
      restored: (target, src) => path.join(target, src),
    },
  };
}

class RunFailed extends Error {}

async function run(what, label, [cmd, args, o]) {
  spawnSync('sync');
  const r = await measure(cmd, args, o, { label, pssIntervalMs: 50 });
  if (r.code !== 0) throw new RunFailed(`${what} failed (exit ${r.code ?? r.signal}):\n${(r.stderr || r.stdout).trim().slice(-3000)}`);
  return r;
}

const STEPS = [
  ['backup', 'first backup'],
  ['incremental', 'no-change incremental'],
  ['restore', 'restore'],
  ['forgetPrune', 'forget --keep-last 1 --prune'],
];

async function runTool(name, tool, tree) {
  const base = path.join(WORK, 'runs', name);
  fs.rmSync(base, { recursive: true, force: true });
  fs.mkdirSync(base, { recursive: true });
  const repo = path.join(base, 'repo');
  const target = path.join(base, 'restore');
  const out = { steps: {} };
  const record = (step, r) => {
    out.steps[step] = { s: r.wall, pssMB: r.peakPss / MB, byLabelMB: Object.fromEntries(Object.entries(r.pssByLabel ?? {}).map(([k, v]) => [k, v / MB])) };
    const parts = Object.entries(out.steps[step].byLabelMB).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ');
    log(`  ${name} ${step}: ${r.wall.toFixed(1)} s, peak PSS ${(r.peakPss / MB).toFixed(0)} MB (${parts})`);
  };
  await run(`${name} init`, tool.label, tool.init(repo));
  readAll(tree.dir);
  record('backup', await run(`${name} backup`, tool.label, tool.backup(repo, tree.dir)));
  record('incremental', await run(`${name} incremental`, tool.label, tool.backup(repo, tree.dir)));
  record('restore', await run(`${name} restore`, tool.label, tool.restore(repo, target)));
  const bad = verifyRestore(tool.restored(target, tree.dir));
  if (bad) throw new RunFailed(`${name}: the restore is wrong: ${bad}`);
  fs.rmSync(target, { recursive: true, force: true });
  if (tool.forgetPrune) {
    await run(`${name} backup without d0*`, tool.label, tool.backup(repo, tree.dir, 'd0*'));
    record('forgetPrune', await run(`${name} forget+prune`, tool.label, tool.forgetPrune(repo)));
  } else {
    out.steps.forgetPrune = null;
    log(`  ${name} forget+prune: skipped (this build has no \`shmpipe forget\`)`);
  }
  out.repoMB = du(repo) / MB;
  if (!opt.keep) fs.rmSync(base, { recursive: true, force: true });
  return out;
}

function du(dir) {
  const r = spawnSync('du', ['-sb', dir], { encoding: 'utf8' });
  return Number(r.stdout.split('\t')[0]) || 0;
}

async function main() {
  const only = opt.only.split(',');
  fs.mkdirSync(WORK, { recursive: true });
  const restic = only.includes('restic') ? ensureRestic(log, opt.restic) : null;
  const tree = ensureTree();
  const tools = makeTools(restic, path.join(WORK, 'runs'));
  log(`perf:scale: ${N} files, ${(tree.bytes / MB).toFixed(0)} MB, ${os.cpus().length} CPUs; ${restic ? restic.version : 'no restic'}`);
  const results = {};
  let failed = null;
  for (const name of only) {
    try {
      results[name] = await runTool(name, tools[name], tree);
    } catch (e) {
      if (!(e instanceof RunFailed)) throw e;
      failed ??= e.message;
      log(e.message);
    }
  }

  const fmt = (v, dp) => (v === undefined || v === null ? '—' : v.toFixed(dp));
  const head = `${'step'.padEnd(30)} ${'shmpipe s'.padStart(10)} ${'restic s'.padStart(9)} ${'ratio'.padStart(6)} ${'shm PSS MB'.padStart(11)} ${'restic PSS MB'.padStart(14)} ${'ratio'.padStart(6)}`;
  const lines = [`perf:scale — ${N} files (${(tree.bytes / MB).toFixed(0)} MB); ratio = shmpipe / restic (lower is better)`, head];
  const json = { files: N, bytes: tree.bytes, restic: restic?.version ?? null, steps: {} };
  for (const [key, title] of STEPS) {
    const a = results.shm?.steps[key];
    const b = results.restic?.steps[key];
    const ratio = (x, y) => (x !== undefined && y !== undefined && y > 0 ? x / y : undefined);
    lines.push(
      `${title.padEnd(30)} ${fmt(a?.s, 1).padStart(10)} ${fmt(b?.s, 1).padStart(9)} ${fmt(ratio(a?.s, b?.s), 2).padStart(6)} ${fmt(a?.pssMB, 0).padStart(11)} ${fmt(b?.pssMB, 0).padStart(14)} ${fmt(ratio(a?.pssMB, b?.pssMB), 2).padStart(6)}`,
    );
    json.steps[key] = {
      shm_s: a?.s ?? null,
      restic_s: b?.s ?? null,
      shm_pss_mb: a?.pssMB ?? null,
      restic_pss_mb: b?.pssMB ?? null,
      shm_agent_pss_mb: a?.byLabelMB?.agent ?? null,
      shm_sidecar_pss_mb: a?.byLabelMB?.sidecar ?? null,
    };
  }
  lines.push(`repository size: shmpipe ${fmt(results.shm?.repoMB, 0)} MB, restic ${fmt(results.restic?.repoMB, 0)} MB`);
  json.shm_repo_mb = results.shm?.repoMB ?? null;
  json.restic_repo_mb = results.restic?.repoMB ?? null;
  if (failed) json.failed = failed.split('\n')[0];
  console.log(lines.join('\n'));
  console.log(JSON.stringify(json));
  if (failed) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
