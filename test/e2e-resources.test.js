// End to end against the real sidecar: zero copy (bytes written through slot.buffer are what the
// sidecar checksums; memory does not grow with the bytes echoed, in the client or the sidecar)
// and threads (the same number of threads in both processes with 1 and 10,000 requests in flight).
'use strict';

const assert = require('node:assert/strict');
const { startSidecar, threadCount, vmRss } = require('./helpers/sidecar');
const { forkChild } = require('./helpers/fork');

const MiB = 1 << 20;
const GiB = 1 << 30;

describe('zero copy', function () {
  let sidecar;
  before(async () => {
    sidecar = await startSidecar();
  });
  after(async () => {
    await sidecar?.stop();
  });

  it('the sidecar checksums the bytes in slot.buffer; 4 GiB echoed grow neither process', async () => {
    const total = 4 * GiB;
    const child = forkChild({ mode: 'zeroCopy', socketPath: sidecar.socketPath, totalBytes: total, slotCount: 8, slotSize: MiB }, { execArgv: ['--expose-gc'] });
    await child.next('warm');
    const sidecarBefore = vmRss(sidecar.pid);
    child.send({ cmd: 'go' });
    const r = await child.next('result');
    const sidecarAfter = vmRss(sidecar.pid);
    child.send({ cmd: 'close' });
    assert.equal((await child.exited).code, 0);

    assert.deepEqual(r.checks, { first: true, second: true, partial: true }, 'writes through slot.buffer reach the sidecar, also after an echo');
    assert.equal(r.bad, 0, 'every 1 MiB echo checksum matched');
    assert.ok(r.echoed >= total, `echoed ${r.echoed} bytes`);
    const limit = 64 * MiB; // 1.6 % of what was echoed; a copy per echo would be 4 GiB
    const growth = {
      rss: r.after.rss - r.before.rss,
      external: r.after.external - r.before.external,
      arrayBuffers: r.after.arrayBuffers - r.before.arrayBuffers,
      sidecarRss: sidecarAfter - sidecarBefore,
    };
    for (const [k, v] of Object.entries(growth)) assert.ok(v < limit, `${k} grew by ${v} bytes while ${r.echoed} were echoed`);
  });
});

describe('threads', function () {
  let sidecar;
  before(async () => {
    // Ring and in-flight headroom so that 10,000 DELAYs really are in flight at the sidecar.
    sidecar = await startSidecar({ env: { SHMPIPE_MAX_RING: '16384', SHMPIPE_MAX_IN_FLIGHT: '16384' } });
  });
  after(async () => {
    await sidecar?.stop();
  });

  it('the same number of threads with 1 and with 10,000 requests in flight', async () => {
    const child = forkChild({ mode: 'inFlight', socketPath: sidecar.socketPath, sqCapacity: 16384, cqCapacity: 16384 });
    const { layout } = await child.next('connected');
    assert.ok(layout.maxInFlight >= 10_000, `sidecar in-flight limit ${layout.maxInFlight}`);
    assert.equal(layout.sqCapacity, 16384);
    const phase = async (n, us) => {
      child.send({ cmd: 'run', n, us });
      const s = await child.next('submitted');
      const counts = { client: threadCount(child.pid), sidecar: threadCount(sidecar.pid), inFlightAsync: s.inFlightAsync };
      const done = await child.next('settled');
      assert.equal(done.ok, n, `all ${n} delays completed`);
      return counts;
    };
    const one = await phase(1, 1_000_000);
    const many = await phase(10_000, 3_000_000);
    child.send({ cmd: 'exit' });
    assert.equal((await child.exited).code, 0);
    assert.equal(one.inFlightAsync, 1, 'one DELAY in flight at the sidecar');
    assert.equal(many.inFlightAsync, 10_000, '10,000 DELAYs in flight at the sidecar');
    assert.equal(many.client, one.client, `client threads: ${one.client} with 1 in flight, ${many.client} with 10,000`);
    assert.equal(many.sidecar, one.sidecar, `sidecar threads: ${one.sidecar} with 1 in flight, ${many.sidecar} with 10,000`);
  });
});
