// Observing a client's rings from a test: the SQ positions the agent and the sidecar share,
// so a test can wait until the sidecar has really taken requests (the event) instead of
// sleeping and hoping.
'use strict';

const assert = require('node:assert/strict');
const { bundle } = require('./paths');
const { waitFor } = require('./sidecar');

const { protocol: p } = require(bundle);

/** The SQ's head (what the sidecar took) and tail (what the agent published). */
function sqPositions(client) {
  const seg = client.raw.segment;
  const positions = new BigUint64Array(seg.buffer, seg.byteOffset, seg.byteLength / 8);
  const at = (off) => Atomics.load(positions, (client.layout.sqOffset + off) / 8);
  return { head: at(p.RING.head), tail: at(p.RING.tail) };
}

/** Waits (10 s deadline) until the sidecar has taken at least `n` entries from the SQ. */
async function sqTaken(client, n, what) {
  const ok = await waitFor(() => sqPositions(client).head >= BigInt(n), 10_000, 2);
  const q = sqPositions(client);
  assert.ok(ok, `${what}: the sidecar took ${q.head} of ${q.tail} published entries, not ${n}`);
}

module.exports = { sqPositions, sqTaken };
