// The backup pipeline end to end when things go wrong (issue 5, deliverable 6), through the
// real `shmpipe` CLI and sidecar binary:
// - a corrupted pack: `check --read-data` fails and names the affected files, plain `check`
//   (structure only) passes, restore restores every other file bit-exact and fails (exit 3)
//   exactly the affected ones;
// - the sidecar SIGKILLed mid-backup (a sidecar the test runs, `--sidecar SOCKET`): the CLI
//   exits non-zero and says the sidecar went away, `check` then passes, and the next backup
//   completes and restores;
// - files that cannot be read: listed, the backup still committed, exit 3;
// - a file with an mtime before 1970.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { CLI, cliEnv, runCli, okSummary } = require('./helpers/cli');
const { sidecarBin } = require('./helpers/paths');
const { startSidecar } = require('./helpers/sidecar');
const { manifest, assertSameManifest, removeTree, sha256File, writeRandom, writeText, MiB } = require('./helpers/tree');

const PASSWORD = 'e2e faults password';

/** Regular files under `dir`, recursively, as absolute paths. */
function allFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** A manifest without the entries for which `drop(key)` holds. */
function without(m, drop) {
  return Object.fromEntries(Object.entries(m).filter(([k]) => !drop(k)));
}

describe('backup e2e: a corrupted pack', function () {
  this.timeout(180_000);
  let work;
  let src;
  let repo;
  let env;
  let snapshot;
  let affected;
  const cli = (args) => runCli([...args, '--repo', repo], { env });

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-pack-'));
    src = path.join(work, 'src');
    repo = path.join(work, 'repo');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    // 40 MiB of distinct random data in 8 files (more than two 16 MiB packs), and small files.
    fs.mkdirSync(path.join(src, 'big'), { recursive: true });
    for (let i = 0; i < 8; i++) writeRandom(path.join(src, 'big', `part-${i}.bin`), 5 * MiB, `pack-${i}`);
    fs.mkdirSync(path.join(src, 'small'));
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(src, 'small', `note-${i}.txt`), `small file ${i}\n`.repeat(i + 1));
    writeText(path.join(src, 'small', 'log.txt'), 300_000);
    assert.equal((await cli(['init'])).status, 0);
    const s = okSummary(await cli(['backup', src, '--json']));
    snapshot = s.snapshot;
    assert.ok(s.packs_added >= 2, `at least two packs: ${JSON.stringify(s)}`);
  });

  after(function () {
    if (work) removeTree(work);
  });

  it('check --read-data passes on the intact repository', async function () {
    const r = await cli(['check', '--read-data', '--json']);
    assert.equal(r.status, 0, r.why);
    const report = r.lines[0];
    assert.equal(report.ok, true);
    assert.deepEqual(report.errors, []);
    assert.deepEqual(report.affected_files, []);
    assert.equal(report.snapshots, 1);
    assert.ok(report.blobs_verified >= 40, `blobs verified: ${report.blobs_verified}`);
  });

  it('flipped bytes in the middle of the largest pack: check --read-data exits 1 and names the pack and the affected file', async function () {
    const packs = allFiles(path.join(repo, 'packs'));
    assert.ok(packs.length >= 2, `packs on disk: ${packs.join(', ')}`);
    const victim = packs.map((p) => [p, fs.statSync(p).size]).sort((a, b) => b[1] - a[1])[0][0];
    const fd = fs.openSync(victim, 'r+');
    const at = Math.floor(fs.fstatSync(fd).size / 2);
    const b = Buffer.alloc(16);
    fs.readSync(fd, b, 0, 16, at);
    for (let i = 0; i < b.length; i++) b[i] ^= 0xa5;
    fs.writeSync(fd, b, 0, 16, at);
    fs.closeSync(fd);
    const key = path.relative(repo, victim);

    const r = await cli(['check', '--read-data', '--json']);
    assert.equal(r.status, 1, r.why);
    const report = r.lines[0];
    assert.equal(report.ok, false);
    assert.ok(report.errors.length >= 1, r.why);
    assert.ok(
      report.errors.some((e) => e.object === key),
      `an error names the pack ${key}: ${JSON.stringify(report.errors)}`,
    );
    affected = report.affected_files;
    // One damaged chunk of distinct random data belongs to exactly one file.
    assert.equal(affected.length, 1, `affected: ${JSON.stringify(affected)}`);
    assert.equal(affected[0].snapshot, snapshot);
    assert.match(affected[0].path, /^src\/big\/part-\d\.bin$/);
    assert.match(affected[0].reason, /damaged/);

    // Without --json: a readable report, exit 1.
    const text = await cli(['check', '--read-data']);
    assert.equal(text.status, 1, text.why);
    assert.match(text.stdout, new RegExp(`affected: snapshot ${snapshot.slice(0, 12)} ${affected[0].path.replace(/[.+]/g, '\\$&')}`));
  });

  it('plain check (structure only, no data read) still passes: the pack has the right size', async function () {
    const r = await cli(['check', '--json']);
    assert.equal(r.status, 0, r.why);
    assert.equal(r.lines[0].ok, true);
    assert.equal(r.lines[0].blobs_verified, 0);
  });

  it('restore restores every other file bit-exact and fails exactly the affected one (exit 3)', async function () {
    assert.ok(affected, 'needs the previous test');
    const target = path.join(work, 'restore');
    const r = await cli(['restore', 'latest', target, '--json']);
    assert.equal(r.status, 3, r.why);
    const errors = r.lines.filter((l) => l.type === 'error');
    assert.deepEqual(
      errors.map((e) => e.path),
      [affected[0].path],
      r.why,
    );
    assert.equal(r.summary.failed, 1);
    const want = manifest(src);
    const bad = affected[0].path.slice('src/'.length);
    assert.equal(r.summary.files, Object.values(want).filter((e) => e.type === 'file').length - 1);
    const got = manifest(path.join(target, 'src'));
    // The failed file is not there (not even truncated); everything else matches, directory
    // mtimes included (directory metadata is applied last).
    assert.equal(fs.existsSync(path.join(target, 'src', bad)), false, 'no partial file under the real name');
    assertSameManifest(got, without(want, (k) => k === bad));
    assert.deepEqual(fs.readdirSync(path.join(target, 'src', 'big')).filter((n) => n.startsWith('.')), [], 'no temporary files left');

    // --include of an intact file: exit 0, bit-exact.
    const good = Object.keys(want).find((k) => k.startsWith('big/part-') && k !== bad);
    const one = path.join(work, 'restore-one');
    const r1 = await cli(['restore', 'latest', one, '--include', `src/${good}`, '--json']);
    const s1 = okSummary(r1);
    assert.equal(s1.files, 1);
    assert.equal(sha256File(path.join(one, 'src', good)), want[good].sha);
  });
});

describe('backup e2e: the sidecar SIGKILLed mid-backup', function () {
  this.timeout(240_000);
  let work;
  let src;
  let repo;
  let env;
  const sidecars = [];
  // Big enough that the first progress line (~0.3 s in) comes well before the end, even at
  // ~600 MB/s on a quiet machine.
  const TOTAL = 384 * MiB;

  before(function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-kill-'));
    src = path.join(work, 'src');
    repo = path.join(work, 'repo');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    fs.mkdirSync(src);
    for (let i = 0; i < 16; i++) writeRandom(path.join(src, `f${String(i).padStart(2, '0')}.bin`), TOTAL / 16, `kill-${i}`);
    fs.mkdirSync(path.join(src, 'empty'));
    fs.symlinkSync('f00.bin', path.join(src, 'link'));
  });

  after(async function () {
    for (const s of sidecars) await s.stop(1000).catch(() => {});
    if (work) removeTree(work);
  });

  it('the CLI exits non-zero naming the sidecar; check passes; the next backup completes and restores', async function () {
    const store = { SHMPIPE_STORE: `file://${repo}` };
    const sc = await startSidecar({ env: store });
    sidecars.push(sc);
    const init = await runCli(['init', '--sidecar', sc.socketPath], { env });
    assert.equal(init.status, 0, init.why);

    let killedAt = null;
    const r = await runCli(['backup', src, '--sidecar', sc.socketPath, '--json'], {
      env,
      timeoutMs: 60_000,
      onLine(line) {
        if (killedAt !== null) return;
        let l;
        try {
          l = JSON.parse(line);
        } catch {
          return; // the test fails on r.lines below
        }
        if (l.type === 'progress' && l.bytes > 0 && l.bytes < TOTAL) {
          killedAt = l.bytes;
          sc.proc.kill('SIGKILL');
        }
      },
    });
    assert.notEqual(killedAt, null, `the backup ended before its first progress line, nothing to kill mid-way: ${r.why}`);
    if (process.env.SHMPIPE_E2E_VERBOSE) console.log(`      killed the sidecar after ${killedAt} of ${TOTAL} bytes; CLI: ${r.stderr.trim()}`);
    assert.ok(killedAt < TOTAL, `killed after ${killedAt} of ${TOTAL} bytes`);
    const exit = await sc.exited;
    assert.equal(exit.signal, 'SIGKILL');
    assert.notEqual(r.status, 0, r.why);
    assert.equal(r.status, 1, r.why);
    assert.equal(r.summary, undefined, 'no summary: nothing committed');
    assert.match(r.stderr, /sidecar/i, r.why);
    assert.doesNotMatch(r.stderr, /\n\s+at /, `a message, not a stack trace: ${r.why}`);
    // Complete packs the killed backup left (`packs/<hh>/<64 hex>`); a pack being uploaded at
    // the kill stays as a hidden staging file `<key>#N` (store writer.rs), which LIST and so
    // check do not see.
    const onDisk = fs.existsSync(path.join(repo, 'packs')) ? allFiles(path.join(repo, 'packs')).map((p) => path.relative(repo, p)) : [];
    const packsLeft = onDisk.filter((k) => /^packs\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(k)).length;
    const staging = onDisk.filter((k) => k.includes('#'));
    if (process.env.SHMPIPE_E2E_VERBOSE) console.log(`      left on disk: ${packsLeft} packs, staging files: ${staging.join(' ') || 'none'}`);

    // A new sidecar on the same store: the repository is consistent.
    const sc2 = await startSidecar({ env: store });
    sidecars.push(sc2);
    const snaps = await runCli(['snapshots', '--sidecar', sc2.socketPath, '--json'], { env });
    assert.equal(snaps.status, 0, snaps.why);
    assert.deepEqual(JSON.parse(snaps.stdout), [], 'the killed backup committed no snapshot');
    const check = await runCli(['check', '--sidecar', sc2.socketPath, '--json'], { env });
    assert.equal(check.status, 0, check.why);
    assert.equal(check.lines[0].ok, true, check.why);
    assert.deepEqual(check.lines[0].errors, []);
    // Packs the killed backup wrote are in no index (index objects come every 16 packs and
    // at commit): reported as information, not errors.
    const unindexed = check.lines[0].infos.filter((i) => /in no index/.test(i.message));
    assert.equal(unindexed.length, packsLeft, `leftover packs ${packsLeft}: ${JSON.stringify(check.lines[0].infos)}`);

    const b = await runCli(['backup', src, '--sidecar', sc2.socketPath, '--json'], { env });
    const s = okSummary(b);
    assert.equal(s.parent, null);
    assert.equal(s.files_new, 16);
    assert.equal(s.others, 1);
    assert.equal(s.bytes_read, TOTAL + 0);

    // And through a private sidecar on the same directory (the lock the killed one left does not block).
    const check2 = await runCli(['check', '--read-data', '--repo', repo, '--json'], { env });
    assert.equal(check2.status, 0, check2.why);
    assert.equal(check2.lines[0].snapshots, 1);
    const target = path.join(work, 'restore');
    const rr = await runCli(['restore', 'latest', target, '--repo', repo, '--json'], { env });
    const sr = okSummary(rr);
    assert.equal(sr.files, 16);
    assertSameManifest(manifest(path.join(target, 'src')), manifest(src));
  });
});

describe('backup e2e: a backup interrupted with SIGINT', function () {
  this.timeout(180_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  it('exits 130 saying nothing was committed; check passes; the next backup completes', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-sigint-'));
    const src = path.join(work, 'src');
    const repo = path.join(work, 'repo');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    const TOTAL = 384 * MiB; // see the kill test: the signal must land mid-way
    fs.mkdirSync(src);
    for (let i = 0; i < 12; i++) writeRandom(path.join(src, `f${i}.bin`), TOTAL / 12, `sigint-${i}`);
    assert.equal((await runCli(['init', '--repo', repo], { env })).status, 0);
    let sentAt = null;
    const r = await runCli(['backup', src, '--repo', repo, '--json'], {
      env,
      timeoutMs: 60_000,
      onLine(line, proc) {
        if (sentAt !== null || !line.includes('"progress"')) return;
        const bytes = JSON.parse(line).bytes;
        if (bytes > 0 && bytes < TOTAL) {
          sentAt = bytes;
          proc.kill('SIGINT');
        }
      },
    });
    assert.notEqual(sentAt, null, `the backup ended before its first progress line: ${r.why}`);
    assert.equal(r.status, 130, r.why);
    assert.equal(r.summary, undefined);
    assert.match(r.stderr, /interrupted.*nothing was committed/, r.why);
    const snaps = await runCli(['snapshots', '--repo', repo, '--json'], { env });
    assert.deepEqual(JSON.parse(snaps.stdout), []);
    const check = await runCli(['check', '--repo', repo, '--json'], { env });
    assert.equal(check.status, 0, check.why);
    assert.deepEqual(check.lines[0].errors, []);
    const b = okSummary(await runCli(['backup', src, '--repo', repo, '--json'], { env }));
    assert.equal(b.files_new, 12);
    assert.equal(b.bytes_read, TOTAL);
  });
});

describe('backup e2e: backup --every (the long-running agent of a Deployment)', function () {
  this.timeout(120_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  it('backs up once per interval, incrementally; a failed run is reported and the next one runs; SIGTERM while idle exits 0', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-every-'));
    const src = path.join(work, 'src');
    const repo = path.join(work, 'repo');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'a'), 'first\n');
    fs.writeFileSync(path.join(src, 'b'), 'unchanged\n');
    // No repository yet: the first run fails (reported), the test creates it, the next run works.
    const seen = [];
    let init = null; // the init run while the agent waits for its next interval; awaited below
    const r = await runCli(['backup', src, '--repo', repo, '--every', '10s', '--json'], {
      env,
      timeoutMs: 90_000,
      onLine(line, proc) {
        const o = JSON.parse(line);
        if (o.type === 'progress') return;
        seen.push(o);
        if (o.type === 'run_failed') {
          init = runCli(['init', '--repo', repo], { env });
        } else if (o.type === 'summary' && seen.filter((x) => x.type === 'summary').length === 1) {
          fs.writeFileSync(path.join(src, 'a'), 'second, longer\n');
        } else if (o.type === 'summary') {
          proc.kill('SIGTERM');
        }
      },
    });
    assert.ok(init !== null, `the first run failed and the test ran init: ${r.why}`);
    const i = await init;
    assert.equal(i.status, 0, i.why);
    assert.equal(r.status, 0, r.why);
    assert.deepEqual(seen.map((o) => o.type), ['run_failed', 'summary', 'summary'], r.why);
    assert.match(seen[0].message, /no repository/);
    assert.equal(seen[1].files_new, 2);
    assert.equal(seen[2].parent, seen[1].snapshot, 'each run is incremental against the previous one');
    assert.deepEqual([seen[2].files_changed, seen[2].files_unchanged], [1, 1]);
    const snaps = await runCli(['snapshots', '--repo', repo, '--json'], { env });
    assert.equal(JSON.parse(snaps.stdout).length, 2);
    const bad = await runCli(['backup', src, '--repo', repo, '--every', '5s'], { env });
    assert.equal(bad.status, 2, 'under 10 s is a usage error');
  });
});

describe('backup e2e: a backup none of whose paths exist', function () {
  this.timeout(60_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  it('fails with exit 1 and commits no snapshot', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-missing-'));
    const repo = path.join(work, 'repo');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    assert.equal((await runCli(['init', '--repo', repo], { env })).status, 0);
    const r = await runCli(['backup', path.join(work, 'missing'), '--repo', repo, '--json'], { env });
    assert.equal(r.status, 1, r.why);
    assert.equal(r.summary, undefined, r.why);
    assert.match(r.stderr, /none of the paths could be read/, r.why);
    const errors = r.lines.filter((l) => l.type === 'error');
    assert.deepEqual(errors.map((e) => [e.path, e.code]), [['missing', 'ENOENT']], r.why);
    const snaps = await runCli(['snapshots', '--repo', repo, '--json'], { env });
    assert.deepEqual(JSON.parse(snaps.stdout), []);
  });
});

describe('backup e2e: files that cannot be read (exit 3)', function () {
  this.timeout(120_000);
  const NOBODY = 65534;
  const asRoot = process.getuid() === 0;
  let work;
  let src;
  let repo;
  let env;
  // As root, chmod 000 does not stop reads: run the CLI (and its private sidecar) as nobody,
  // with a root-only file and a root-only directory in a tree nobody can otherwise read.
  const who = asRoot ? { uid: NOBODY, gid: NOBODY } : {};
  const cli = (args) => runCli([...args, '--repo', repo], { env, ...who });

  before(function () {
    if (asRoot) {
      // nobody must be able to run the CLI and the sidecar from this checkout (not so when it
      // lives under a private home directory).
      const probe = spawnSync(process.execPath, ['-e', `const fs = require('fs'); fs.accessSync(${JSON.stringify(CLI)}, fs.constants.R_OK); fs.accessSync(${JSON.stringify(sidecarBin)}, fs.constants.X_OK)`], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
      if (probe.status !== 0) {
        console.log(`      skipped: running as root, and uid ${NOBODY} cannot run the CLI from this checkout: ${probe.stderr.split('\n').find((l) => /Error/.test(l)) ?? probe.stderr.trim()}`);
        this.skip();
      }
    }
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-unreadable-'));
    fs.chmodSync(work, 0o755);
    src = path.join(work, 'src');
    repo = path.join(work, 'repo');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    if (asRoot) {
      fs.chownSync(work, NOBODY, NOBODY);
      fs.chownSync(path.join(work, 'home'), NOBODY, NOBODY);
    }
    fs.mkdirSync(path.join(src, 'ok'), { recursive: true, mode: 0o755 });
    fs.chmodSync(src, 0o755);
    for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(src, 'ok', `f${i}`), `readable ${i}\n`, { mode: 0o644 });
    writeRandom(path.join(src, 'ok', 'big.bin'), 5 * MiB + 7, 'unreadable-big');
    fs.chmodSync(path.join(src, 'ok', 'big.bin'), 0o644);
    fs.writeFileSync(path.join(src, 'secret.bin'), 'nobody may read this\n');
    fs.writeFileSync(path.join(src, 'ok', 'secret-big.bin'), Buffer.alloc(6 * MiB, 1));
    fs.mkdirSync(path.join(src, 'locked-dir'));
    fs.writeFileSync(path.join(src, 'locked-dir', 'inside'), 'hidden\n');
    if (asRoot) {
      // Owned by root, private: nobody cannot open them.
      fs.chmodSync(path.join(src, 'secret.bin'), 0o600);
      fs.chmodSync(path.join(src, 'ok', 'secret-big.bin'), 0o600);
      fs.chmodSync(path.join(src, 'locked-dir'), 0o700);
    } else {
      fs.chmodSync(path.join(src, 'secret.bin'), 0o000);
      fs.chmodSync(path.join(src, 'ok', 'secret-big.bin'), 0o000);
      fs.chmodSync(path.join(src, 'locked-dir'), 0o000);
    }
  });

  after(function () {
    if (work) removeTree(work);
  });

  it('lists each unreadable path, commits the rest, and exits 3', async function () {
    const init = await cli(['init']);
    assert.equal(init.status, 0, init.why);
    const r = await cli(['backup', src, '--json']);
    assert.equal(r.status, 3, r.why);
    const errors = r.lines.filter((l) => l.type === 'error');
    assert.deepEqual(errors.map((e) => e.path).sort(), ['src/locked-dir', 'src/ok/secret-big.bin', 'src/secret.bin'], r.why);
    for (const e of errors) {
      assert.equal(e.code, 'EACCES', JSON.stringify(e));
      assert.equal(typeof e.message, 'string');
    }
    assert.equal(errors.find((e) => e.path === 'src/locked-dir').op, 'opendir');
    const s = r.summary;
    assert.ok(s, `a summary line: ${r.why}`);
    assert.equal(s.unreadable, 3);
    assert.equal(s.files_new, 6, 'the readable files');
    assert.equal(s.dirs, 3, 'src, ok and locked-dir (listed as a directory, its contents unreadable)');
    assert.equal(s.bytes_read, 5 * (`readable 0\n`.length) + 5 * MiB + 7);

    // Without --json the paths are listed on stderr, exit 3 too.
    const t = await cli(['backup', src]);
    assert.equal(t.status, 3, t.why);
    assert.match(t.stderr, /cannot read .*secret\.bin/);
    assert.match(t.stdout, /unreadable: 3/);

    const snaps = await cli(['snapshots', '--json']);
    assert.equal(JSON.parse(snaps.stdout).length, 2, 'both backups were committed');

    // Restore as the test's own user (as root: restores owners too).
    const target = path.join(work, 'restore');
    const rr = await runCli(['restore', s.snapshot, target, '--repo', repo, '--json'], { env });
    const sr = okSummary(rr);
    assert.equal(sr.files, 6);
    assert.equal(sr.dirs, 3);
    if (!asRoot) {
      // The restored locked-dir has mode 000 like the original; both readable again (chmod
      // keeps the mtime) for the manifests.
      assert.equal(fs.statSync(path.join(target, 'src', 'locked-dir')).mode & 0o7777, 0);
      for (const f of ['secret.bin', 'ok/secret-big.bin']) fs.chmodSync(path.join(src, f), 0o600);
      fs.chmodSync(path.join(src, 'locked-dir'), 0o700);
      fs.chmodSync(path.join(target, 'src', 'locked-dir'), 0o700);
    }
    const want = without(manifest(src), (k) => k === 'secret.bin' || k === 'ok/secret-big.bin' || k.startsWith('locked-dir/'));
    assertSameManifest(manifest(path.join(target, 'src')), want);
  });
});

describe('backup e2e: a file with an mtime before 1970', function () {
  this.timeout(60_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  it('backs up and restores it with its mtime', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-old-'));
    const src = path.join(work, 'src');
    const repo = path.join(work, 'repo');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'new'), 'new\n');
    fs.writeFileSync(path.join(src, 'old'), 'from 1969\n');
    // touch sets 1969-07-04 12:00:00.25 UTC (Node's utimes would turn a negative time into "now").
    execFileSync('touch', ['-m', '-d', '1969-07-04 12:00:00.25 UTC', path.join(src, 'old')]);
    assert.equal(fs.lstatSync(path.join(src, 'old'), { bigint: true }).mtimeNs, -15_595_199_750_000_000n);
    assert.equal((await runCli(['init', '--repo', repo], { env })).status, 0);
    const b = await runCli(['backup', src, '--repo', repo, '--json'], { env });
    const s = okSummary(b);
    assert.equal(s.files_new, 2);
    const target = path.join(work, 'restore');
    okSummary(await runCli(['restore', 'latest', target, '--repo', repo, '--json'], { env }));
    assertSameManifest(manifest(path.join(target, 'src')), manifest(src));
  });
});

describe('backup e2e: nanosecond mtimes', function () {
  this.timeout(60_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  // Node's utimes takes a double that libuv truncates to µs (…910698031 ns came back as
  // …910697000); restore sets times with utimensat instead, to the nanosecond.
  it('restores mtimes with a nanosecond part exactly', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-ns-'));
    const src = path.join(work, 'src');
    const repo = path.join(work, 'repo');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    fs.mkdirSync(src);
    const stamps = ['1795327757.910698031', '1700000000.000000001', '1700000000.123456789', '1700000000.999999999'];
    for (const [i, t] of stamps.entries()) {
      fs.writeFileSync(path.join(src, `f${i}`), `${t}\n`);
      execFileSync('touch', ['-m', '-d', `@${t}`, path.join(src, `f${i}`)]);
    }
    const want = stamps.map((t) => BigInt(t.replace('.', '')));
    assert.deepEqual(
      stamps.map((_, i) => fs.lstatSync(path.join(src, `f${i}`), { bigint: true }).mtimeNs),
      want,
    );
    assert.equal((await runCli(['init', '--repo', repo], { env })).status, 0);
    okSummary(await runCli(['backup', src, '--repo', repo, '--json'], { env }));
    const target = path.join(work, 'restore');
    okSummary(await runCli(['restore', 'latest', target, '--repo', repo, '--json'], { env }));
    const off = stamps.map((_, i) => fs.lstatSync(path.join(target, 'src', `f${i}`), { bigint: true }).mtimeNs - want[i]);
    assert.deepEqual(off, stamps.map(() => 0n), `restored mtime - original, ns: ${off.join(', ')}`);
  });
});

