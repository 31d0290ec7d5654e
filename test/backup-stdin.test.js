// backup --stdin and --stdin-from-command through the real CLI and sidecar: the stream is one
// file in the snapshot (restored and compared byte for byte, across several slots), a failing
// or missing command commits nothing, SIGTERM stops the command and the backup, and the flag
// combinations that make no sense are usage errors.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli } = require('./helpers/cli');

/** Polls `check` until it returns true, or fails after `ms`. */
async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('backup --stdin, --stdin-from-command', function () {
  this.timeout(300_000);
  let work;
  let env;
  let repo;
  // --repo right after the command: what follows -- is the command's.
  const cli = (args, o = {}) => runCli([args[0], '--repo', repo, ...args.slice(1)], { env, ...o });
  const snapshotCount = async () => JSON.parse((await cli(['snapshots', '--json'])).stdout).length;

  /** Restores `snapshot` and returns the restored tree's files (relative path → bytes). */
  async function restored(snapshot) {
    const target = fs.mkdtempSync(path.join(work, 'restore-'));
    const r = await cli(['restore', snapshot, target]);
    assert.equal(r.status, 0, r.why);
    const out = {};
    (function walk(rel) {
      for (const n of fs.readdirSync(path.join(target, rel))) {
        const p = rel ? `${rel}/${n}` : n;
        if (fs.statSync(path.join(target, p)).isDirectory()) walk(p);
        else out[p] = fs.readFileSync(path.join(target, p));
      }
    })('');
    return out;
  }

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-stdin-'));
    env = cliEnv(work, { SHMPIPE_PASSWORD: 'stdin-test' });
    repo = path.join(work, 'repo');
    const r = await cli(['init']);
    assert.equal(r.status, 0, r.why);
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('--stdin --stdin-filename: one file (under its directories), bytes as sent, over several slots', async function () {
    const data = crypto.randomBytes(9 * 1024 * 1024 + 12345);
    const b = await cli(['backup', '--stdin', '--stdin-filename', 'db/dump.sql', '--tag', 'db', '--json'], { input: data });
    assert.equal(b.status, 0, b.why);
    assert.equal(b.summary.bytes_read, data.length);
    assert.equal(b.summary.files_new, 1);
    const files = await restored(b.summary.snapshot);
    assert.deepEqual(Object.keys(files), ['db/dump.sql']);
    assert.ok(files['db/dump.sql'].equals(data), 'the restored bytes are the ones sent');
    const list = JSON.parse((await cli(['snapshots', '--json'])).stdout);
    const s = list.find((x) => x.id === b.summary.snapshot);
    assert.deepEqual(s.paths, ['/db/dump.sql']);
    assert.deepEqual(s.tags, ['db']);

    const empty = await cli(['backup', '--stdin', '--json'], { input: '' });
    assert.equal(empty.status, 0, empty.why);
    assert.deepEqual(await restored(empty.summary.snapshot), { stdin: Buffer.alloc(0) }, 'empty input: an empty file named stdin (the default name)');
  });

  it('--stdin-from-command -- CMD ARGS: the command output is the file', async function () {
    const script = 'const c=require("crypto");for(let i=0;i<300;i++)process.stdout.write(c.createHash("sha256").update(String(i)).digest().toString("hex").repeat(500))';
    const b = await cli(['backup', '--stdin-from-command', '--stdin-filename', 'gen.txt', '--json', '--', process.execPath, '-e', script]);
    assert.equal(b.status, 0, b.why);
    let want = '';
    for (let i = 0; i < 300; i++) want += crypto.createHash('sha256').update(String(i)).digest().toString('hex').repeat(500);
    const files = await restored(b.summary.snapshot);
    assert.equal(files['gen.txt'].toString(), want);
  });

  it('a failing command (after output), a missing one: exit 1, the message, nothing committed', async function () {
    const before = await snapshotCount();
    const failing = await cli(['backup', '--stdin-from-command', '--', 'sh', '-c', 'head -c 6000000 /dev/zero; exit 7']);
    assert.equal(failing.status, 1, failing.why);
    assert.match(failing.stderr, /sh exited with status 7; the backup was aborted, nothing was committed/);
    const missing = await cli(['backup', '--stdin-from-command', '--', path.join(work, 'no-such-command')]);
    assert.equal(missing.status, 1, missing.why);
    assert.match(missing.stderr, /cannot run .*no-such-command: .*ENOENT/);
    const killed = await cli(['backup', '--stdin-from-command', '--', 'sh', '-c', 'echo partial; kill -9 $$']);
    assert.equal(killed.status, 1, killed.why);
    assert.match(killed.stderr, /sh was killed by SIGKILL/);
    assert.equal(await snapshotCount(), before);
  });

  it('SIGTERM while the command runs: exit 143, the command stopped, nothing committed', async function () {
    const before = await snapshotCount();
    const pidFile = path.join(work, 'cmd.pid');
    const pending = cli(['backup', '--stdin-from-command', '--', 'sh', '-c', `echo some; echo $$ > '${pidFile}'; exec sleep 300`], {
      onLine: () => {},
    });
    await until('the command to start', () => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').endsWith('\n'));
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    assert.ok(alive(pid));
    // The CLI is the command's parent: find it and send it SIGTERM.
    const cliPid = Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
    process.kill(cliPid, 'SIGTERM');
    const r = await pending;
    assert.equal(r.status, 143, r.why);
    await until('the command to exit', () => !alive(pid) || fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].startsWith('Z'));
    assert.equal(await snapshotCount(), before);
  });

  it('flag combinations that make no sense are usage errors (exit 2)', async function () {
    const cases = [
      [['backup', '--stdin', 'some/path']],
      [['backup', '--stdin', '--stdin-from-command', '--', 'true']],
      [['backup', '--stdin-from-command']],
      [['backup', '--stdin', '--stdin-filename', '../x']],
      [['backup', '--stdin', '--stdin-filename', 'a//b']],
      [['backup', '--stdin', '--exclude', '*.c']],
      [['backup', '--stdin', '--dry-run']],
      [['backup', '--stdin-filename', 'x', 'some/path']],
      [['backup', '--stdin'], { SHMPIPE_PASSWORD: '' }],
    ];
    for (const [args, extra] of cases) {
      const r = await runCli([args[0], '--repo', repo, ...args.slice(1)], { env: { ...env, ...extra }, input: 'data' });
      assert.equal(r.status, 2, r.why);
    }
  });
});
