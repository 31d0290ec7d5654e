// client.unref()/ref(), like net.Socket's: by default an open client keeps the process alive; after
// unref() an open client with nothing pending does not, and pending calls always do (a DELAY in
// flight, an alloc() waiting for a grant, also with the watchdog off). Each case is a child process
// (test/helpers/ref-child.js) whose script ends after `ready`; the test watches it exit, or not.
'use strict';

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { startSidecar } = require('./helpers/sidecar');

const CHILD = path.join(__dirname, 'helpers', 'ref-child.js');

/** Runs the child; resolves with its output and whether it exited within `ms` after `ready`. */
function run(socketPath, mode, ms) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CHILD, socketPath, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let readyAt = null;
    let timer = null;
    p.stdout.on('data', (d) => {
      out += d;
      if (readyAt === null && out.includes('ready')) {
        readyAt = performance.now();
        timer = setTimeout(() => p.kill('SIGKILL'), ms);
      }
    });
    p.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, exitedAfterMs: readyAt === null ? null : performance.now() - readyAt, killed: signal === 'SIGKILL' });
    });
  });
}

describe('client: ref() and unref()', function () {
  this.timeout(60_000);
  let sidecar;
  before(async function () {
    sidecar = await startSidecar();
  });
  after(async function () {
    await sidecar?.stop();
  });

  it('an open client keeps the process alive by default (and after unref() + ref())', async function () {
    for (const mode of ['open', 'unref-ref']) {
      const r = await run(sidecar.socketPath, mode, 1500);
      assert.ok(r.out.includes('ready'), r.out);
      assert.equal(r.killed, true, `${mode}: the process exited by itself (${r.code}): ${r.out}`);
    }
  });

  it('after unref() an open idle client lets the process exit on its own', async function () {
    const r = await run(sidecar.socketPath, 'unref', 10_000);
    assert.equal(r.killed, false, 'it had to be killed');
    assert.equal(r.code, 0, r.out);
    assert.ok(r.exitedAfterMs < 2000, `exited ${Math.round(r.exitedAfterMs)} ms after its script ended`);
  });

  for (const mode of ['unref-pending', 'unref-pending-nowatchdog']) {
    it(`a pending call keeps an unref()'d client's process alive until it completes (${mode === 'unref-pending' ? 'watchdog on' : 'unresponsiveMs 0'})`, async function () {
      const r = await run(sidecar.socketPath, mode, 15_000);
      assert.equal(r.killed, false);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /delay 1500000/, 'the DELAY completed before the process exited');
      assert.ok(r.exitedAfterMs >= 1400, `exited after ${Math.round(r.exitedAfterMs)} ms, before the 1.5 s DELAY could complete`);
    });
  }

  it("an alloc() waiting for a grant keeps an unref()'d client's process alive", async function () {
    const r = await run(sidecar.socketPath, 'unref-alloc', 15_000);
    assert.equal(r.killed, false);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /alloc \d+/);
  });
});
