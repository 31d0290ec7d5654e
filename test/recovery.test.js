// Repository recovery through the real CLI and sidecar (issue #13 items 3–4, #12 items 5–6):
// unlock of a stale lock and refusal of a live one, key list/add/remove/passwd, two concurrent
// inits (file:// and moto's S3), a config asking for 1 TiB of Argon2 memory, and a corrupted
// snapshot and index object (backups go on, check reports them, repair fixes them). Every verb
// is also run with --json and its output checked.
'use strict';

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { CLI, cliEnv, runCli } = require('./helpers/cli');
const { waitFor } = require('./helpers/sidecar');
const { s3Available, s3Required, startS3, s3Env } = require('./helpers/s3');

function write(root, rel, data) {
  const f = path.join(root, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, data);
}

/** Files directly under `dir` of the repository (e.g. locks, keys, snapshots, index). */
const objects = (repo, dir) => (fs.existsSync(path.join(repo, dir)) ? fs.readdirSync(path.join(repo, dir)).filter((n) => /^[0-9a-f]{64}$/.test(n)) : []);

/** Flips bytes in the middle of a stored object through the store (its checksum stays valid). */
async function corrupt(env, repo, key, work) {
  const tmp = path.join(work, 'tamper');
  const store = ['--store', `file://${repo}`];
  let r = await runCli(['get', ...store, key, tmp], { env });
  assert.equal(r.status, 0, r.why);
  const b = fs.readFileSync(tmp);
  for (let i = 20; i < 28 && i < b.length; i++) b[i] ^= 0x5a;
  fs.writeFileSync(tmp, b);
  r = await runCli(['put', ...store, tmp, key], { env });
  assert.equal(r.status, 0, r.why);
}

describe('recovery: unlock, keys, create-only init, KDF bounds, repair', function () {
  this.timeout(300_000);
  let work;
  let env;
  let repo;
  let src;
  const cli = (args, o = {}) => runCli([args[0], '--repo', repo, ...args.slice(1)], { env, ...o });
  const ok = async (args, o) => {
    const r = await cli(args, o);
    assert.equal(r.status, 0, r.why);
    return r;
  };

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-recovery-'));
    env = cliEnv(work, { SHMPIPE_PASSWORD: 'recovery-test' });
    repo = path.join(work, 'repo');
    src = path.join(work, 'src');
    write(src, 'a.txt', 'alpha\n');
    write(src, 'dir/b.txt', 'bravo\n'.repeat(1000));
    await ok(['init']);
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('unlock: a live lock is kept (removed only with --remove-all), a dead process\'s lock is removed', async function () {
    // A backup that waits on its input holds a live shared lock.
    const pidFile = path.join(work, 'producer.pid');
    const backup = spawn(process.execPath, [CLI, 'backup', '--repo', repo, '--stdin-from-command', '--', 'sh', '-c', `echo $$ > '${pidFile}'; exec sleep 300`], { env, stdio: 'ignore' });
    try {
      assert.ok(await waitFor(() => objects(repo, 'locks').length === 1 && fs.existsSync(pidFile), 60_000), 'the backup took its lock');
      let r = await ok(['unlock', '--json']);
      const first = r.lines[0];
      assert.equal(first.removed.length, 0, r.why);
      assert.equal(first.kept.length, 1, r.why);
      const live = first.kept[0];
      assert.equal(live.staleness, 'live');
      assert.equal(live.lock.kind, 'Shared');
      assert.equal(live.lock.purpose, 'backup');
      assert.equal(live.lock.host, os.hostname());
      assert.ok(objects(repo, 'locks').length === 1, 'a live lock stays');
      r = await ok(['unlock']);
      assert.match(r.stdout, /kept live .*shared lock by .* pid \d+ \(backup\)/, r.why);

      // kill -9 the whole backup (CLI, its private sidecar, the producer): its lock stays
      // behind, held by a pid that no longer exists on this host.
      process.kill(live.lock.pid, 'SIGKILL');
      backup.kill('SIGKILL');
      process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGKILL');
      assert.ok(await waitFor(() => !fs.existsSync(`/proc/${live.lock.pid}`), 10_000), 'the sidecar is gone');
      assert.equal(objects(repo, 'locks').length, 1, 'the killed backup left its lock');
      r = await ok(['unlock', '--json']);
      assert.deepEqual(r.lines[0].removed.map((l) => [l.id, l.staleness]), [[live.id, 'dead_process']], r.why);
      assert.equal(r.lines[0].kept.length, 0);
      assert.equal(objects(repo, 'locks').length, 0);
    } finally {
      backup.kill('SIGKILL');
    }
  });

  it('unlock --remove-all removes a live lock', async function () {
    const pidFile = path.join(work, 'producer2.pid');
    const backup = spawn(process.execPath, [CLI, 'backup', '--repo', repo, '--stdin-from-command', '--', 'sh', '-c', `echo $$ > '${pidFile}'; exec sleep 300`], { env, stdio: 'ignore' });
    try {
      assert.ok(await waitFor(() => objects(repo, 'locks').length === 1 && fs.existsSync(pidFile), 60_000));
      const r = await ok(['unlock', '--remove-all', '--json']);
      assert.equal(r.lines[0].removed.length, 1, r.why);
      assert.equal(r.lines[0].removed[0].staleness, 'live');
      assert.equal(objects(repo, 'locks').length, 0);
    } finally {
      backup.kill('SIGKILL');
      if (fs.existsSync(pidFile)) process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGKILL');
      // Its sidecar: the one whose lock it was has exited with its parent's session or is
      // killed below; nothing else of it touches the repository after this test.
    }
    await ok(['unlock', '--remove-all']);
  });

  it('key list/add/remove/passwd: several passwords, the master key unchanged, last and current key refused', async function () {
    const one = env.SHMPIPE_PASSWORD;
    const as = (pw) => ({ env: { ...env, SHMPIPE_PASSWORD: pw } });
    const snap = (await ok(['backup', src, '--json'])).summary.snapshot;
    let r = await ok(['key', 'list', '--json']);
    assert.equal(r.lines[0].length, 1, r.why);
    const first = r.lines[0][0];
    assert.deepEqual(Object.keys(first).sort(), ['created', 'current', 'hostName', 'id', 'in_config', 'userName']);
    assert.equal(first.current, true);
    assert.equal(first.in_config, true);

    const pw2 = path.join(work, 'pw2');
    fs.writeFileSync(pw2, 'second password\n');
    r = await ok(['key', 'add', '--new-password-file', pw2, '--json']);
    const second = r.lines[0].added;
    assert.equal(second.current, false);
    assert.equal(second.hostName, os.hostname());
    assert.equal(objects(repo, 'keys').length, 1);
    // The second password opens the same repository: the snapshot is there.
    r = await cli(['snapshots', '--json'], as('second password'));
    assert.equal(r.status, 0, r.why);
    assert.ok(JSON.stringify(r.lines).includes(snap));

    r = await ok(['key', 'list', '--json'], as('second password'));
    assert.deepEqual(r.lines[0].map((k) => [k.id, k.current]).sort(), [[first.id, false], [second.id, true]].sort());
    // The key in use is refused.
    r = await cli(['key', 'remove', second.id.slice(0, 8)], as('second password'));
    assert.equal(r.status, 1, r.why);
    assert.match(r.stderr, /refused: key .* is the one in use/);
    // Removing the first key (the config's slot) from the second: the first password stops working.
    r = await ok(['key', 'remove', first.id.slice(0, 8), '--json'], as('second password'));
    assert.equal(r.lines[0].removed.id, first.id);
    r = await cli(['snapshots'], as(one));
    assert.equal(r.status, 1, r.why);
    assert.match(r.stderr, /wrong password/);
    // The last key is refused.
    r = await cli(['key', 'remove', second.id.slice(0, 8)], as('second password'));
    assert.equal(r.status, 1, r.why);
    assert.match(r.stderr, /refused/);

    // passwd back to the first password.
    r = await runCli(['key', 'passwd', '--repo', repo, '--json'], { env: { ...env, SHMPIPE_PASSWORD: 'second password', SHMPIPE_NEW_PASSWORD: one } });
    assert.equal(r.status, 0, r.why);
    assert.equal(r.lines[0].removed.id, second.id);
    assert.equal(r.lines[0].added.current, true);
    r = await cli(['snapshots'], as('second password'));
    assert.equal(r.status, 1, r.why);
    r = await ok(['key', 'list']);
    assert.match(r.stdout, new RegExp(`\\*${r.stdout.match(/\*([0-9a-f]{8})/)[1]}`));
    const target = path.join(work, 'restored-after-passwd');
    r = await ok(['restore', snap, '--target', target]);
    const found = fs.readdirSync(target, { recursive: true }).filter((f) => f.endsWith('a.txt'));
    assert.equal(found.length, 1, r.why);
    assert.equal(fs.readFileSync(path.join(target, found[0]), 'utf8'), 'alpha\n', 'the data opens with the changed password');
  });

  it('a config asking for 1 TiB of Argon2 memory fails fast with SHMPIPE_E_REPO_LIMIT', async function () {
    const other = path.join(work, 'tib');
    await runCli(['init', '--repo', other], { env }).then((r) => assert.equal(r.status, 0, r.why));
    const tmp = path.join(work, 'config.json');
    const store = ['--store', `file://${other}`];
    let r = await runCli(['get', ...store, 'config', tmp], { env });
    assert.equal(r.status, 0, r.why);
    const config = JSON.parse(fs.readFileSync(tmp, 'utf8'));
    config.kdf.m_kib = 2 ** 30;
    fs.writeFileSync(tmp, JSON.stringify(config));
    r = await runCli(['put', ...store, tmp, 'config'], { env });
    assert.equal(r.status, 0, r.why);
    r = await runCli(['snapshots', '--repo', other], { env });
    assert.equal(r.status, 1, r.why);
    assert.match(r.stderr, /Argon2 memory 1073741824 KiB exceeds the limit/);
    assert.match(r.stderr, /SHMPIPE_E_REPO_LIMIT|asks for more than this sidecar allows/);
  });

  it('two concurrent inits: one succeeds, the other fails cleanly, one key remains (file://)', async function () {
    for (let round = 0; round < 3; round++) {
      const target = path.join(work, `race-${round}`);
      const [a, b] = await Promise.all([
        runCli(['init', '--repo', target, '--json'], { env: { ...env, SHMPIPE_PASSWORD: 'alpha' } }),
        runCli(['init', '--repo', target, '--json'], { env: { ...env, SHMPIPE_PASSWORD: 'beta' } }),
      ]);
      const statuses = [a.status, b.status].sort();
      assert.deepEqual(statuses, [0, 1], `${a.why}\n${b.why}`);
      const loser = a.status === 1 ? a : b;
      assert.match(loser.stderr, /a repository already exists at/);
      const winner = a.status === 0 ? 'alpha' : 'beta';
      assert.equal(a.status === 0 ? a.lines[0].type : b.lines[0].type, 'init');
      const keys = await runCli(['key', 'list', '--repo', target, '--json'], { env: { ...env, SHMPIPE_PASSWORD: winner } });
      assert.equal(keys.status, 0, keys.why);
      assert.equal(keys.lines[0].length, 1);
      assert.equal(objects(target, 'keys').length, 0, 'no orphaned key object');
    }
  });

  it('a corrupted snapshot and index object: backups go on with a warning, check reports them, repair fixes them', async function () {
    const base = (await ok(['backup', src, '--json'])).summary.snapshot;
    write(src, 'c.txt', 'charlie\n');
    await ok(['backup', src, '--json']);
    const snaps = objects(repo, 'snapshots');
    const victim = snaps.find((s) => s !== base);
    const index = objects(repo, 'index');
    await corrupt(env, repo, `snapshots/${victim}`, work);
    await corrupt(env, repo, `index/${index[0]}`, work);

    // The backup goes on, naming both damaged objects.
    write(src, 'd.txt', 'delta\n');
    let r = await ok(['backup', src, '--json']);
    const warnings = r.lines.filter((l) => l.type === 'warning' && l.op === 'repository').map((l) => l.message);
    assert.ok(warnings.some((w) => w.includes(`snapshots/${victim}`)), r.why);
    assert.ok(warnings.some((w) => w.includes(`index/${index[0]}`)), r.why);
    r = await ok(['backup', src]);
    assert.match(r.stderr, /warning: skipped unreadable (snapshots|index)\//);

    // check reports both.
    r = await cli(['check', '--json']);
    assert.notEqual(r.status, 0, r.why);
    const report = JSON.stringify(r.lines);
    assert.ok(report.includes(`snapshots/${victim}`) && report.includes(`index/${index[0]}`), r.why);

    // repair index replaces the damaged index object; repair snapshots --forget removes the
    // unreadable snapshot; then check is clean.
    r = await ok(['repair', 'index', '--json']);
    assert.equal(r.lines[0].index_unreadable.length, 1, r.why);
    assert.ok(r.lines[0].index_unreadable[0].startsWith(`index/${index[0]}`));
    assert.ok(!objects(repo, 'index').includes(index[0]));
    r = await ok(['repair', 'snapshots', '--dry-run', '--json']);
    assert.deepEqual(r.lines.map((l) => [l.snapshot, l.unreadable !== null, l.removed]), [[victim, true, false]], r.why);
    r = await ok(['repair', 'snapshots', '--forget', '--json']);
    assert.deepEqual(r.lines.map((l) => [l.snapshot, l.removed]), [[victim, true]], r.why);
    r = await cli(['check', '--read-data', '--json']);
    assert.equal(r.status, 0, r.why);
  });

  it('repair snapshots drops files whose data is lost and tags the copy repaired', async function () {
    const lost = path.join(work, 'lost-src');
    write(lost, 'keep.txt', 'this one survives\n');
    write(lost, 'gone.bin', Buffer.alloc(200_000, 7));
    const snap = (await ok(['backup', lost, '--json'])).summary.snapshot;
    // Find the pack holding gone.bin's data: the one pack this backup added besides existing ones
    // is not knowable from outside, so remove every pack that holds a blob of exactly its size:
    // simpler — the test deletes the largest pack added by this backup (gone.bin dominates it).
    const packs = [];
    for (const d of fs.readdirSync(path.join(repo, 'packs'))) for (const p of fs.readdirSync(path.join(repo, 'packs', d))) packs.push(path.join(repo, 'packs', d, p));
    const newest = packs.map((p) => [p, fs.statSync(p).mtimeMs]).sort((x, y) => y[1] - x[1])[0][0];
    fs.rmSync(newest);
    let r = await ok(['repair', 'index', '--json']);
    r = await ok(['repair', 'snapshots', '--json']);
    const line = r.lines.find((l) => l.snapshot === snap);
    assert.ok(line, r.why);
    assert.ok(line.dropped.some((p) => p.endsWith('gone.bin')) || line.lost_tree_blobs > 0, r.why);
    assert.equal(line.removed, false, 'the original stays without --forget');
    r = await ok(['snapshots', '--json']);
    const copy = JSON.stringify(r.lines).includes(line.new);
    assert.ok(copy, r.why);
    assert.match(JSON.stringify(r.lines), /"repaired"/);
  });
});

describe('recovery over S3: two concurrent inits', function () {
  this.timeout(240_000);
  if (!s3Available()) {
    it(s3Required() ? 'SHMPIPE_REQUIRE_S3=1 but moto is not installed' : 'SKIPPED: moto is not installed (npm run setup:s3)', function () {
      if (s3Required()) assert.fail('run `npm run setup:s3`');
      this.skip();
    });
    return;
  }
  let s3;
  let work;
  before(async function () {
    s3 = await startS3();
    await s3.createBucket('shmpipe-recovery');
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-recovery-s3-'));
  });
  after(async function () {
    await s3?.kill();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('If-None-Match: * decides: one init succeeds, the other fails cleanly, one key remains', async function () {
    for (let round = 0; round < 3; round++) {
      const { SHMPIPE_STORE: _, ...s3vars } = s3Env(s3, 'shmpipe-recovery', `race-${round}`);
      const env = cliEnv(work, s3vars);
      const url = `s3://shmpipe-recovery/race-${round}`;
      const [a, b] = await Promise.all([
        runCli(['init', '--repo', url], { env: { ...env, SHMPIPE_PASSWORD: 'alpha' } }),
        runCli(['init', '--repo', url], { env: { ...env, SHMPIPE_PASSWORD: 'beta' } }),
      ]);
      assert.deepEqual([a.status, b.status].sort(), [0, 1], `${a.why}\n${b.why}`);
      const winner = a.status === 0 ? 'alpha' : 'beta';
      const loser = a.status === 0 ? 'beta' : 'alpha';
      const keys = await runCli(['key', 'list', '--repo', url, '--json'], { env: { ...env, SHMPIPE_PASSWORD: winner } });
      assert.equal(keys.status, 0, keys.why);
      assert.equal(keys.lines[0].length, 1);
      const wrong = await runCli(['snapshots', '--repo', url], { env: { ...env, SHMPIPE_PASSWORD: loser } });
      assert.match(wrong.stderr, /wrong password/, wrong.why);
    }
  });
});
