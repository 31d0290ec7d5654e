// A consuming op (PUT, WRITE, FILE_WRITE, …) that the sidecar refuses before taking its slot
// leaves the slot with the caller, usable (SPEC §7.2: a refusal at steps 1–3 hands the slot back
// or changes nothing), while a slot the op did take is never handed out twice.
// First against the real sidecar (a slot named by a consuming op while an ECHO of it is still in
// flight is refused: INVALID_SLOT), then every completion status against a fake sidecar.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startSidecar } = require('./helpers/sidecar');
const { startFakeSidecar, PeerRings, tick } = require('./helpers/fake-sidecar');
const { crc32c } = require('./helpers/crc32c');
const { bundle } = require('./helpers/paths');
const B = require('../ts-lib/dist/backup.js');

const { connect, protocol: p } = require(bundle);
const MiB = 1 << 20;

describe('client: a refused consuming op leaves its slot usable', function () {
  describe('against the real sidecar', function () {
    let sidecar;
    before(async function () {
      sidecar = await startSidecar();
    });
    after(async function () {
      await sidecar?.stop();
    });

    it('a PUT refused because an ECHO of its slot is in flight; then the same slot is PUT', async function () {
      const client = await connect({ socketPath: sidecar.socketPath, slotCount: 8, slotSize: MiB });
      try {
        const slot = await client.alloc();
        crypto.randomFillSync(slot.buffer);
        // An ECHO of more than 64 KiB runs on the sidecar's runtime: its slot stays in flight
        // while the PUT, published in the same batch, is checked (SPEC §7.2 step 2).
        const echo = client.echo(slot, slot.capacity);
        const refused = client.put('refused/a', slot, 1000);
        await assert.rejects(refused, (e) => e.code === 'SHMPIPE_E_INVALID_SLOT');
        await echo;
        assert.equal(slot.released, false, 'the refused PUT left the slot with the caller');

        const data = Buffer.from('the same slot, put again');
        data.copy(slot.buffer);
        const r = await client.put('refused/a', slot, data.length);
        assert.deepEqual(r, { size: data.length, checksum: crc32c(data) });
        assert.equal(slot.released, true, 'the accepted PUT consumed it');
        assert.equal((await client.stat('refused/a')).size, data.length);
      } finally {
        await client.close();
      }
    });

    it('a FILE_WRITE refused the same way; the same slot is then written and the file reads back exactly', async function () {
      const { ops } = B;
      const client = await B.connect({ socketPath: sidecar.socketPath, slotCount: 8, slotSize: MiB });
      try {
        const repo = await ops.repoInit(client, 'pw', { kdf_m_kib: 64, kdf_t: 1 });
        const backup = await ops.backupBegin(client, repo, { host: 'test', paths: ['/f'] });
        const file = await ops.fileOpen(client, backup);
        const slot = await client.alloc();
        const data = crypto.randomBytes(300_000);
        data.copy(slot.buffer);
        const echo = client.echo(slot, slot.capacity);
        const refused = ops.fileWrite(client, file, slot, data.length);
        await assert.rejects(refused, (e) => e.code === 'SHMPIPE_E_INVALID_SLOT');
        await echo;
        assert.equal(slot.released, false);

        assert.equal(await ops.fileWrite(client, file, slot, data.length), data.length);
        assert.equal(slot.released, true);
        const { content, size } = await ops.fileFinish(client, file);
        assert.equal(size, data.length);
        const lines = Buffer.from(
          `${ops.encodeEntry({ path: 'f', kind: 'file', mode: 0o100644, uid: 0, gid: 0, mtimeNs: 0n, size: BigInt(data.length), inode: 1n, dev: 1n, content })}\n`,
        );
        const entrySlot = await client.alloc();
        lines.copy(entrySlot.buffer);
        assert.equal(await ops.addEntries(client, backup, entrySlot, lines.length), 1);
        entrySlot.release();
        await ops.backupCommit(client, backup);

        const chunks = [];
        for await (const ch of ops.contentRead(client, repo, content)) chunks.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
        assert.ok(Buffer.concat(chunks).equals(data), 'the file read back is what the accepted FILE_WRITE carried');
        await ops.close(client, repo);
      } finally {
        await client.close();
      }
    });
  });

  describe('every outcome, against a fake sidecar', function () {
    let fake;
    let client;
    let peer;
    beforeEach(async function () {
      fake = await startFakeSidecar({ slotCount: 4, grants: 4, sqCapacity: 16, cqCapacity: 16 });
      client = await connect({ socketPath: fake.socketPath, slotCount: 4, slotSize: 4096, sqCapacity: 16, cqCapacity: 16 });
      peer = new PeerRings(client);
    });
    afterEach(async function () {
      await client?.close();
      await fake?.stop();
    });

    /** Submits `op(slot)`, answers its entry with `status`/`flags`, returns the settled outcome. */
    async function answer(op, status, { flags = 0, busy = false } = {}) {
      const slot = client.tryAlloc();
      let echo = null;
      if (busy) echo = client.echo(slot, 10); // another request of ours naming the slot
      const call = op(slot);
      call.catch(() => {});
      await tick();
      const subs = peer.submissions();
      const sub = subs[subs.length - 1];
      assert.equal(sub.slot_id, slot.id);
      peer.complete({ request_id: sub.request_id, status, flags, slot_id: flags ? slot.id : p.NO_SLOT, slot_gen: flags ? slot.generation : 0 });
      if (echo !== null) {
        const e = subs.find((x) => x.opcode === p.OP_ECHO);
        peer.complete({ request_id: e.request_id, flags: p.CQ_SLOT, slot_id: slot.id, slot_gen: slot.generation, result: 10n });
      }
      await fake.command('ring');
      const outcome = await call.then(
        () => 'ok',
        (e) => e.code,
      );
      if (echo !== null) await echo;
      return { slot, outcome };
    }

    const ops = { put: (s) => client.put('k', s, 10) };
    // A Writer needs an OPEN_WRITE first; the fake answers it with handle 7 and the slot back.
    async function writer() {
      const w = client.openWrite('w');
      await tick();
      const [sub] = peer.submissions();
      peer.complete({ request_id: sub.request_id, flags: p.CQ_SLOT, slot_id: sub.slot_id, slot_gen: sub.slot_gen, result: 7n });
      await fake.command('ring');
      return w;
    }

    const cases = [
      // [status, other request naming the slot, the slot stays usable]
      ['SHMPIPE_E_INVALID_SLOT', true, true], // in flight for our own ECHO: step 2, nothing changed
      ['SHMPIPE_E_OUT_OF_RANGE', false, true], // step 2
      ['SHMPIPE_E_UNKNOWN_OPCODE', false, true], // step 1 (an older sidecar)
      ['SHMPIPE_E_INVALID_SLOT', false, false], // the sidecar does not count it as ours
      ['SHMPIPE_E_STALE_SLOT', false, false],
      ['SHMPIPE_E_MALFORMED', false, false], // also a failure after acceptance: never reuse
      ['SHMPIPE_E_SHUTTING_DOWN', false, false], // likewise (a draining refusal, or cancelled)
      ['SHMPIPE_E_STORE', false, false], // accepted, consumed, then failed
      [null, false, false], // success: consumed
    ];
    for (const [code, busy, usable] of cases) {
      for (const kind of ['put', 'write']) {
        it(`${kind}: ${code ?? 'success'}${busy ? ' while an ECHO of the slot is in flight' : ''} → the slot is ${usable ? 'still the caller’s' : 'gone'}`, async function () {
          let op = ops.put;
          if (kind === 'write') {
            const w = await writer();
            op = (s) => w.write(s, 10);
          }
          const status = code === null ? 0 : p.WIRE_ERROR_CODES[code];
          const { slot, outcome } = await answer(op, status, { busy });
          assert.equal(outcome, code ?? 'ok');
          assert.equal(slot.released, !usable);
          if (!usable) return;
          // Usable: the next consuming op on it goes out with the same slot and generation.
          const again = op(slot);
          again.catch(() => {});
          await tick();
          const [sub] = peer.submissions();
          assert.deepEqual([sub.slot_id, sub.slot_gen], [slot.id, slot.generation]);
        });
      }
    }

    it('a grant of a slot whose consuming op was refused (so still the agent’s) is a protocol violation', async function () {
      const { slot } = await answer(ops.put, p.WIRE_ERROR_CODES.SHMPIPE_E_OUT_OF_RANGE);
      assert.equal(slot.released, false);
      peer.grant(slot.id, slot.generation + 1);
      await fake.command('ring');
      const closed = await client.closed;
      assert.equal(closed.code, 'SHMPIPE_E_PROTOCOL', closed.message);
    });

    it('a consumed slot may come back as a grant before its completion', async function () {
      const slot = client.tryAlloc();
      const put = client.put('k', slot, 10);
      await tick();
      const [sub] = peer.submissions();
      peer.grant(slot.id, slot.generation + 1); // the store let go of it already
      await fake.command('ring');
      peer.complete({ request_id: sub.request_id, result: 10n });
      await fake.command('ring');
      assert.deepEqual(await put, { size: 10, checksum: 0 });
      const fresh = [];
      for (let s = client.tryAlloc(); s !== null; s = client.tryAlloc()) fresh.push(s);
      const again = fresh.find((s) => s.id === slot.id);
      assert.ok(again && again.generation === slot.generation + 1 && !again.released && slot.released);
    });
  });
});
