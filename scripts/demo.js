#!/usr/bin/env node
// `npm run demo`: a real backup and restore with the `shmpipe` CLI on the embedded default
// repository (file://$XDG_DATA_HOME/shmpipe/repo, else ~/.local/share/shmpipe/repo; SHMPIPE_REPO
// overrides), no server to set up. Generates a sample directory in a temp dir (mixed sizes,
// compressible text, incompressible data, a duplicate, many small files, a symlink, an empty
// directory), then runs `shmpipe init` (when there is no repository yet), `shmpipe backup`,
// `shmpipe backup` again (incremental: nothing is read), `shmpipe restore latest` into a second
// temp dir, and compares every byte and the metadata. Each command starts its own private
// sidecar. Password: SHMPIPE_PASSWORD, else "shmpipe-demo". The data is the same on every run
// (a fixed-key AES-CTR stream), so repeated demos deduplicate instead of growing the repository.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const CLI = path.join(__dirname, '..', 'ts-lib', 'dist', 'cli.js');
const MiB = 1 << 20;
const SIZES = [0, 1, 4096, 100_000, MiB, 3 * MiB + 17, 32 * MiB, 96 * MiB];

/** `n` bytes of incompressible but reproducible data (stream `i`). */
function pseudoRandom(n, i) {
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(i, 0);
  return crypto.createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), iv).update(Buffer.alloc(n));
}

function makeSample(dir) {
  fs.mkdirSync(path.join(dir, 'small'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'empty'));
  let n = 0;
  for (const size of SIZES) {
    for (const kind of ['random', 'text']) {
      const buf = kind === 'random' ? pseudoRandom(size, n) : Buffer.alloc(size, 'shmpipe moves bytes without copying them. ');
      fs.writeFileSync(path.join(dir, `${String(n++).padStart(2, '0')}-${kind}-${size}.bin`), buf);
    }
  }
  fs.copyFileSync(path.join(dir, `14-random-${96 * MiB}.bin`), path.join(dir, 'duplicate.bin'));
  for (let i = 0; i < 1000; i++) fs.writeFileSync(path.join(dir, 'small', `file-${i}.txt`), `small file ${i}\n`.repeat(1 + (i % 50)));
  fs.symlinkSync('duplicate.bin', path.join(dir, 'link'));
  // Fixed times, so an unchanged sample is recognised as unchanged by a later demo's backup.
  const t = 1_700_000_000.5;
  (function touch(p) {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const c of fs.readdirSync(p)) touch(path.join(p, c));
    fs.lutimesSync(p, t, t);
  })(dir);
}

/** Path → {mode, mtime ns, sha256 or link target}, for the comparison. */
function manifest(root) {
  const out = new Map();
  (function walk(rel) {
    const abs = path.join(root, rel);
    const st = fs.lstatSync(abs, { bigint: true });
    const m = { mode: st.mode, mtimeNs: st.mtimeNs, size: st.isFile() ? st.size : 0n, what: '' };
    if (st.isSymbolicLink()) m.what = `-> ${fs.readlinkSync(abs)}`;
    else if (st.isFile()) m.what = crypto.createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
    out.set(rel || '.', m);
    if (st.isDirectory()) for (const c of fs.readdirSync(abs).sort()) walk(path.join(rel, c));
  })('');
  return out;
}

function compare(original, restored) {
  const a = manifest(original);
  const b = manifest(restored);
  const bad = [];
  for (const [p, m] of a) {
    const r = b.get(p);
    if (r === undefined) bad.push(`${p}: missing`);
    else if (r.what !== m.what) bad.push(`${p}: content differs`);
    else if (r.mode !== m.mode) bad.push(`${p}: mode ${r.mode.toString(8)} instead of ${m.mode.toString(8)}`);
    // Restored mtimes are within 1 µs (utimes takes seconds as a double: restore-fs.ts).
    else if (r.mtimeNs - m.mtimeNs > 1000n || m.mtimeNs - r.mtimeNs > 1000n) bad.push(`${p}: mtime ${r.mtimeNs} instead of ${m.mtimeNs}`);
  }
  for (const p of b.keys()) if (!a.has(p)) bad.push(`${p}: not in the original`);
  return { entries: a.size, bytes: [...a.values()].reduce((s, m) => s + m.size, 0n), bad };
}

/** Runs `shmpipe …`, its output shown as it goes; returns the exit code. */
function shmpipe(args, env) {
  console.log(`\n$ shmpipe ${args.join(' ')}`);
  return spawnSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'inherit', 'pipe'], env, encoding: 'utf8' });
}

function must(r, what) {
  if (r.status !== 0) {
    process.stderr.write(r.stderr ?? '');
    throw new Error(`${what} failed (exit ${r.status})`);
  }
  process.stderr.write(r.stderr ?? '');
}

function main() {
  const env = { ...process.env, SHMPIPE_PASSWORD: process.env.SHMPIPE_PASSWORD || 'shmpipe-demo' };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-demo-'));
  const src = path.join(work, 'sample');
  const back = path.join(work, 'restored');
  try {
    makeSample(src);
    const sample = compare(src, src);
    console.log(`sample: ${sample.entries} entries, ${(Number(sample.bytes) / MiB).toFixed(1)} MiB in ${src}`);

    const init = shmpipe(['init'], env);
    if (init.status !== 0 && !/already exists/.test(init.stderr)) must(init, 'shmpipe init');
    if (init.status !== 0) console.log('(the repository exists already: using it)');
    must(shmpipe(['backup', src], env), 'shmpipe backup');
    must(shmpipe(['backup', src], env), 'shmpipe backup (incremental)');
    must(shmpipe(['restore', 'latest', back], env), 'shmpipe restore');

    const r = compare(src, path.join(back, 'sample'));
    if (r.bad.length > 0) throw new Error(`the restore differs from the original:\n  ${r.bad.slice(0, 20).join('\n  ')}`);
    console.log(`\nverified: all ${r.entries} entries restored bit-exact, with their modes, mtimes and symlinks`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

try {
  main();
} catch (e) {
  console.error(`demo failed: ${e.message}`);
  process.exit(1);
}
