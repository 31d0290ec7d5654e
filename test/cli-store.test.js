// The store commands of the shmpipe CLI: put, get, list, stat, rm, with a private sidecar on the
// store named by --store, and with a running sidecar (--sidecar); --store with --sidecar is a
// usage error.
'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startSidecar } = require('./helpers/sidecar');

const CLI = path.join(__dirname, '..', 'ts-lib', 'dist', 'cli.js');
const run = (args) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, SHMPIPE_SIDECAR_SOCKET: '' } });

describe('shmpipe CLI: store commands', function () {
  let dir;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-cli-store-'));
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('put, list, stat, get, rm against the store named by --store (a private sidecar)', function () {
    const store = `file://${path.join(dir, 'store')}`;
    const src = path.join(dir, 'in.bin');
    const data = crypto.randomBytes(3 * 1024 * 1024 + 17);
    fs.writeFileSync(src, data);
    const put = run(['put', src, 'cli/a/file.bin', '--store', store, '--json']);
    assert.equal(put.status, 0, put.stderr);
    const p = JSON.parse(put.stdout);
    assert.equal(p.size, data.length);
    assert.ok(fs.existsSync(path.join(dir, 'store', 'cli', 'a', 'file.bin')), 'the object is in the --store directory');

    const ls = run(['list', 'cli', '--store', store]);
    assert.equal(ls.status, 0, ls.stderr);
    assert.match(ls.stdout, new RegExp(`^ *${data.length} +\\S+ +cli/a/file\\.bin$`, 'm'));
    const stat = run(['stat', 'cli/a/file.bin', '--store', store, '--json']);
    assert.equal(stat.status, 0, stat.stderr);
    assert.equal(JSON.parse(stat.stdout).checksum, p.checksum);

    const out = path.join(dir, 'out.bin');
    const get = run(['get', 'cli/a/file.bin', out, '--store', store]);
    assert.equal(get.status, 0, get.stderr);
    assert.match(get.stdout, /checksum verified/);
    assert.ok(fs.readFileSync(out).equals(data));

    assert.equal(run(['rm', 'cli/a/file.bin', '--store', store]).status, 0);
    const gone = run(['stat', 'cli/a/file.bin', '--store', store]);
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /SHMPIPE_E_NOT_FOUND/);
    const missing = run(['get', 'cli/none', path.join(dir, 'none.bin'), '--store', store]);
    assert.equal(missing.status, 1);
    assert.ok(!fs.existsSync(path.join(dir, 'none.bin')));
  });

  it('uses a running sidecar, and refuses --store with it', async function () {
    const sc = await startSidecar();
    try {
      const src = path.join(dir, 'small.txt');
      fs.writeFileSync(src, 'hello');
      assert.equal(run(['put', src, 'k', '--sidecar', sc.socketPath]).status, 0);
      const ls = run(['list', '--sidecar', sc.socketPath, '--json']);
      assert.deepEqual(ls.stdout.trim().split('\n').map((l) => JSON.parse(l).key), ['k']);
      const both = run(['list', '--sidecar', sc.socketPath, '--store', `file://${dir}`]);
      assert.equal(both.status, 2);
      assert.match(both.stderr, /--store configures a private sidecar/);
      assert.equal(run(['put', src]).status, 2, 'missing <key>');
      assert.equal(run(['put', src, 'a//b', '--sidecar', sc.socketPath]).status, 1, 'a bad key is a typed error');
    } finally {
      await sc.stop();
    }
  });
});
