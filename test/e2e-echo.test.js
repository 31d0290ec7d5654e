// End to end against the real sidecar: 1,000,000 echoes with random sizes and contents from three
// client processes at once, every checksum verified, every Promise settled; then the STATS
// invariants, and the sidecar's accounting once the three sessions have ended.
'use strict';

const assert = require('node:assert/strict');
const { bundle } = require('./helpers/paths');
const { startSidecar, waitFor } = require('./helpers/sidecar');
const { forkChild } = require('./helpers/fork');

const { connect } = require(bundle);

const TOTAL = 1_000_000;
const CHILDREN = 3;

function assertSessionInvariant(s, who) {
  assert.equal(
    s.grants_total - s.returns_total,
    s.slots_granted + s.slots_in_flight,
    `${who}: grants_total - returns_total == slots_granted + slots_in_flight (${JSON.stringify(s)})`,
  );
  assert.equal(s.slots_free + s.slots_granted + s.slots_in_flight, s.slot_count, `${who}: every slot is in exactly one state`);
}

describe('echo end to end (3 client processes, 1,000,000 requests)', function () {
  let sidecar;
  before(async () => {
    sidecar = await startSidecar();
  });
  after(async () => {
    await sidecar?.stop();
  });

  it('every checksum matches, every Promise settles, the STATS invariants hold', async () => {
    const observer = await connect({ socketPath: sidecar.socketPath, slotCount: 2, slotSize: 4096, clientName: 'observer' });
    const base = (await observer.stats()).global;

    const per = Math.ceil(TOTAL / CHILDREN);
    const counts = Array.from({ length: CHILDREN }, (_, i) => (i < CHILDREN - 1 ? per : TOTAL - per * (CHILDREN - 1)));
    const children = counts.map((count) =>
      forkChild({ mode: 'echoLoad', socketPath: sidecar.socketPath, count, window: 128, slotCount: 256, slotSize: 16384, maxSize: 8192 }),
    );
    const results = await Promise.all(children.map((c) => c.next('result')));
    await Promise.all(children.map((c) => c.exited));

    let settled = 0;
    let reclaimExpected = 0;
    results.forEach((r, i) => {
      assert.equal(r.issued, counts[i]);
      assert.equal(r.settled, counts[i], `child ${i}: every echo Promise settled`);
      assert.deepEqual(r.errors, {}, `child ${i}: no echo failed`);
      assert.equal(r.mismatches, 0, `child ${i}: every checksum matched`);
      assert.equal(r.closedValue, null, `child ${i}: closed cleanly`);
      assertSessionInvariant(r.stats.session, `child ${i}`);
      assert.ok(r.stats.session.requests_by_op.echo === counts[i], `child ${i}: the sidecar counted ${counts[i]} echoes`);
      settled += r.settled;
      // 256 slots minus the sidecar's read reserve, min(256 / 4, 16) (SPEC §9).
      assert.equal(r.grantWindow, 240, `child ${i}: grant window`);
      assert.equal(r.held, 240, `child ${i}: ended holding every slot the sidecar grants`);
      reclaimExpected += r.held;
    });
    assert.equal(settled, TOTAL);

    // After the three sessions end, a fresh client sees them closed, their slots reclaimed and
    // only its own and the observer's segments live.
    const fresh = await connect({ socketPath: sidecar.socketPath, slotCount: 2, slotSize: 4096, clientName: 'fresh' });
    await observer.alloc();
    await observer.alloc(); // the observer, too, ends holding both its slots
    await observer.close();
    const g = await waitFor(async () => {
      const s = (await fresh.stats()).global;
      return s.sessions_closed >= base.sessions_closed + CHILDREN + 1 && s.segments_live === 1 ? s : null;
    }, 10_000);
    assert.ok(g, 'the sessions were closed and their segments released within 10 s');
    const s = await fresh.stats();
    assert.equal(s.global.sessions_closed, base.sessions_closed + CHILDREN + 1, 'three echo sessions and the observer closed');
    assert.equal(s.global.segments_live, 1, 'only the fresh client still has a segment');
    assertSessionInvariant(s.session, 'fresh');
    // Every closed session held all its slots, so all of them had to be reclaimed.
    const reclaimed = s.global.slots_reclaimed_total - base.slots_reclaimed_total;
    assert.equal(reclaimed, reclaimExpected + 2, `slots_reclaimed_total grew by ${reclaimed}; the sessions held ${reclaimExpected} (+2 for the observer)`);
    assert.ok(s.global.requests_by_op.echo >= TOTAL);
    assert.equal(s.global.protocol_violations, 0);
    await fresh.close();
  });
});
