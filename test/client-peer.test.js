// The client checks what the sidecar writes before acting on it (SPEC §4, §9): ring positions,
// completions and grants that break the protocol end the session with SHMPIPE_E_PROTOCOL — every
// pending call rejects, the control socket closes — instead of being guessed at. Run against a
// fake sidecar that writes exactly the broken entries, as a buggy or hostile one would.
'use strict';

const assert = require('node:assert/strict');
const { startFakeSidecar, PeerRings, tick } = require('./helpers/fake-sidecar');
const { bundle } = require('./helpers/paths');

const { connect, protocol: p } = require(bundle);

describe('client: what the sidecar writes is checked', function () {
  let fake;
  let client;
  let peer;
  beforeEach(async function () {
    fake = await startFakeSidecar({ slotCount: 4, grants: 2, sqCapacity: 8, cqCapacity: 8 });
    client = await connect({ socketPath: fake.socketPath, slotCount: 4, slotSize: 4096, sqCapacity: 8, cqCapacity: 8 });
    await fake.next('mapped');
    peer = new PeerRings(client);
  });
  afterEach(async function () {
    await client?.close();
    await fake?.stop();
  });

  /** Submits a NOP (something pending), lets `breakIt(sub)` write, rings; the session must end. */
  async function violation(breakIt, pattern) {
    const pending = client.nop();
    pending.catch(() => {});
    await tick();
    const [sub] = peer.submissions();
    await breakIt(sub);
    await fake.command('ring');
    const closed = await client.closed;
    assert.equal(closed?.code, 'SHMPIPE_E_PROTOCOL', closed?.message);
    if (pattern) assert.match(closed.message, pattern);
    await assert.rejects(pending, (e) => e.code === 'SHMPIPE_E_PROTOCOL');
    await assert.rejects(client.nop(), (e) => e.code === 'SHMPIPE_E_PROTOCOL');
    await fake.next('eof'); // the client hung up: the sidecar reclaims the session
  }

  const [s0, s1] = [0, 1]; // granted up front, generation 1

  describe('grants (GQ)', function () {
    it('a slot id beyond slot_count', () => violation(() => peer.grant(4, 2), /beyond slot_count/));
    it('a slot the agent holds (two Slots over the same bytes)', () => violation(() => peer.grant(s0, 2), /which the agent holds/));
    it('generation 0', () => violation(() => peer.grant(2, 0), /generation 0/));
    it('the generation of the previous grant again', async function () {
      const slot = client.tryAlloc();
      slot.release();
      await tick();
      await violation(() => peer.grant(slot.id, slot.generation), /repeats generation/);
    });
  });

  describe('ring positions', function () {
    it('a CQ tail beyond head + capacity', () => violation(() => peer.setPosition('cq', 'tail', 9), /CQ ring positions are corrupt/));
    it('a CQ tail that moves backwards', async function () {
      const n = client.nop();
      await tick();
      const [sub] = peer.submissions();
      peer.complete({ request_id: sub.request_id });
      await fake.command('ring');
      await n;
      await violation(() => peer.setPosition('cq', 'tail', 0), /CQ ring positions are corrupt/);
    });
    it('a GQ tail beyond head + capacity', () => violation(() => peer.setPosition('gq', 'tail', 2 + 5), /GQ ring positions are corrupt/));
    it('a GQ tail past 2^53', () => violation(() => peer.setPosition('gq', 'tail', 2n ** 60n), /GQ ring positions are corrupt/));
    it('an SQ head beyond the tail', async function () {
      // The client re-reads the SQ head only when its cache says full: a 4-entry SQ, filled.
      await client.close();
      await fake.stop();
      fake = await startFakeSidecar({ slotCount: 4, sqCapacity: 4, cqCapacity: 8, maxInFlight: 8 });
      client = await connect({ socketPath: fake.socketPath, slotCount: 4, slotSize: 4096, sqCapacity: 4, cqCapacity: 8 });
      peer = new PeerRings(client);
      const calls = Array.from({ length: 4 }, () => client.nop());
      await tick();
      peer.setPosition('sq', 'head', 100);
      const more = client.nop();
      const closed = await client.closed;
      assert.equal(closed.code, 'SHMPIPE_E_PROTOCOL', closed.message);
      assert.match(closed.message, /SQ ring positions are corrupt/);
      await assert.rejects(more, (e) => e.code === 'SHMPIPE_E_PROTOCOL');
      for (const c of calls) await assert.rejects(c, (e) => e.code === 'SHMPIPE_E_PROTOCOL');
    });
  });

  describe('completions (CQ)', function () {
    it('for a request that is not in flight', () => violation((sub) => peer.complete({ request_id: sub.request_id + 1n }), /unknown request/));
    it('with an unknown flag bit', () => violation((sub) => peer.complete({ request_id: sub.request_id, flags: 4 }), /malformed completion/));
    it('with a positive status', () => violation((sub) => peer.complete({ request_id: sub.request_id, status: 3 }), /malformed completion/));
    it('with the reserved word set', () => violation((sub) => peer.complete({ request_id: sub.request_id, reserved: 1n }), /malformed completion/));
    it('handing over a slot to a request that named none', () =>
      violation((sub) => peer.complete({ request_id: sub.request_id, flags: p.CQ_SLOT, slot_id: 2, slot_gen: 1 }), /named none/));
    it('MORE for a request that is not a stream', () =>
      violation((sub) => peer.complete({ request_id: sub.request_id, flags: p.CQ_MORE | p.CQ_SLOT, slot_id: 2, slot_gen: 1 }), /not a stream chunk/));

    it('handing back another slot than the request named', async function () {
      const slot = client.tryAlloc();
      const echo = client.echo(slot, 10);
      echo.catch(() => {});
      await tick();
      const [sub] = peer.submissions();
      const other = slot.id === s0 ? s1 : s0;
      peer.complete({ request_id: sub.request_id, flags: p.CQ_SLOT, slot_id: other, slot_gen: 1, result: 10n });
      await fake.command('ring');
      const closed = await client.closed;
      assert.equal(closed.code, 'SHMPIPE_E_PROTOCOL');
      assert.match(closed.message, /hands back slot/);
      await assert.rejects(echo, (e) => e.code === 'SHMPIPE_E_PROTOCOL');
    });

    it('a non-consuming op that succeeds without handing its slot back', async function () {
      const slot = client.tryAlloc();
      const echo = client.echo(slot, 10);
      echo.catch(() => {});
      await tick();
      const [sub] = peer.submissions();
      peer.complete({ request_id: sub.request_id, result: 10n });
      await fake.command('ring');
      const closed = await client.closed;
      assert.equal(closed.code, 'SHMPIPE_E_PROTOCOL');
      assert.match(closed.message, /without handing back slot/);
    });

    it('a stream chunk in a slot the agent holds', async function () {
      const held = client.tryAlloc();
      const stream = client.openRead('k');
      const done = stream.result.catch((e) => e);
      await tick();
      const [sub] = peer.submissions();
      assert.equal(sub.opcode, p.OP_OPEN_READ);
      peer.complete({ request_id: sub.request_id, flags: p.CQ_MORE | p.CQ_SLOT, slot_id: held.id, slot_gen: held.generation + 1, result: 5n, aux: [0n, 1n, 0n] });
      await fake.command('ring');
      const closed = await client.closed;
      assert.equal(closed.code, 'SHMPIPE_E_PROTOCOL');
      assert.match(closed.message, /stream chunk of slot \d+, which the agent holds/);
      assert.equal((await done).code, 'SHMPIPE_E_PROTOCOL');
    });
  });

  it('an honest sequence passes every check: grants, an echo, a stream whose first chunk is its own slot', async function () {
    const slot = client.tryAlloc();
    const echo = client.echo(slot, 10);
    await tick();
    let [sub] = peer.submissions();
    peer.complete({ request_id: sub.request_id, flags: p.CQ_SLOT, slot_id: slot.id, slot_gen: slot.generation, result: 10n, aux: [7n, 0n, 0n] });
    peer.grant(2, 1);
    await fake.command('ring');
    assert.deepEqual(await echo, { length: 10, checksum: 7 });
    const stream = client.openRead('k');
    await tick();
    [sub] = peer.submissions();
    // The request's own slot becomes the first chunk, same generation (SPEC §7.2).
    peer.complete({ request_id: sub.request_id, flags: p.CQ_MORE | p.CQ_SLOT, slot_id: sub.slot_id, slot_gen: sub.slot_gen, result: 3n, aux: [0n, 1n, 0n] });
    peer.complete({ request_id: sub.request_id, result: 3n, aux: [1n, 1n, 0n] });
    await fake.command('ring');
    const got = [];
    for await (const ch of stream) got.push(ch.length);
    assert.deepEqual(got, [3]);
    assert.deepEqual(await stream.result, { size: 3, verified: true });
    assert.equal(await Promise.race([client.closed, tick().then(() => 'open')]), 'open');
  });
});
