// The end-to-end store tests every backend must pass (test/e2e-store.test.js runs them against
// file:// in a temp directory, test/e2e-store-s3.test.js against moto's S3 server): the public
// client API through a real sidecar, plus faults. A backend supplies the sidecar environment and
// the few things the agent cannot see: how to damage a stored object, and what an abandoned
// upload would leave behind (staging files, multipart uploads).
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const crc32cLib = require('crc-32/crc32c');
const { bundle } = require('./paths');
const { startSidecar, waitFor } = require('./sidecar');
const { forkChild } = require('./fork');
const { makeFile, sha256File, filesUnder } = require('./files');

const { connect, ShmpipeError } = require(bundle);

const MiB = 1 << 20;

/**
 * @param {string} title
 * @param {object} backend
 * @param {() => Promise<Record<string,string>>} backend.env the sidecar's store settings
 * @param {(key: string) => Promise<void>} backend.corrupt flips a data byte of a stored object
 * @param {(key: string) => Promise<string[]>} backend.inProgress uploads of `key` not committed
 *   (multipart uploads, staging files): empty once nothing is left behind
 * @param {number} backend.bigFile size of the putFile/getFile round trip
 */
function storeSuite(title, backend) {
  describe(title, function () {
    let sidecar;
    let client;
    let work;
    before(async function () {
      sidecar = await startSidecar({ env: { SHMPIPE_PART_SIZE: String(6 * MiB), ...(await backend.env()) } });
      client = await connect({ socketPath: sidecar.socketPath, slotCount: 64, slotSize: MiB, clientName: 'store-e2e' });
      work = fs.mkdtempSync(path.join(sidecar.dir, 'work-'));
    });
    after(async () => {
      await client?.close();
      await sidecar?.stop();
    });

    const randomSlot = async (n) => {
      const s = await client.alloc();
      crypto.randomFillSync(s.buffer, 0, n);
      return s;
    };

    it('put, stat, openRead, list, delete', async () => {
      const s = await randomSlot(1000);
      const expect = Buffer.from(s.buffer.subarray(0, 1000));
      const r = await client.put('e2e/basic/one', s, 1000);
      assert.deepEqual(r, { size: 1000, checksum: crc32cLib.buf(expect) >>> 0 });
      assert.ok(s.released, 'put consumed the slot');
      const st = await client.stat('e2e/basic/one');
      assert.equal(st.size, 1000);
      assert.equal(st.checksum, r.checksum);
      assert.ok(st.mtimeMs > Date.now() - 3_600_000 && st.mtimeMs < Date.now() + 3_600_000, `mtime ${st.mtimeMs}`);
      const got = [];
      const stream = client.openRead('e2e/basic/one');
      for await (const ch of stream) got.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
      assert.deepEqual(Buffer.concat(got), expect);
      assert.deepEqual(await stream.result, { size: 1000, verified: true });

      for (const k of ['e2e/basic/two', 'e2e/basic/sub/three', 'e2e/basicx']) {
        const t = await randomSlot(10);
        await client.put(k, t, 10);
      }
      const keys = async (prefix, pageSize) => {
        const out = [];
        for await (const e of client.list(prefix, { pageSize })) out.push(e.key);
        return out;
      };
      assert.deepEqual(await keys('e2e/basic', 1), ['e2e/basic/one', 'e2e/basic/sub/three', 'e2e/basic/two'], 'whole segments, in order, paged');
      assert.deepEqual(await keys('e2e/basic/', 1000), ['e2e/basic/one', 'e2e/basic/sub/three', 'e2e/basic/two']);
      assert.deepEqual((await keys('e2e', 2)).length, 4);
      for await (const e of client.list('e2e/basic/sub')) assert.deepEqual([e.key, e.size], ['e2e/basic/sub/three', 10]);

      await client.delete('e2e/basic/one');
      await client.delete('e2e/basic/one'); // idempotent
      await assert.rejects(client.stat('e2e/basic/one'), (e) => e.code === 'SHMPIPE_E_NOT_FOUND' && e.message.includes('e2e/basic/one'));
    });

    it('errors are typed, and bad arguments fail before any request', async () => {
      const before = (await client.stats()).session.requests_total;
      const s = await client.alloc();
      for (const bad of ['', '/a', 'a/', 'a//b', 'a/./b', 'a/../b', 'x#12', 'a\u0001b', 'k'.repeat(1025), 42, null]) {
        await assert.rejects(client.put(bad, s, 1), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, String(bad));
        await assert.rejects(client.stat(bad), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, String(bad));
        assert.throws(() => client.openRead(bad), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, String(bad));
      }
      await assert.rejects(client.put('k', s, s.capacity + 1), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      await assert.rejects(client.put('k', s, -1), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      await assert.rejects(client.put('k', {}, 1), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      assert.throws(() => client.openRead('k', { range: { start: 5, end: 4 } }), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      assert.throws(() => client.openRead('k', { readAhead: 0 }), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      assert.throws(() => client.openRead('k', { bogus: 1 }), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      assert.throws(() => client.list('/a'), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      assert.throws(() => client.list('a', { pageSize: 0 }), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      await assert.rejects(client.putFile(path.join(work, 'missing'), 'k'), { code: 'SHMPIPE_E_IO' });
      await assert.rejects(client.getFile('k', ''), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      // Since `before` (which counted its own STATS): that STATS slot's SLOT_RELEASE and this
      // STATS. Nothing else reached the sidecar.
      assert.equal((await client.stats()).session.requests_total, before + 2);
      s.release();

      const t = await randomSlot(10);
      await client.put('e2e/errors/once', t, 10);
      await assert.rejects(client.put('e2e/errors/again', t, 10), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, 'a consumed slot');
      const w = await client.openWrite('e2e/errors/w');
      await w.commit();
      const u = await client.alloc();
      await assert.rejects(w.write(u, 1), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, 'write after commit');
      await assert.rejects(w.commit(), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
      assert.ok(!u.released, 'a refused write leaves the slot with its owner');
      u.release();
      await assert.rejects(client.stat('e2e/errors/nope'), (e) => e instanceof ShmpipeError && e.code === 'SHMPIPE_E_NOT_FOUND' && e.status === -9);
      assert.equal((await client.stat('e2e/errors/w')).size, 0, 'an empty upload commits an empty object');
    });

    it('a streaming upload in parts over 5 MiB, several WRITEs in flight, read back whole and by range', async () => {
      const key = 'e2e/multipart/obj';
      const total = 20 * MiB + 12345;
      const w = await client.openWrite(key);
      const data = crypto.randomBytes(total);
      const writes = [];
      for (let off = 0; off < total; off += MiB) {
        const n = Math.min(MiB, total - off);
        const s = await client.alloc();
        data.copy(s.buffer, 0, off, off + n);
        writes.push(w.write(s, n));
        if (writes.length === 7) {
          // > 6 MiB written: the multipart upload exists, nothing is visible yet.
          await Promise.all(writes);
          assert.ok((await waitFor(async () => (await backend.inProgress(key)).length > 0, 10_000)), 'a multipart upload is under way');
          await assert.rejects(client.stat(key), { code: 'SHMPIPE_E_NOT_FOUND' });
        }
      }
      await Promise.all(writes);
      const r = await w.commit();
      assert.deepEqual(r, { size: total, checksum: crc32cLib.buf(data) >>> 0 });
      assert.deepEqual(await waitFor(async () => ((await backend.inProgress(key)).length === 0 ? [] : null)), [], 'nothing left in progress');

      let next = 0;
      const parts = [];
      const stream = client.openRead(key, { readAhead: 6 });
      for await (const ch of stream) {
        assert.equal(ch.offset, next, 'chunks in order, contiguous');
        parts.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
        next += ch.length;
      }
      assert.ok(Buffer.concat(parts).equals(data), 'read back bit-exact');
      assert.deepEqual(await stream.result, { size: total, verified: true });

      const ranged = client.openRead(key, { range: { start: 3 * MiB - 7, end: 5 * MiB + 3 } });
      const rparts = [];
      for await (const ch of ranged) rparts.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
      assert.ok(Buffer.concat(rparts).equals(data.subarray(3 * MiB - 7, 5 * MiB + 3)));
      assert.deepEqual(await ranged.result, { size: 2 * MiB + 10, verified: false });
      const tail = client.openRead(key, { range: { start: total - 5 } });
      const tparts = [];
      for await (const ch of tail) tparts.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
      assert.ok(Buffer.concat(tparts).equals(data.subarray(total - 5)));
      const past = client.openRead(key, { range: { start: 0, end: total + 1 } });
      await assert.rejects(past.result, { code: 'SHMPIPE_E_MALFORMED' });

      // break: the chunks are released and the stream cancelled; every slot comes back.
      const early = client.openRead(key, { readAhead: 4 });
      let seen = 0;
      for await (const ch of early) {
        assert.ok(ch.length > 0);
        if (++seen === 2) break;
      }
      const settled = await waitFor(async () => {
        const st = (await client.stats()).session;
        return st.in_flight_async === 0 && st.slots_in_flight === 1 && st.slots_free === client.layout.readReserve ? st : null;
      });
      assert.ok(settled, 'the stream ended and its slots came back');
      assert.equal(settled.errors_by_code.SHMPIPE_E_CANCELLED, 1, 'cancelled with ABORT');
    });

    it(`putFile / getFile of ${backend.bigFile / MiB} MiB round trip bit-exact`, async function () {
      const src = path.join(work, 'big.in');
      const dst = path.join(work, 'big.out');
      const size = backend.bigFile + 4097;
      const digest = await makeFile(src, size);
      const up = await client.putFile(src, 'e2e/big/file');
      assert.equal(up.size, size);
      const st = await client.stat('e2e/big/file');
      assert.deepEqual([st.size, st.checksum], [size, up.checksum]);
      const down = await client.getFile('e2e/big/file', dst);
      assert.deepEqual(down, { size, verified: true });
      assert.equal(await sha256File(dst), digest, 'bit-exact');
      fs.rmSync(src);
      fs.rmSync(dst);
      // Small files take the one-slot PUT path; empty files work too.
      for (const n of [0, 1, MiB - 100]) {
        const f = path.join(work, `small-${n}`);
        const d = await makeFile(f, n);
        await client.putFile(f, `e2e/small/${n}`);
        await client.getFile(`e2e/small/${n}`, `${f}.out`);
        assert.equal(await sha256File(`${f}.out`), d, `${n} bytes`);
      }
    });

    it('a corrupted object fails GET with SHMPIPE_E_INTEGRITY; getFile leaves no file', async () => {
      const s = await randomSlot(300_000);
      await client.put('e2e/corrupt/obj', s, 300_000);
      await backend.corrupt('e2e/corrupt/obj');
      const stream = client.openRead('e2e/corrupt/obj');
      await assert.rejects(
        (async () => {
          for await (const ch of stream) assert.ok(ch.length > 0);
        })(),
        { code: 'SHMPIPE_E_INTEGRITY' },
      );
      const dst = path.join(work, 'corrupt.out');
      await assert.rejects(client.getFile('e2e/corrupt/obj', dst), { code: 'SHMPIPE_E_INTEGRITY' });
      assert.ok(!fs.existsSync(dst), 'no file');
      assert.deepEqual(fs.readdirSync(work).filter((n) => n.includes('corrupt')), [], 'no temporary file either');
      // A range is not verified (the checksum covers the whole object): it reads.
      const ranged = client.openRead('e2e/corrupt/obj', { range: { start: 0, end: 100 } });
      for await (const ch of ranged) assert.equal(ch.length, 100);
    });

    it('getFile of a missing key: SHMPIPE_E_NOT_FOUND and no file created', async () => {
      const dst = path.join(work, 'missing.out');
      await assert.rejects(client.getFile('e2e/none/such', dst), (e) => e.code === 'SHMPIPE_E_NOT_FOUND' && e.message.includes('e2e/none/such'));
      assert.ok(!fs.existsSync(dst));
      assert.deepEqual(fs.readdirSync(work).filter((n) => n.includes('missing')), []);
      // An existing file is not touched by a failed download.
      fs.writeFileSync(dst, 'keep');
      await assert.rejects(client.getFile('e2e/none/such', dst), { code: 'SHMPIPE_E_NOT_FOUND' });
      assert.equal(fs.readFileSync(dst, 'utf8'), 'keep');
    });

    it('an agent SIGKILLed mid-upload leaves no upload behind', async () => {
      const key = 'e2e/killed/upload';
      const child = forkChild({ mode: 'uploadAndHang', socketPath: sidecar.socketPath, key, slots: 20 });
      await child.next('uploading');
      assert.ok((await backend.inProgress(key)).length > 0, 'the upload was under way');
      child.proc.kill('SIGKILL');
      await child.exited;
      const left = await waitFor(async () => ((await backend.inProgress(key)).length === 0 ? [] : null), 10_000);
      assert.deepEqual(left, [], `nothing of ${key} left in progress`);
      await assert.rejects(client.stat(key), { code: 'SHMPIPE_E_NOT_FOUND' }, 'no object');
    });
  });
}

module.exports = { storeSuite, MiB, filesUnder };
