// The shmpipe CLI (ts-lib/dist/cli.js): help, usage errors and exit codes, private vs named sidecar.
'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { startSidecar } = require('./helpers/sidecar');

const CLI = path.join(__dirname, '..', 'ts-lib', 'dist', 'cli.js');
const run = (args, env = {}) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, SHMPIPE_SIDECAR_SOCKET: '', ...env } });

describe('shmpipe CLI', function () {
  it('lists its commands in --help and exits 0', function () {
    const r = run(['--help']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^ {2}sidecar-stats {2}/m);
  });

  it('exits 2 with the help on an unknown command or a bad option', function () {
    const r = run(['frobnicate']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
    const o = run(['sidecar-stats', '--no-such-option']);
    assert.equal(o.status, 2);
    assert.match(o.stderr, /usage: shmpipe sidecar-stats/);
  });

  it('starts a private sidecar when none is named, and stops it', function () {
    const r = run(['sidecar-stats', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const st = JSON.parse(r.stdout);
    assert.equal(st.global.clients, 1, 'only the CLI itself is connected to its private sidecar');
    assert.equal(st.session.requests_by_op.stats, 1);
  });

  it('uses the sidecar named by --sidecar', async function () {
    const sc = await startSidecar();
    try {
      for (let i = 0; i < 2; i++) assert.equal(run(['sidecar-stats', '--sidecar', sc.socketPath]).status, 0);
      const r = run(['sidecar-stats', '--json', '--sidecar', sc.socketPath]);
      assert.equal(JSON.parse(r.stdout).global.sessions_opened, 3, 'all three runs went to the named sidecar');
    } finally {
      await sc.stop();
    }
  });

  it('exits 1 with a typed message when the named sidecar is not there', function () {
    const r = run(['sidecar-stats', '--sidecar', '/nonexistent/shmpipe.sock']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /SHMPIPE_E_/);
  });
});
