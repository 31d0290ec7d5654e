// Faults against the real sidecar: an agent killed mid-flight, the sidecar killed mid-flight,
// garbage submissions, a corrupted SQ tail, and a peer uid the sidecar does not allow. In every
// case the other clients keep working and nothing hangs.
'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { bundle } = require('./helpers/paths');
const { startSidecar, leftoverSegments, segmentsHeld, waitFor } = require('./helpers/sidecar');
const { forkChild, reachableChild } = require('./helpers/fork');
const { sqTaken } = require('./helpers/rings');
const { crc32c } = require('./helpers/crc32c');

const { connect, protocol: p } = require(bundle);

/** Entry bytes 8..64 of a submission (raw.submit fills request_id). */
function entry56(fields) {
  const s = {
    request_id: 0n,
    opcode: 0,
    flags: 0,
    reserved0: 0,
    slot_id: p.NO_SLOT,
    slot_gen: 0,
    offset: 0,
    length: 0,
    reserved1: 0,
    args: [0n, 0n, 0n, 0n],
    ...fields,
  };
  return p.encodeSubmission(s).subarray(8);
}

async function echoWorks(client) {
  const slot = await client.alloc();
  slot.buffer.fill(0x3c, 0, 4096);
  slot.buffer.writeUInt32LE(Date.now() >>> 0, 100);
  const r = await client.echo(slot, 4096);
  assert.equal(r.checksum, crc32c(slot.buffer.subarray(0, 4096)));
  slot.release();
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([promise, new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(t),
  );
}

describe('faults', function () {
  describe('an agent SIGKILLed mid-flight', () => {
    let sidecar;
    before(async () => {
      sidecar = await startSidecar();
    });
    after(async () => {
      await sidecar?.stop();
    });

    it('the sidecar reclaims its session and keeps serving others', async () => {
      // Segments of clients earlier tests closed stay mapped here until their buffers are
      // garbage-collected (the addon unmaps in a finalizer), so the survivor's own segment is the
      // one that appears when it connects.
      const earlier = new Set(segmentsHeld(process.pid).mapped);
      const other = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, clientName: 'survivor' });
      const base = (await other.stats()).global;
      // The survivor's segment, as the sidecar holds it (mapped; by inode).
      const mine = segmentsHeld(process.pid).mapped.filter((ino) => !earlier.has(ino));
      assert.equal(mine.length, 1, 'this process maps its one segment');
      const child = forkChild({ mode: 'hold', socketPath: sidecar.socketPath, slotCount: 16, slotSize: 65536, delays: 200 });
      const { stats, held } = await child.next('ready');
      assert.equal(stats.session.in_flight_async, 200, 'the child had 200 DELAYs in flight');
      assert.equal(stats.global.segments_live, 2);
      assert.equal(held, 12, 'the child holds every slot its session grants (16 minus the read reserve of 4)');
      const theirs = segmentsHeld(child.pid).mapped;
      assert.equal(theirs.length, 1);
      const during = segmentsHeld(sidecar.pid);
      assert.deepEqual(during.mapped, [...mine, ...theirs].sort(), 'the sidecar maps both sessions\' segments');

      child.proc.kill('SIGKILL');
      await child.exited;

      const g = await waitFor(async () => {
        const s = (await other.stats()).global;
        return s.sessions_closed === base.sessions_closed + 1 && s.segments_live === 1 ? s : null;
      }, 10_000);
      assert.ok(g, 'the killed session was closed and its segment released within 10 s');
      const reclaimed = g.slots_reclaimed_total - base.slots_reclaimed_total;
      assert.equal(reclaimed, held, `reclaimed ${reclaimed} slots; the session held ${held}`);
      assert.equal(g.clients, 1);
      assert.deepEqual(leftoverSegments(sidecar.pid), [], `nothing named shmpipe-${sidecar.pid}-* left in /dev/shm`);
      // The names were unlinked at handshake, so /dev/shm shows nothing either way: what the
      // sidecar still maps or holds open does.
      const afterKill = segmentsHeld(sidecar.pid);
      assert.deepEqual(afterKill.mapped, mine, 'the killed session\'s segment is unmapped; the survivor\'s stays');
      assert.ok(afterKill.fds.every((ino) => mine.includes(ino)), `no fd of the killed segment stays open: ${afterKill.fds}`);
      await echoWorks(other);
      assert.ok(sidecar.alive);
      await other.close();
    });
  });

  describe('the sidecar SIGKILLed mid-flight', () => {
    let sidecar;
    before(async () => {
      sidecar = await startSidecar();
    });
    after(async () => {
      await sidecar?.stop();
    });

    it('every pending Promise rejects with SHMPIPE_E_DISCONNECTED, none hangs; later calls too', async () => {
      const client = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, sqCapacity: 64, cqCapacity: 64 });
      // Every slot the session grants (4 minus the read reserve of 1, SPEC §9).
      const slots = await Promise.all(Array.from({ length: client.layout.grantWindow }, () => client.alloc()));
      const pending = [];
      // In flight at the sidecar, waiting in the client FIFO (SQ of 64 is full), and waiting for a slot.
      for (let i = 0; i < 1000; i++) pending.push(client.delay(20_000_000));
      pending.push(client.alloc(), client.alloc());
      pending.push(client.stats());
      // 64 DELAYs taken: in flight at the sidecar (its limit for a CQ of 64); the rest wait in
      // the SQ and in the client's FIFO.
      await sqTaken(client, 64, 'before the kill');

      sidecar.proc.kill('SIGKILL');
      // A deadline against a hang, not a timing claim (speed is for benchmarks).
      const results = await withTimeout(Promise.allSettled(pending), 10_000, 'pending calls');
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        assert.equal(r.reason.code, 'SHMPIPE_E_DISCONNECTED', r.reason.message);
      }
      const closed = await withTimeout(client.closed, 10_000, 'closed');
      assert.equal(closed.code, 'SHMPIPE_E_DISCONNECTED');
      await assert.rejects(client.nop(), { code: 'SHMPIPE_E_DISCONNECTED' });
      await assert.rejects(client.echo(slots[0], 10), { code: 'SHMPIPE_E_DISCONNECTED' });
      await assert.rejects(client.alloc(), { code: 'SHMPIPE_E_DISCONNECTED' });
      assert.throws(() => client.tryAlloc(), { code: 'SHMPIPE_E_DISCONNECTED' });
      await client.close(); // idempotent after a failure
    });
  });

  describe('hostile input', () => {
    let sidecar;
    before(async () => {
      sidecar = await startSidecar();
    });
    after(async () => {
      await sidecar?.stop();
    });

    it('garbage submissions get error completions with the right codes; nobody else notices', async () => {
      const client = await connect({ socketPath: sidecar.socketPath, slotCount: 8, slotSize: 65536, clientName: 'hostile' });
      const other = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, clientName: 'bystander' });
      const slot = await client.alloc();
      const size = client.layout.slotSize;
      const echo = (f) => entry56({ opcode: p.OP_ECHO, slot_id: slot.id, slot_gen: slot.generation, ...f });
      const cases = [
        ['unknown opcode 200', entry56({ opcode: 200 }), 'SHMPIPE_E_UNKNOWN_OPCODE'],
        ['reserved store opcode 25', entry56({ opcode: 25 }), 'SHMPIPE_E_UNKNOWN_OPCODE'],
        ['PUT without a slot', entry56({ opcode: p.OP_PUT, args: [1n, 0n, 0n, 0n] }), 'SHMPIPE_E_INVALID_SLOT'],
        ['COMMIT of an unknown handle', entry56({ opcode: p.OP_COMMIT, args: [77n, 0n, 0n, 0n] }), 'SHMPIPE_E_INVALID_HANDLE'],
        ['reserved0 set', entry56({ reserved0: 1 }), 'SHMPIPE_E_MALFORMED'],
        ['reserved1 set', echo({ reserved1: 9 }), 'SHMPIPE_E_MALFORMED'],
        ['unknown flag bit', echo({ flags: 0x80 }), 'SHMPIPE_E_MALFORMED'],
        ['NOP naming a slot', entry56({ slot_id: slot.id, slot_gen: slot.generation }), 'SHMPIPE_E_MALFORMED'],
        ['DELAY over 60 s', entry56({ opcode: p.OP_DELAY, args: [60_000_001n, 0n, 0n, 0n] }), 'SHMPIPE_E_MALFORMED'],
        ['ECHO without a slot', entry56({ opcode: p.OP_ECHO }), 'SHMPIPE_E_INVALID_SLOT'],
        ['ECHO of slot id ≥ slot_count', echo({ slot_id: client.layout.slotCount + 5 }), 'SHMPIPE_E_INVALID_SLOT'],
        ['ECHO of slot id 2^31', echo({ slot_id: 2 ** 31 }), 'SHMPIPE_E_INVALID_SLOT'],
        ['SLOT_RELEASE of a foreign slot id', entry56({ opcode: p.OP_SLOT_RELEASE, slot_id: 4000, slot_gen: 1 }), 'SHMPIPE_E_INVALID_SLOT'],
        ['ECHO with a stale generation', echo({ slot_gen: slot.generation + 1, length: 1 }), 'SHMPIPE_E_STALE_SLOT'],
        ['ECHO with generation 0', echo({ slot_gen: 0, length: 1 }), 'SHMPIPE_E_STALE_SLOT'],
        ['ECHO one byte past the slot', echo({ length: size + 1 }), 'SHMPIPE_E_OUT_OF_RANGE'],
        ['ECHO ending past the slot', echo({ offset: size - 10, length: 11 }), 'SHMPIPE_E_OUT_OF_RANGE'],
        ['ECHO with u32 overflow', echo({ offset: 0xffffffff, length: 0xffffffff }), 'SHMPIPE_E_OUT_OF_RANGE'],
        ['STATS into 8 bytes', entry56({ opcode: p.OP_STATS, slot_id: slot.id, slot_gen: slot.generation, length: 8 }), 'SHMPIPE_E_OUT_OF_RANGE'],
      ];
      for (const [name, bytes, code] of cases) {
        const c = await client.raw.submit(bytes);
        assert.equal(c.code, code, `${name}: status ${c.status}`);
        assert.equal(c.status, p.WIRE_ERROR_CODES[code]);
      }
      // The slot named by the refused requests is still ours and still works.
      const ok = await client.raw.submit(echo({ length: 100 }));
      assert.equal(ok.status, 0);
      assert.equal(Number(ok.aux[0]), crc32c(slot.buffer.subarray(0, 100)));

      // Random bytes, many at once: every one completes with 0 or a known error, none crashes.
      const random = [];
      for (let i = 0; i < 2000; i++) {
        const b = new Uint8Array(56);
        for (let k = 0; k < 56; k++) b[k] = (Math.random() * 256) | 0;
        if (i % 2 === 0) b[0] = i % 6; // a known opcode half of the time, to get past the first check
        random.push(client.raw.submit(b));
      }
      for (const c of await Promise.all(random)) {
        assert.ok(c.status <= 0);
        if (c.status < 0) assert.ok(c.code !== null, `unknown status ${c.status}`);
      }

      // A slot released behind the client's back (raw SLOT_RELEASE), then used with its old generation.
      const victim = await client.alloc();
      const rel = await client.raw.submit(entry56({ opcode: p.OP_SLOT_RELEASE, slot_id: victim.id, slot_gen: victim.generation }));
      assert.equal(rel.status, 0);
      const stale = await client.raw.submit(entry56({ opcode: p.OP_ECHO, slot_id: victim.id, slot_gen: victim.generation, length: 1 }));
      assert.ok(['SHMPIPE_E_INVALID_SLOT', 'SHMPIPE_E_STALE_SLOT'].includes(stale.code), stale.code);

      assert.ok(sidecar.alive, 'the sidecar survived');
      await echoWorks(client);
      await echoWorks(other);
      const mine = (await client.stats()).session;
      assert.ok(mine.errors_by_code.SHMPIPE_E_UNKNOWN_OPCODE >= 2);
      assert.ok(mine.errors_by_code.SHMPIPE_E_OUT_OF_RANGE >= 4);
      const theirs = (await other.stats()).session;
      assert.ok(Object.values(theirs.errors_by_code).every((n) => n === 0), 'the bystander saw no errors');
      await client.close();
      await other.close();
    });

    it('a corrupt SQ tail closes that session only', async () => {
      const client = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, clientName: 'corrupt' });
      const other = await connect({ socketPath: sidecar.socketPath, slotCount: 4, slotSize: 65536, clientName: 'bystander' });
      const base = (await other.stats()).global;
      const inFlight = client.delay(20_000_000);
      await sqTaken(client, 1, 'the DELAY'); // published and taken by the sidecar

      const seg = client.raw.segment;
      const positions = new BigUint64Array(seg.buffer, seg.byteOffset, seg.byteLength / 8);
      const tailIndex = (client.layout.sqOffset + p.RING.tail) / 8;
      const tail = Atomics.load(positions, tailIndex);
      Atomics.store(positions, tailIndex, tail + BigInt(client.layout.sqCapacity) + 1000n);
      client.raw.ringDoorbell();

      const closed = await withTimeout(client.closed, 5000, 'closed after corruption');
      assert.ok(['SHMPIPE_E_DISCONNECTED', 'SHMPIPE_E_PROTOCOL'].includes(closed.code), closed.code);
      await assert.rejects(inFlight, (e) => ['SHMPIPE_E_DISCONNECTED', 'SHMPIPE_E_PROTOCOL'].includes(e.code));
      await assert.rejects(client.nop(), (e) => ['SHMPIPE_E_DISCONNECTED', 'SHMPIPE_E_PROTOCOL'].includes(e.code));

      const g = await waitFor(async () => {
        const s = (await other.stats()).global;
        return s.sessions_closed >= base.sessions_closed + 1 ? s : null;
      });
      assert.ok(g, 'the corrupt session was closed');
      assert.ok(g.protocol_violations >= base.protocol_violations + 1, 'counted as a protocol violation');
      assert.ok(sidecar.alive);
      await echoWorks(other);
      await other.close();
    });
  });

  describe('peer credentials', () => {
    const NOBODY = 65534;
    // The client runs as nobody from a copy in a world-readable temp directory: this checkout
    // may sit under a directory nobody cannot enter (a clone under /root or `mktemp -d`).
    let copy = null;
    before(function () {
      if (process.getuid() !== 0) {
        console.log('      skipped: needs root to run a client under another uid');
        this.skip();
      }
      copy = reachableChild();
      const probe = spawnSync(process.execPath, [copy.script, JSON.stringify({ mode: 'none' })], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
      if (!/unknown mode/.test(probe.stderr)) {
        const why = (probe.stderr || String(probe.error)).split('\n').find((l) => /Error/.test(l)) ?? probe.stderr;
        console.log(`      skipped: uid ${NOBODY} cannot run the client copied to ${path.dirname(copy.script)}: ${why.trim()}`);
        this.skip();
      }
    });
    after(() => copy?.remove());
    async function tryAsNobody(env) {
      const sidecar = await startSidecar({ dirMode: 0o755, env });
      try {
        fs.chmodSync(sidecar.socketPath, 0o777); // the file system lets it in; only SO_PEERCRED decides
        const child = forkChild({ mode: 'connect', socketPath: sidecar.socketPath }, { uid: NOBODY, gid: NOBODY, script: copy.script });
        const r = await child.next('result');
        await child.exited;
        assert.equal(r.uid, NOBODY);
        return r;
      } finally {
        await sidecar.stop();
      }
    }

    it('a uid not in the allow-list gets SHMPIPE_E_PERMISSION at connect', async function () {
      const r = await tryAsNobody({});
      assert.equal(r.ok, false);
      assert.equal(r.code, 'SHMPIPE_E_PERMISSION', r.message);
    });

    it('the same uid connects once it is allowed', async function () {
      const r = await tryAsNobody({ SHMPIPE_ALLOW_UIDS: String(NOBODY) });
      assert.equal(r.ok, true, `${r.code}: ${r.message}`);
    });
  });
});
