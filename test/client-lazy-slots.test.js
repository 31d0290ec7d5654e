// The slot pool costs memory only for the slots a client actually uses (issue #15): the client
// maps the segment with only the header and rings faulted in, so connecting with 64 slots of
// 4 MiB does not make 256 MiB resident (it did with MAP_POPULATE), and a slot's pages become
// resident when it is written. Measured as this process's resident shared memory (RssShmem).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const { bundle } = require('./helpers/paths');
const { connect } = require(bundle);
const { startSidecar } = require('./helpers/sidecar');

const MiB = 1 << 20;
const rssShmem = () => {
  const s = fs.readFileSync('/proc/self/status', 'utf8');
  return Number(/\nRssShmem:\s+(\d+) kB/.exec(s)[1]) * 1024;
};

describe('client slot memory is lazy', function () {
  let sidecar;
  let client;
  before(async () => {
    sidecar = await startSidecar();
  });
  after(async () => {
    await client?.close();
    await sidecar?.stop();
  });

  it('connecting maps 256 MiB of slots without making them resident; a written slot becomes resident', async () => {
    const before = rssShmem();
    client = await connect({ socketPath: sidecar.socketPath, slotCount: 64, slotSize: 4 * MiB, clientName: 'lazy' });
    const connected = rssShmem() - before;
    assert.ok(connected < 16 * MiB, `connecting made ${(connected / MiB).toFixed(1)} MiB of shared memory resident (the pool is 256 MiB)`);

    const slot = await client.alloc();
    slot.buffer.fill(0x5a);
    const written = rssShmem() - before - connected;
    assert.ok(written >= 4 * MiB - 64 * 1024, `writing one 4 MiB slot made ${(written / MiB).toFixed(1)} MiB resident`);
    assert.ok(written < 12 * MiB, `writing one slot made ${(written / MiB).toFixed(1)} MiB resident`);
    // The header and rings work: a round trip through them.
    await client.echo(slot, 64);
    slot.release();
  });
});
