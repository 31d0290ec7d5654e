// The backup CLI end to end, as a user runs it (ts-lib/dist/cli.js, each command starting its
// own private sidecar on a repository in a temp dir): init → backup → snapshots → restore →
// compare bytes and metadata; a second backup is incremental; wrong password, usage errors,
// an unreadable file (exit 3, still committed), and check. The `--json` lines are the contract
// other tools parse (README: "The backup CLI").
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { execFileSync, spawn, spawnSync } = require('node:child_process');

const B = require('../ts-lib/dist/backup.js');
const { connect } = require('../ts-lib/dist/index.js');
const { startSidecar } = require('./helpers/sidecar');

const CLI = path.join(__dirname, '..', 'ts-lib', 'dist', 'cli.js');

function lines(stdout) {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
}

/** Every regular file, dir and symlink under `root`: type and mode, mtime (ns), bytes or target. */
function manifest(root) {
  const out = {};
  (function walk(rel) {
    const abs = path.join(root, rel);
    const st = fs.lstatSync(abs, { bigint: true });
    const m = { mode: Number(st.mode), mtimeNs: st.mtimeNs };
    if (st.isSymbolicLink()) m.target = fs.readlinkSync(abs);
    else if (st.isFile()) m.sha = crypto.createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
    out[rel || '.'] = m;
    if (st.isDirectory()) for (const n of fs.readdirSync(abs).sort()) walk(path.join(rel, n));
  })('');
  return out;
}

/** Same entries, modes, bytes and targets; mtimes within 1 µs (restore-fs.ts: utimes takes a double). */
function assertSameTree(restored, original) {
  const a = manifest(restored);
  const b = manifest(original);
  assert.deepEqual(Object.keys(a), Object.keys(b));
  for (const [p, m] of Object.entries(b)) {
    const { mtimeNs, ...rest } = a[p];
    const { mtimeNs: want, ...wantRest } = m;
    assert.deepEqual(rest, wantRest, p);
    assert.equal(mtimeNs, want, `${p}: mtime restored to the nanosecond`);
  }
}

/** Pids of processes (private sidecars) whose SHMPIPE_STORE is the repository `dir`. */
function sidecarsOn(dir) {
  const want = `SHMPIPE_STORE=${pathToFileURL(dir).href}\0`;
  return fs.readdirSync('/proc').filter((p) => {
    if (!/^\d+$/.test(p)) return false;
    try {
      return fs.readFileSync(`/proc/${p}/environ`, 'latin1').includes(want);
    } catch {
      return false; // gone, or not ours to read
    }
  });
}

describe('backup CLI: init, backup, snapshots, restore', function () {
  this.timeout(300_000);
  let work;
  let repo;
  let src;
  let env;
  const run = (args, extra = {}) =>
    spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 240_000, env: { ...env, ...extra }, maxBuffer: 64 << 20 });

  before(function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-cli-smoke-'));
    repo = path.join(work, 'repo');
    src = path.join(work, 'data');
    // No SHMPIPE_* from the outside (a running sidecar, a repository); nothing under $HOME.
    env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SHMPIPE_')));
    Object.assign(env, { SHMPIPE_PASSWORD: 'smoke-test password', SHMPIPE_REPO: repo, XDG_DATA_HOME: path.join(work, 'xdg'), HOME: work });
    fs.mkdirSync(path.join(src, 'sub', 'deep'), { recursive: true });
    fs.mkdirSync(path.join(src, 'empty'));
    fs.writeFileSync(path.join(src, 'zero'), '');
    fs.writeFileSync(path.join(src, 'small.txt'), 'hello shmpipe\n'.repeat(100));
    const big = crypto.randomBytes((9 << 20) + 4321); // more than two 4 MiB slots: FILE_OPEN/WRITE/FINISH
    fs.writeFileSync(path.join(src, 'big.bin'), big);
    fs.writeFileSync(path.join(src, 'sub', 'deep', 'copy.bin'), big);
    fs.writeFileSync(path.join(src, 'sub', 'text.log'), 'line of text\n'.repeat(300_000));
    fs.writeFileSync(path.join(src, 'ünïcødé name'), 'odd');
    fs.writeFileSync(path.join(src, 'exec.sh'), '#!/bin/sh\n', { mode: 0o750 });
    fs.chmodSync(path.join(src, 'exec.sh'), 0o750);
    fs.symlinkSync('small.txt', path.join(src, 'link'));
    fs.symlinkSync('../nowhere', path.join(src, 'dangling'));
    const t = 1_650_000_000.25;
    fs.utimesSync(path.join(src, 'small.txt'), t, t);
    fs.lutimesSync(path.join(src, 'link'), t + 1, t + 1);
    fs.utimesSync(path.join(src, 'sub', 'deep'), t + 2, t + 2);
  });

  after(function () {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('init creates the repository once', function () {
    const r = run(['init']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /created repository at file:\/\//);
    assert.ok(fs.existsSync(path.join(repo, 'config')), 'the repository config is in the --repo directory');
    const again = run(['init']);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /a repository already exists at file:\/\//);
  });

  let first;
  it('backs up a tree (--json progress/summary lines) and lists the snapshot', function () {
    const r = run(['backup', src, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = lines(r.stdout);
    const summary = out[out.length - 1];
    assert.equal(summary.type, 'summary');
    assert.ok(out.slice(0, -1).every((l) => l.type === 'progress'), 'only progress lines before the summary');
    assert.match(summary.snapshot, /^[0-9a-f]{64}$/);
    assert.equal(summary.files_new, 7);
    assert.equal(summary.others, 2, 'two symlinks');
    assert.equal(summary.files_changed + summary.files_unchanged, 0);
    assert.equal(summary.dirs, 4);
    const bytes = (9 << 20) + 4321;
    assert.equal(summary.bytes_read, 2 * bytes + 1400 + 13 * 300_000 + 3 + 10);
    // The duplicate and the text compress away: far less stored than read.
    assert.ok(summary.bytes_added < bytes + 1_000_000, `stored ${summary.bytes_added} bytes`);
    for (const k of ['duration_ms', 'mbps', 'bytes_added_plain']) assert.equal(typeof summary[k], 'number', k);
    first = summary.snapshot;

    const s = run(['snapshots', '--json']);
    assert.equal(s.status, 0, s.stderr);
    const list = JSON.parse(s.stdout);
    assert.equal(list.length, 1);
    assert.equal(list[0].id, first);
    assert.deepEqual(list[0].paths, [src]);
  });

  it('lists the entries in walk order although files finish out of order', async function () {
    // big.bin (streamed, slow) comes first in its directory; the small files after it finish
    // first, and still the snapshot lists everything in the walker's order.
    const walked = [];
    for await (const e of B.walk([src], () => {})) walked.push(e.path);
    const sc = await startSidecar({ env: { SHMPIPE_STORE: pathToFileURL(repo).href } });
    const client = await connect({ socketPath: sc.socketPath });
    try {
      const repoHandle = await B.ops.repoOpen(client, env.SHMPIPE_PASSWORD);
      const listed = [];
      for await (const e of await B.ops.entries(client, repoHandle, first)) listed.push(e.path);
      assert.deepEqual(listed, walked);
      assert.ok(walked.indexOf('data/big.bin') < walked.indexOf('data/small.txt'));
    } finally {
      await client.close();
      await sc.stop();
    }
  });

  it('restores latest bit-exact with modes, mtimes and symlinks', function () {
    const target = path.join(work, 'restored');
    const r = run(['restore', 'latest', target, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const summary = lines(r.stdout).pop();
    assert.equal(summary.type, 'summary');
    assert.equal(summary.files, 7);
    assert.equal(typeof summary.mbps, 'number');
    assertSameTree(path.join(target, path.basename(src)), src);
  });

  it('a second backup records unchanged files by reference and adds almost nothing', function () {
    fs.appendFileSync(path.join(src, 'small.txt'), 'changed\n');
    const r = run(['backup', src, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const summary = lines(r.stdout).pop();
    assert.equal(summary.parent, first);
    assert.equal(summary.files_changed, 1);
    assert.equal(summary.files_unchanged, 6);
    assert.equal(summary.bytes_read, 1408);
    assert.ok(summary.bytes_added < 64 << 10, `stored ${summary.bytes_added} bytes`);
  });

  it('--no-parent reads everything again, dedup keeps it small; --parent ID names the parent', function () {
    const none = lines(run(['backup', src, '--json', '--no-parent']).stdout).pop();
    assert.equal(none.parent, null);
    assert.equal(none.files_new, 7);
    assert.ok(none.bytes_added < 64 << 10, `stored ${none.bytes_added} bytes`);
    const named = lines(run(['backup', src, '--json', '--parent', first]).stdout).pop();
    assert.equal(named.parent, first);
    assert.equal(named.files_changed, 1, 'small.txt changed since the first snapshot');
    assert.equal(named.files_unchanged, 6);
  });

  it('restores one path of an older snapshot with --include (by id prefix)', function () {
    const target = path.join(work, 'partial');
    const r = run(['restore', first.slice(0, 10), target, '--include', 'data/sub/deep']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.existsSync(path.join(target, 'data', 'sub', 'deep', 'copy.bin')));
    assert.ok(!fs.existsSync(path.join(target, 'data', 'big.bin')), 'only the included path');
  });

  it('lists an unreadable file, leaves it out, commits, and exits 3', function () {
    // Root reads mode-000 files: as root, this backup runs as nobody, on a work dir opened up.
    const asRoot = process.getuid() === 0;
    if (asRoot) {
      // A checkout nobody can read (e.g. under a 0700 /root) leaves no way to test this as root.
      const sidecar = path.join(__dirname, '..', 'target', 'release', 'shmpipe-sidecar');
      const probe = spawnSync(process.execPath, ['-e', `const fs = require('fs'); fs.accessSync(${JSON.stringify(CLI)}, fs.constants.R_OK); fs.accessSync(${JSON.stringify(sidecar)}, fs.constants.X_OK)`], { uid: 65534, gid: 65534, encoding: 'utf8' });
      if (probe.status !== 0) {
        console.log(`      skipped: running as root, and uid 65534 cannot run the CLI from this checkout: ${probe.stderr.split('\n').find((l) => /Error/.test(l)) ?? probe.stderr.trim()}`);
        this.skip();
      }
      execFileSync('chmod', ['-R', 'a+rwX', work]);
    }
    const locked = path.join(src, 'locked');
    fs.writeFileSync(locked, 'secret');
    fs.chmodSync(locked, 0);
    try {
      const r = spawnSync(process.execPath, [CLI, 'backup', src, '--json'], { encoding: 'utf8', timeout: 240_000, env, ...(asRoot ? { uid: 65534, gid: 65534 } : {}) });
      assert.equal(r.status, 3, r.stderr);
      const out = lines(r.stdout);
      const errors = out.filter((l) => l.type === 'error');
      assert.equal(errors.length, 1);
      assert.equal(errors[0].path, 'data/locked');
      assert.equal(errors[0].code, 'EACCES');
      assert.match(out.pop().snapshot, /^[0-9a-f]{64}$/);
    } finally {
      fs.rmSync(locked);
    }
  });

  it('SIGTERM during a backup aborts it: exit 143, nothing committed, the sidecar stopped', async function () {
    // 8 GiB of holes: seconds of reading, so the signal surely lands mid-backup.
    const big = path.join(work, 'sparse');
    fs.mkdirSync(big);
    fs.writeFileSync(path.join(big, 'holes'), '');
    fs.truncateSync(path.join(big, 'holes'), 8 * 2 ** 30);
    const before = JSON.parse(run(['snapshots', '--json']).stdout).length;
    const child = spawn(process.execPath, [CLI, 'backup', big, '--json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // The first progress line: the backup is under way.
    await new Promise((resolve) => child.stdout.once('data', resolve));
    child.kill('SIGTERM');
    const code = await new Promise((resolve) => child.once('exit', (c) => resolve(c)));
    assert.equal(code, 143, stderr);
    assert.match(stderr, /interrupted; the backup was aborted, nothing was committed/);
    assert.equal(JSON.parse(run(['snapshots', '--json']).stdout).length, before);
    assert.deepEqual(sidecarsOn(repo), [], 'the private sidecar was stopped');
  });

  it('the sidecar killed mid-backup: exit 1 with a clear line; the repository stays consistent', async function () {
    const big = path.join(work, 'sparse'); // from the SIGTERM test
    const before = JSON.parse(run(['snapshots', '--json']).stdout).length;
    const child = spawn(process.execPath, [CLI, 'backup', big, '--json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    await new Promise((resolve) => child.stdout.once('data', resolve));
    const sidecars = sidecarsOn(repo);
    assert.equal(sidecars.length, 1, 'the backup runs its own sidecar');
    process.kill(Number(sidecars[0]), 'SIGKILL');
    const code = await new Promise((resolve) => child.once('exit', (c) => resolve(c)));
    assert.equal(code, 1, stderr);
    assert.match(stderr, /^shmpipe backup: the sidecar went away \(.*\); nothing was committed by this run/m);
    assert.equal(JSON.parse(run(['snapshots', '--json']).stdout).length, before);
    fs.rmSync(big, { recursive: true });
  });

  it('check passes; stats counts the objects', function () {
    const c = run(['check', '--read-data', '--json']);
    assert.equal(c.status, 0, c.stderr);
    const report = JSON.parse(c.stdout);
    assert.equal(report.ok, true);
    assert.ok(report.blobs_verified > 0);
    const s = run(['stats', '--json']);
    assert.equal(s.status, 0, s.stderr);
    const st = JSON.parse(s.stdout);
    assert.ok(st.snapshots >= 2);
    assert.ok(st.by_kind.packs.objects > 0 && st.by_kind.snapshots.objects === st.snapshots);
  });

  it('a wrong password is one clear line and exit 1', function () {
    const r = run(['snapshots'], { SHMPIPE_PASSWORD: 'not it' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^shmpipe snapshots: wrong password for repository file:\/\/.*\n$/);
  });

  it('usage errors exit 2', function () {
    assert.equal(run(['backup']).status, 2);
    assert.equal(run(['restore', 'latest']).status, 2);
    assert.equal(run(['backup', src, '--parent', 'abc']).status, 2);
    assert.equal(run(['backup', src, '--parent', first, '--no-parent']).status, 2);
    const both = run(['snapshots', '--repo', repo, '--sidecar', '/nonexistent.sock']);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /--repo configures a private sidecar/);
  });
});
