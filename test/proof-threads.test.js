// Proof of the "no thread per call" claim that fails when it is false: for every kind of
// request — delay, echo, put, get, list, stat, delete, a backup's FILE_PUT and a restore's
// CONTENT_READ — the agent's and the sidecar's thread counts are sampled (every few ms, from
// /proc/PID/task) while one request at a time runs and while 10,000 are in flight at once.
// The agent's count does not move at all. The sidecar's may grow only by its blocking pool,
// whose size the test caps with SHMPIPE_BLOCKING_THREADS: store ops on a file:// store run
// there (object_store's LocalFileSystem uses spawn_blocking), and uncapped that pool grows to
// 512 threads. A thread per request, or a pool past its cap, fails the test.
'use strict';

const assert = require('node:assert/strict');
const { startSidecar, threadCount } = require('./helpers/sidecar');
const { forkChild } = require('./helpers/fork');

const N = 10_000;
/** The blocking pool cap the sidecar runs with here (SHMPIPE_BLOCKING_THREADS). */
const CAP = 4;
const KINDS = ['delay', 'echo', 'put', 'get', 'list', 'stat', 'backup', 'restore', 'delete'];

/** Samples the thread counts of `pids` every `everyMs` until stopped; the maxima. */
function sampleThreads(pids, everyMs = 2) {
  const max = pids.map((p) => threadCount(p));
  const t = setInterval(() => {
    pids.forEach((p, i) => {
      try {
        max[i] = Math.max(max[i], threadCount(p));
      } catch {
        // exited; the test sees it elsewhere
      }
    });
  }, everyMs);
  return () => {
    clearInterval(t);
    pids.forEach((p, i) => (max[i] = Math.max(max[i], threadCount(p))));
    return max;
  };
}

describe('proof: threads stay constant from 1 to 10,000 requests in flight, for every op kind', function () {
  this.timeout(600_000);
  let sidecar;
  let child;
  before(async () => {
    sidecar = await startSidecar({
      env: {
        SHMPIPE_BLOCKING_THREADS: String(CAP),
        SHMPIPE_MAX_SLOTS: '16384',
        SHMPIPE_MAX_RING: '16384',
        SHMPIPE_MAX_IN_FLIGHT: '16384',
        // 10,000 tiny objects: the claim is about threads, not about the disk's flush rate.
        SHMPIPE_STORE_FSYNC: 'false',
      },
    });
    child = forkChild({ mode: 'opsInFlight', socketPath: sidecar.socketPath, slotCount: 16384, ringCapacity: 16384 });
  });
  after(async () => {
    if (child && child.proc.exitCode === null) {
      child.send({ cmd: 'exit' });
      await child.exited;
    }
    await sidecar?.stop();
  });

  it(`agent: the same count; sidecar: at most its blocking pool's cap more (SHMPIPE_BLOCKING_THREADS=${CAP})`, async () => {
    const { layout } = await child.next('connected');
    assert.ok(layout.maxInFlight >= N, `in-flight limit ${layout.maxInFlight}`);
    assert.ok(layout.grantWindow >= N + 2, `grant window ${layout.grantWindow}`);
    const idle = { agent: threadCount(child.pid), sidecar: threadCount(sidecar.pid) };
    let base = 0;
    const phase = async (kind, n, sequential) => {
      const stop = sampleThreads([child.pid, sidecar.pid]);
      let ok = 0;
      const errors = [];
      // One at a time (n times), or n at once.
      for (const batch of sequential ? Array(n).fill(1) : [n]) {
        child.send({ cmd: 'run', kind, n: batch, base });
        await child.next('submitted');
        const done = await child.next('settled');
        ok += done.ok;
        errors.push(...done.errors);
        base += batch;
      }
      const [agent, sc] = stop();
      assert.equal(ok, n, `${kind}: ${ok} of ${n} succeeded: ${errors.join('; ')}`);
      return { agent, sidecar: sc };
    };
    const rows = [];
    for (const kind of KINDS) {
      if (kind === 'restore') {
        child.send({ cmd: 'commit' }); // the backup's blobs become readable
        await child.next('committed');
      }
      // put makes t/0…; get, stat and delete name those objects.
      if (['put', 'get', 'stat', 'delete'].includes(kind)) base = 0;
      const one = await phase(kind, 20, true);
      const many = await phase(kind, N, false);
      rows.push({ kind, one, many });
    }
    const table = rows.map((r) => `${r.kind.padEnd(8)} agent ${r.one.agent} → ${r.many.agent}, sidecar ${r.one.sidecar} → ${r.many.sidecar}`).join('\n');
    if (process.env.SHMPIPE_E2E_VERBOSE) console.log(`      idle: agent ${idle.agent}, sidecar ${idle.sidecar}\n${table.replace(/^/gm, '      ')}`);
    for (const r of rows) {
      assert.equal(r.many.agent, r.one.agent, `${r.kind}: agent threads with 1 and with ${N} in flight\n${table}`);
      // Pools made on first use (the engine's workers) exist by the end of the one-at-a-time
      // phase; from there only the blocking pool may grow, and only up to its cap.
      assert.ok(r.many.sidecar <= r.one.sidecar + CAP, `${r.kind}: sidecar threads ${r.one.sidecar} with 1 in flight, ${r.many.sidecar} with ${N}: more than the blocking pool's cap of ${CAP}\n${table}`);
    }
    // And never, across all kinds, more than the cap above the idle sidecar (whose engine
    // workers exist already: the repository was opened before `idle` was taken).
    const most = Math.max(...rows.map((r) => r.many.sidecar));
    assert.ok(most <= idle.sidecar + CAP, `sidecar threads reached ${most}, idle ${idle.sidecar}, blocking pool cap ${CAP}\n${table}`);
    // Requests that never block a thread add none at all.
    for (const r of rows.filter((x) => x.kind === 'delay' || x.kind === 'echo')) {
      assert.equal(r.many.sidecar, r.one.sidecar, `${r.kind}: sidecar threads with 1 and with ${N} in flight\n${table}`);
    }
  });
});
