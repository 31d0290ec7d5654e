// The JS rings (ts-lib/src/ring.ts) rely on one fact of the runtime: Atomics.* on a NON-shared
// external ArrayBuffer — what Node-API gives for the mapped segment — are real atomic operations
// against a native peer, not plain loads and stores. Pinned here: JS and a native thread (the
// addon's test-only atomicsAdder, sequentially consistent fetch-adds) add to the same u32 and u64
// word of a slot of a real session's mapping at the same time (until each has seen the other's
// adds between its own 100,000 times), and no add is lost. A Node upgrade that broke the fact
// fails this test.
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const { startSidecar } = require('./helpers/sidecar');
const { bundle, root } = require('./helpers/paths');

const { connect } = require(bundle);
const addon = require(path.join(root, 'ts-lib', 'build', 'shmpipe_addon.node'));

/** JS adds at least this many, and goes on until it has seen the native thread's adds interleave with its own this often. */
const JS_MIN_ADDS = 2_000_000;
const MIN_INTERLEAVED = 100_000;

describe('Atomics on the external (non-shared) ArrayBuffer of a mapping', function () {
  this.timeout(120_000);
  let sidecar;
  let client;
  let slot;
  before(async function () {
    sidecar = await startSidecar();
    client = await connect({ socketPath: sidecar.socketPath, slotCount: 2, slotSize: 4096 });
    slot = await client.alloc();
  });
  after(async function () {
    await client?.close();
    await sidecar?.stop();
  });

  it('the buffer is what the rings use: external, not a SharedArrayBuffer', function () {
    const ab = slot.buffer.buffer;
    assert.ok(ab instanceof ArrayBuffer && !(ab instanceof SharedArrayBuffer));
    assert.equal(ab, client.raw.segment.buffer, 'the slot views the session mapping');
  });

  for (const width of [4, 8]) {
    it(`u${width * 8}: concurrent adds from JS and a native thread, none lost`, function () {
      const ab = slot.buffer.buffer;
      const at = slot.buffer.byteOffset; // page aligned
      const word = width === 4 ? new Uint32Array(ab, at, 1) : new BigUint64Array(ab, at, 1);
      const stop = new Uint32Array(ab, at + 64, 1);
      const one = width === 4 ? 1 : 1n;
      Atomics.store(word, 0, width === 4 ? 0 : 0n);
      Atomics.store(stop, 0, 0);
      const adder = addon.atomicsAdder(ab, at, width, at + 64);
      let adds = 0;
      let interleaved = 0;
      try {
        Atomics.store(word, 0, one); // go: the native thread waits for a non-zero word
        let expected = one;
        const deadline = Date.now() + 60_000;
        while (adds < JS_MIN_ADDS || (interleaved < MIN_INTERLEAVED && Date.now() < deadline)) {
          for (let i = 0; i < 10_000; i++) {
            const before = Atomics.add(word, 0, one);
            if (before !== expected) interleaved++;
            expected = before + one;
          }
          adds += 10_000;
        }
      } finally {
        Atomics.store(stop, 0, 1);
      }
      const [nativeAdds, nativeInterleaved] = addon.atomicsJoin(adder);
      const total = 1 + adds + nativeAdds;
      const got = width === 4 ? Atomics.load(word, 0) : Number(Atomics.load(word, 0));
      assert.ok(interleaved >= MIN_INTERLEAVED && nativeInterleaved > 0, `the two sides interleaved (JS saw ${interleaved}, native ${nativeInterleaved})`);
      assert.equal(got, width === 4 ? total >>> 0 : total, `${total - got} of ${adds + nativeAdds} adds were lost (JS ${adds}, native ${nativeAdds})`);
    });
  }
});
