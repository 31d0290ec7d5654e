// ResilientClient (connectResilient): reconnecting to a restarted sidecar on the same socket,
// re-submitting idempotent calls, and SHMPIPE_E_SESSION_LOST for calls bound to the lost session.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { connectResilient } = require(require('./helpers/paths').bundle);
const { startSidecar } = require('./helpers/sidecar');
const { sqTaken } = require('./helpers/rings');

const FAST = { initialDelayMs: 10, maxDelayMs: 100 };

describe('reconnecting client', function () {
  let dir;
  let sidecar;
  let client;

  beforeEach(async function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-reconnect-'));
    sidecar = await startSidecar({ dir });
  });

  afterEach(async function () {
    await client?.close();
    await sidecar?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('re-submits idempotent calls to a restarted sidecar; slot-bound calls report SESSION_LOST', async function () {
    client = await connectResilient({ socketPath: sidecar.socketPath, slotCount: 8, slotSize: 65536 }, FAST);
    const events = [];
    client.on('disconnected', (e) => events.push(['disconnected', e.code]));
    client.on('reconnected', (n) => events.push(['reconnected', n]));
    await client.nop();
    const oldSlot = await client.alloc();
    oldSlot.buffer.write('before the crash');
    assert.equal((await client.echo(oldSlot, 16)).length, 16);

    // Calls in flight or queued when the sidecar dies.
    const delays = [1, 2, 3].map((i) => client.delay(200_000 + i));
    const stats = client.stats();
    sidecar.proc.kill('SIGKILL');
    await sidecar.exited;
    sidecar = await startSidecar({ dir });

    assert.deepEqual(await Promise.all(delays), [200_001, 200_002, 200_003], 'the delays ran again on the new sidecar');
    const st = await stats;
    assert.equal(st.global.sessions_opened, 1, 'stats answered by the new sidecar, for the new session');
    assert.deepEqual(events.map((e) => e[0]), ['disconnected', 'reconnected']);
    assert.equal(events[0][1], 'SHMPIPE_E_DISCONNECTED');

    await assert.rejects(client.echo(oldSlot, 16), (e) => e.code === 'SHMPIPE_E_SESSION_LOST');
    const slot = await client.alloc();
    slot.buffer.write('after the crash!');
    const r = await client.echo(slot, 16);
    assert.equal(r.length, 16);
    slot.release();
  });

  it('reconnects after a graceful SIGTERM drain', async function () {
    client = await connectResilient({ socketPath: sidecar.socketPath }, FAST);
    const inFlight = client.delay(100_000);
    await sqTaken(client.client, 1, 'the DELAY'); // in flight at the sidecar when SIGTERM comes
    await sidecar.stop(10_000); // drains: the delay finishes within the grace
    assert.equal(await inFlight, 100_000);
    sidecar = await startSidecar({ dir });
    await client.nop();
    assert.ok(client.client, 'a live session again');
  });

  it('gives up after maxAttempts and rejects with SHMPIPE_E_DISCONNECTED', async function () {
    client = await connectResilient({ socketPath: sidecar.socketPath }, { initialDelayMs: 5, maxDelayMs: 10, maxAttempts: 3 });
    const gaveUp = new Promise((r) => client.once('gave-up', r));
    sidecar.proc.kill('SIGKILL');
    await sidecar.exited;
    const pending = client.nop();
    const err = await gaveUp;
    assert.equal(err.code, 'SHMPIPE_E_DISCONNECTED');
    await assert.rejects(pending, (e) => e.code === 'SHMPIPE_E_DISCONNECTED');
    await assert.rejects(client.stats(), (e) => e.code === 'SHMPIPE_E_DISCONNECTED');
    sidecar = null;
  });

  it('validates its options', async function () {
    await assert.rejects(connectResilient({ socketPath: sidecar.socketPath }, { initialDelayMs: -1 }), (e) => e.code === 'SHMPIPE_E_INVALID_ARGUMENT');
    await assert.rejects(connectResilient({ socketPath: sidecar.socketPath }, { bogus: 1 }), (e) => e.code === 'SHMPIPE_E_INVALID_ARGUMENT');
  });
});
