// End to end against the real sidecar: bytes written through slot.buffer are what the sidecar
// checksums, and memory does not grow with the bytes echoed, in the client or the sidecar.
// (Memory alone cannot tell a copy from none — slots are reused, so a copying implementation
// would not grow either: proof-zero-copy.test.js counts the bytes that cross through syscalls.
// Threads per op kind: proof-threads.test.js.)
'use strict';

const assert = require('node:assert/strict');
const { startSidecar, vmRss } = require('./helpers/sidecar');
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
