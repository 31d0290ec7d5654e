// A client in a worker_thread releases everything when the worker ends: its doorbell poll handle,
// its fds and its mapping — whether the worker closed the client, unref()'d it and ran out of
// work, was terminated with a call pending, or called process.exit() — and the process then exits
// on its own. 100 workers one after another (test/helpers/worker-churn.js, in a child process so
// that "exits on its own" can be watched); the sidecar sees every session end.
'use strict';

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { startSidecar, waitFor } = require('./helpers/sidecar');
const { bundle } = require('./helpers/paths');

const { connect } = require(bundle);
const CHURN = path.join(__dirname, 'helpers', 'worker-churn.js');

function run(args, timeoutMs) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CHURN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('client: in a worker_thread', function () {
  this.timeout(240_000);
  let sidecar;
  before(async function () {
    sidecar = await startSidecar();
  });
  after(async function () {
    await sidecar?.stop();
  });

  it('100 workers each open a client and end (close, unref, terminate, process.exit): nothing leaks, the process exits on its own', async function () {
    const r = await run([sidecar.socketPath, 'all', '100'], 200_000);
    assert.equal(r.signal, null, `the process died of ${r.signal} (killed after 200 s if it did not exit):\n${r.stderr.slice(-3000)}`);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const { before, after } = JSON.parse(r.stdout.trim().split('\n').pop());
    assert.equal(after.fds, before.fds, `open fds ${before.fds} → ${after.fds}`);
    assert.equal(after.segments, 0, 'no segment mapped any more');
    assert.equal(after.handles, before.handles, `active handles ${before.handles} → ${after.handles}`);

    const probe = await connect({ socketPath: sidecar.socketPath, slotCount: 2, slotSize: 4096 });
    try {
      const g = await waitFor(async () => {
        const s = (await probe.stats()).global;
        return s.sessions_opened >= 101 && s.segments_live === 1 && s.clients === 1 ? s : null;
      }, 10_000);
      assert.ok(g, 'the sidecar saw all 100 sessions end');
    } finally {
      await probe.close();
    }
  });
});
