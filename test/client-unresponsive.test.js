// A sidecar that stops making progress (SIGSTOP, a wedged dispatcher) while calls are pending:
// the client watches sidecar_heartbeat (SPEC §3) and, when it has not moved for unresponsiveMs,
// rejects every pending call with SHMPIPE_E_UNRESPONSIVE and closes. It watches only while
// something is pending: an idle client has no timer and never gives up on an idle sidecar.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const { startSidecar, waitFor } = require('./helpers/sidecar');
const { startFakeSidecar, PeerRings, tick } = require('./helpers/fake-sidecar');
const { bundle } = require('./helpers/paths');

const { connect, connectResilient } = require(bundle);

/** SIGSTOPs `pid` and waits until every thread of it is stopped (kill() returns before that). */
async function sigstop(pid) {
  process.kill(pid, 'SIGSTOP');
  const all = () => fs.readdirSync(`/proc/${pid}/task`).every((t) => /^\d+ \(.*\) [Tt] /.test(fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8')));
  assert.ok(await waitFor(all, 5000, 5), `sidecar ${pid} did not stop`);
}

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const DEADLINE = 1000;
/** The watchdog checks every deadline/8; it may also only notice a change one check late. */
const LATEST = DEADLINE + 3 * (DEADLINE / 8) + 400;

describe('client: an unresponsive sidecar', function () {
  describe('against a fake sidecar that writes the heartbeat only when told', function () {
    let fake;
    let client;
    let peer;
    beforeEach(async function () {
      fake = await startFakeSidecar({ slotCount: 4, grants: 2 });
      client = await connect({ socketPath: fake.socketPath, slotCount: 4, slotSize: 4096, sqCapacity: 8, cqCapacity: 8, unresponsiveMs: DEADLINE });
      peer = new PeerRings(client);
    });
    afterEach(async function () {
      await client?.close();
      await fake?.stop();
    });

    it('pending calls reject with SHMPIPE_E_UNRESPONSIVE within the deadline, and the client closes', async function () {
      const t0 = performance.now();
      const calls = [client.nop(), client.delay(5), client.echo(client.tryAlloc(), 10)];
      const results = await Promise.allSettled(calls);
      const elapsed = performance.now() - t0;
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        assert.equal(r.reason.code, 'SHMPIPE_E_UNRESPONSIVE', r.reason.message);
      }
      assert.ok(elapsed >= DEADLINE - 50 && elapsed <= LATEST, `rejected after ${Math.round(elapsed)} ms (deadline ${DEADLINE})`);
      assert.equal((await client.closed).code, 'SHMPIPE_E_UNRESPONSIVE');
      await fake.next('eof'); // it closed its end
      await assert.rejects(client.nop(), (e) => e.code === 'SHMPIPE_E_UNRESPONSIVE');
    });

    it('an alloc() waiting for a grant is a pending call too', async function () {
      client.tryAlloc();
      client.tryAlloc();
      await assert.rejects(client.alloc(), (e) => e.code === 'SHMPIPE_E_UNRESPONSIVE');
    });

    it('a call pending for 3x the deadline is not given up while the heartbeat moves', async function () {
      const nop = client.nop();
      const beating = setInterval(() => peer.beat(), 100);
      try {
        await sleep(3 * DEADLINE);
      } finally {
        clearInterval(beating);
      }
      const [sub] = peer.submissions();
      peer.complete({ request_id: sub.request_id });
      await fake.command('ring');
      assert.equal(await nop, undefined);
      assert.equal(await Promise.race([client.closed, tick().then(() => 'open')]), 'open');
    });

    it('a freeze of this process longer than the deadline is not blamed on the sidecar at once', async function () {
      const nop = client.nop();
      nop.catch(() => {});
      await sleep(DEADLINE / 4); // a few checks ran
      // This thread blocked (no CPU used) for 3x the deadline; the fake sidecar does not beat.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3 * DEADLINE);
      await sleep(DEADLINE / 8 + 50); // the first check after the freeze has run
      assert.equal(await Promise.race([client.closed, tick().then(() => 'open')]), 'open', 'one late check counts as at most two periods of silence');
      const t0 = performance.now();
      await assert.rejects(nop, (e) => e.code === 'SHMPIPE_E_UNRESPONSIVE');
      assert.ok(performance.now() - t0 <= LATEST, 'then the silence adds up again');
    });

    it('an idle client has no timer and does not give up on a silent sidecar', async function () {
      await tick(); // mocha's own timeout timer starts after the test function returned its promise
      const base = timers();
      const nop = client.nop();
      assert.equal(timers(), base + 1, 'one timer while a call is pending');
      await tick();
      const [sub] = peer.submissions();
      peer.complete({ request_id: sub.request_id });
      peer.beat();
      await fake.command('ring');
      await nop;
      assert.ok(await waitFor(() => timers() === base, DEADLINE), 'the timer stops once nothing is pending');
      await sleep(2 * DEADLINE); // no heartbeat, nothing pending
      assert.equal(await Promise.race([client.closed, tick().then(() => 'open')]), 'open');
      assert.equal(timers(), base);
      const again = client.nop(); // and it watches again once a call is pending
      await assert.rejects(again, (e) => e.code === 'SHMPIPE_E_UNRESPONSIVE');
    });
  });

  describe('against the real sidecar, SIGSTOPped', function () {
    let sidecar;
    beforeEach(async function () {
      sidecar = await startSidecar();
    });
    afterEach(async function () {
      if (sidecar?.alive) process.kill(sidecar.pid, 'SIGCONT');
      await sidecar?.stop();
    });

    it('pending calls reject within the deadline; after SIGCONT the sidecar reclaims the session and a new client works', async function () {
      const client = await connect({ socketPath: sidecar.socketPath, slotCount: 8, slotSize: 65536, unresponsiveMs: DEADLINE });
      const other = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536 }); // idle meanwhile
      const base = (await other.stats()).global;
      const slot = await client.alloc();
      await client.echo(slot, 100);
      const delays = Array.from({ length: 50 }, () => client.delay(30_000_000));
      await waitFor(async () => (await other.stats()).global.requests_total >= base.requests_total + 52);
      await sigstop(sidecar.pid);
      const t0 = performance.now();
      const pending = [...delays, client.nop(), client.echo(slot, 100)];
      const results = await Promise.allSettled(pending);
      const elapsed = performance.now() - t0;
      assert.ok(results.every((r) => r.status === 'rejected' && r.reason.code === 'SHMPIPE_E_UNRESPONSIVE'), JSON.stringify(results.map((r) => r.reason?.code)));
      assert.ok(elapsed <= LATEST, `rejected ${Math.round(elapsed)} ms after SIGSTOP (deadline ${DEADLINE})`);
      assert.equal((await client.closed).code, 'SHMPIPE_E_UNRESPONSIVE');

      process.kill(sidecar.pid, 'SIGCONT');
      const g = await waitFor(async () => {
        const s = (await other.stats()).global;
        return s.sessions_closed >= base.sessions_closed + 1 && s.segments_live === 1 ? s : null;
      }, 10_000);
      assert.ok(g, 'the abandoned session was reclaimed');
      const fresh = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, unresponsiveMs: DEADLINE });
      const s = await fresh.alloc();
      s.buffer.write('alive');
      assert.equal((await fresh.echo(s, 5)).length, 5);
      await fresh.close();
      await other.close();
      assert.ok(sidecar.alive);
    });

    it('an idle client survives a stopped sidecar and works after SIGCONT', async function () {
      const client = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, unresponsiveMs: DEADLINE });
      await client.nop();
      await sigstop(sidecar.pid);
      await sleep(2 * DEADLINE);
      process.kill(sidecar.pid, 'SIGCONT');
      await client.nop();
      assert.equal(await Promise.race([client.closed, tick().then(() => 'open')]), 'open');
      await client.close();
    });

    it('connectResilient treats it as a lost session: reconnects after SIGCONT and re-runs idempotent calls', async function () {
      const client = await connectResilient(
        { socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, unresponsiveMs: DEADLINE, connectTimeoutMs: 500 },
        { initialDelayMs: 10, maxDelayMs: 200 },
      );
      try {
        const slot = await client.alloc();
        const events = [];
        client.on('disconnected', (e) => events.push(e.code));
        const reconnected = new Promise((r) => client.once('reconnected', r));
        await sigstop(sidecar.pid);
        const nop = client.nop(); // idempotent: waits for the next session
        const echo = client.echo(slot, 10); // bound to this session: lost
        await assert.rejects(echo, (e) => e.code === 'SHMPIPE_E_SESSION_LOST');
        assert.deepEqual(events, ['SHMPIPE_E_UNRESPONSIVE']);
        process.kill(sidecar.pid, 'SIGCONT');
        await reconnected;
        assert.equal(await nop, undefined);
        const s = await client.alloc();
        assert.equal((await client.echo(s, 10)).length, 10);
      } finally {
        await client.close();
      }
    });
  });
});
