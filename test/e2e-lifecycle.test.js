// Client lifecycle and local flow control against the real sidecar: close(), argument checks,
// FIFO waits for slots and ring space, maxQueued, deferred slot release, refusals at connect.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { bundle } = require('./helpers/paths');
const { startSidecar } = require('./helpers/sidecar');
const { sqTaken } = require('./helpers/rings');
const { crc32c } = require('./helpers/crc32c');

const { connect, ShmpipeError, Slot } = require(bundle);

describe('client lifecycle', function () {
  let sidecar;
  before(async () => {
    sidecar = await startSidecar();
  });
  after(async () => {
    await sidecar?.stop();
  });

  it('the welcome layout is what was asked for, page-aligned', async () => {
    const c = await connect({ socketPath: sidecar.socketPath, slotCount: 5, slotSize: 8192, sqCapacity: 64, cqCapacity: 128 });
    const l = c.layout;
    assert.equal(l.slotCount, 5);
    assert.equal(l.slotSize, 8192);
    assert.equal(l.sqCapacity, 64);
    assert.equal(l.cqCapacity, 128);
    assert.ok(l.gqCapacity >= 5);
    assert.ok(l.maxInFlight <= 128, 'never more in flight than the CQ holds');
    for (const k of ['sqOffset', 'cqOffset', 'gqOffset', 'slotOffset', 'segmentSize']) assert.equal(l[k] % 4096, 0, k);
    const s = await c.alloc();
    assert.ok(s instanceof Slot);
    assert.equal(s.capacity, 8192);
    assert.equal(s.buffer.byteOffset % 4096, 0, 'slot buffers are page-aligned');
    await c.close();
  });

  it('close() rejects pending and waiting calls with SHMPIPE_E_CLOSED; later calls too', async () => {
    const c = await connect({ socketPath: sidecar.socketPath, slotCount: 1, slotSize: 4096 });
    const only = await c.alloc();
    const delays = [c.delay(10_000_000), c.delay(10_000_000)];
    const waiter = c.alloc(); // no slot left: waits
    const settled = Promise.allSettled([...delays, waiter]);
    await sqTaken(c, 2, 'the DELAYs'); // in flight at the sidecar when close() comes
    await c.close();
    for (const r of await settled) {
      assert.equal(r.status, 'rejected');
      assert.equal(r.reason.code, 'SHMPIPE_E_CLOSED');
      assert.ok(r.reason instanceof ShmpipeError);
    }
    assert.equal(await c.closed, undefined, 'closed resolves with undefined after close()');
    await assert.rejects(c.nop(), { code: 'SHMPIPE_E_CLOSED' });
    await assert.rejects(c.echo(only, 1), { code: 'SHMPIPE_E_CLOSED' });
    await assert.rejects(c.stats(), { code: 'SHMPIPE_E_CLOSED' });
    assert.throws(() => c.tryAlloc(), { code: 'SHMPIPE_E_CLOSED' });
    assert.throws(() => c.raw.segment, { code: 'SHMPIPE_E_CLOSED' });
    only.release(); // harmless after close
    await c.close(); // idempotent
  });

  it('echo/delay arguments are checked locally (SHMPIPE_E_INVALID_ARGUMENT)', async () => {
    const a = await connect({ socketPath: sidecar.socketPath, slotCount: 2, slotSize: 4096 });
    const b = await connect({ socketPath: sidecar.socketPath, slotCount: 2, slotSize: 4096 });
    const s = await a.alloc();
    const foreign = await b.alloc();
    const bad = [
      () => a.echo({ id: 0, generation: 1 }, 1),
      () => a.echo(foreign, 1),
      () => a.echo(s, 4097),
      () => a.echo(s, 10, 4090),
      () => a.echo(s, -1),
      () => a.echo(s, 1.5),
      () => a.echo(s, 1, -1),
      () => a.delay(-1),
      () => a.delay(60_000_001),
      () => a.delay('5'),
      () => a.raw.submit(new Uint8Array(64)),
    ];
    for (const f of bad) await assert.rejects(f(), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, f.toString());
    s.release();
    await assert.rejects(a.echo(s, 1), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, 'a released slot');
    await a.close();
    await b.close();
  });

  it('alloc() waits in FIFO order for released slots; release waits for an in-flight echo', async () => {
    const c = await connect({ socketPath: sidecar.socketPath, slotCount: 2, slotSize: 4096 });
    const s1 = await c.alloc();
    const s2 = await c.alloc();
    assert.equal(c.tryAlloc(), null);
    const order = [];
    const w1 = c.alloc().then((s) => (order.push(1), s));
    const w2 = c.alloc().then((s) => (order.push(2), s));
    s1.buffer.fill(9, 0, 100);
    const e = c.echo(s1, 100);
    s1.release(); // deferred until the echo completes
    const r = await e;
    assert.equal(r.checksum, crc32c(s1.buffer.subarray(0, 100)));
    const g1 = await w1;
    s2.release();
    const g2 = await w2;
    assert.deepEqual(order, [1, 2]);
    assert.notEqual(g1.generation, 0);
    const again = await c.echo(g1, 10);
    assert.equal(again.length, 10);
    g2.release(); // stats() needs a slot for its output
    const st = (await c.stats()).session;
    assert.equal(st.grants_total - st.returns_total, st.slots_granted + st.slots_in_flight);
    assert.ok(st.returns_total >= 2, 'both releases reached the sidecar');
    assert.equal(st.errors_by_code.SHMPIPE_E_INVALID_SLOT, 0, 'no release raced its echo');
    g1.release();
    await c.close();
  });

  it('more calls than ring space wait in the FIFO; beyond maxQueued they fail fast', async () => {
    const c = await connect({ socketPath: sidecar.socketPath, slotCount: 1, slotSize: 4096, sqCapacity: 4, cqCapacity: 4, maxQueued: 10 });
    const ok = [];
    for (let i = 0; i < 14; i++) ok.push(c.delay(20_000)); // 4 in flight + 10 queued
    await assert.rejects(c.nop(), { code: 'SHMPIPE_E_QUEUE_FULL' });
    const results = await Promise.all(ok);
    assert.deepEqual(results, Array(14).fill(20_000));
    await c.nop(); // room again
    // Many more than the rings hold, with a generous bound: all complete, in order of submission.
    const c2 = await connect({ socketPath: sidecar.socketPath, slotCount: 1, slotSize: 4096, sqCapacity: 8, cqCapacity: 8 });
    const done = [];
    await Promise.all(Array.from({ length: 5000 }, (_, i) => c2.nop().then(() => done.push(i))));
    assert.deepEqual(done, Array.from({ length: 5000 }, (_, i) => i));
    await c.close();
    await c2.close();
  });

  it('refusals at connect map to their codes', async () => {
    const small = await startSidecar({ env: { SHMPIPE_MAX_CLIENTS: '2' } });
    const held = [];
    for (let i = 0; i < 2; i++) held.push(await connect({ socketPath: small.socketPath, slotCount: 1, slotSize: 4096 }));
    await assert.rejects(connect({ socketPath: small.socketPath }), (e) => {
      assert.equal(e.code, 'SHMPIPE_E_BUSY', e.message);
      assert.match(e.message, /too many clients/);
      return true;
    });
    await Promise.all(held.map((c) => c.close()));
    await small.stop();
    await assert.rejects(connect({ socketPath: small.socketPath }), { code: 'SHMPIPE_E_DISCONNECTED' });
  });

  it('keeps working when SHMPIPE_SEGMENT_DIR is set: segments are sealed memfds, nothing is created there', async () => {
    const segDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-segdir-'));
    const filed = await startSidecar({ env: { SHMPIPE_SEGMENT_DIR: segDir } });
    try {
      const c = await connect({ socketPath: filed.socketPath, slotCount: 4, slotSize: 65536 });
      assert.match(c.layout.segment, /^memfd:shmpipe-\d+-[0-9a-f]{16}$/);
      const s = await c.alloc();
      s.buffer.fill(0x77, 0, 65536);
      assert.equal((await c.echo(s, 65536)).checksum, crc32c(s.buffer));
      assert.deepEqual(fs.readdirSync(segDir), []);
      await c.close();
    } finally {
      await filed.stop();
      fs.rmSync(segDir, { recursive: true, force: true });
    }
  });
});
