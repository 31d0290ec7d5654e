// S3 faults at the HTTP layer, end to end: the real CLI and sidecar against moto, through a
// fault-injecting proxy (test/helpers/fault-proxy.js) that answers 503 SlowDown, 500
// InternalError and 429 SlowDown, resets connections before a request reaches the server and
// after the server handled it, stalls past the request timeout, and cuts response bodies short.
// - Faults within the retry budget (each request hit at most twice, four retries allowed):
//   init, backup, restore and `check --read-data` all succeed, bit-exact, and every kind of
//   fault was really injected.
// - Faults that persist: the backup fails with SHMPIPE_E_STORE naming the status, commits no
//   snapshot, leaves no object or multipart upload behind; a restore fails without a partial
//   file under a real name; after each, `check --read-data` passes and the same work succeeds
//   once the faults stop.
// - The store unreachable mid-upload (the proxy refuses connections; moto keeps its state, so
//   what is left on the server can be looked at): SHMPIPE_E_STORE, nothing visible under the
//   key, and the same upload succeeds once the store is back.
//
// Without moto these tests are skipped, unless SHMPIPE_REQUIRE_S3=1 (`npm run test:js` sets it),
// which makes them fail.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { bundle } = require('./helpers/paths');
const { s3Available, s3Required, startS3, s3Env } = require('./helpers/s3');
const { startFaultProxy } = require('./helpers/fault-proxy');
const { startSidecar, metric, waitFor } = require('./helpers/sidecar');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');
const { makeTree, manifest, assertSameManifest, removeTree, sha256File, writeRandom, MiB } = require('./helpers/tree');
const { makeFile } = require('./helpers/files');

const BUCKET = 'shmpipe-faults';
const PREFIX = 'repos/host-1';
const PASSWORD = 'faults over S3';
const RETRIES = 4;

/** A manifest without the entries for which `drop(key)` holds. */
function without(m, drop) {
  return Object.fromEntries(Object.entries(m).filter(([k]) => !drop(k)));
}

if (!s3Available()) {
  if (s3Required()) {
    it('S3 faults — SHMPIPE_REQUIRE_S3=1 but moto is not installed', () => {
      assert.fail('run `npm run setup:s3` (scripts/install-s3-server.sh) to install moto into .venv-s3/');
    });
  } else {
    describe('S3 faults', () => {
      it('SKIPPED: moto is not installed (npm run setup:s3)', function () {
        this.skip();
      });
    });
  }
} else {
  describe('S3 faults: the CLI through a fault-injecting proxy in front of moto', function () {
    this.timeout(300_000);
    let s3;
    let proxy;
    let work;
    let src;
    let env;
    const url = `s3://${BUCKET}/${PREFIX}`;
    const cli = (args) => runCli([...args, '--repo', url], { env });
    const repoKeys = async () => (await s3.keys(BUCKET)).filter((k) => k.startsWith(`${PREFIX}/`)).sort();

    before(async function () {
      this.timeout(120_000);
      s3 = await startS3();
      await s3.createBucket(BUCKET);
      proxy = await startFaultProxy({ host: '127.0.0.1', port: s3.port }, { seed: 16 });
      work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-faults-s3-'));
      src = path.join(work, 'src');
      makeTree(src, { bigBytes: 24 * MiB + 5 });
      const { SHMPIPE_STORE: _, ...s3vars } = s3Env({ endpoint: proxy.endpoint }, BUCKET, PREFIX);
      env = cliEnv(work, {
        SHMPIPE_PASSWORD: PASSWORD,
        ...s3vars,
        SHMPIPE_STORE_RETRIES: String(RETRIES),
        SHMPIPE_STORE_RETRY_BACKOFF_MS: '20',
        SHMPIPE_STORE_REQUEST_TIMEOUT_S: '2',
      });
    });

    after(async function () {
      await proxy?.close();
      await s3?.stop();
      if (work) removeTree(work);
    });

    it('init, backup, restore and check --read-data succeed through 5xx, 429, resets, stalls and cut bodies', async function () {
      proxy.set(
        [
          // A few of each kind at fixed points (rules see only what earlier rules let pass).
          { fault: 'status', status: 503, code: 'SlowDown', after: 2, times: 3 },
          { fault: 'status', status: 500, code: 'InternalError', after: 4, times: 3 },
          { fault: 'status', status: 429, code: 'SlowDown', after: 6, times: 3 },
          { fault: 'reset', after: 3, times: 3 },
          { fault: 'stall', after: 10, times: 2 },
          // The server stored it, the answer is lost: the PUT is sent again (idempotent).
          { fault: 'reset-after', method: 'PUT', after: 2, times: 3 },
          // Cut object bodies (not LIST answers, which object_store does not resume).
          { fault: 'truncate', method: 'GET', path: /^\/[^?]*\/(packs|index|snapshots|keys|config)\b[^?]*$/, after: 1, times: 4 },
          // And at random, throughout.
          { fault: 'status', status: 503, code: 'SlowDown', rate: 0.1 },
          { fault: 'status', status: 500, code: 'InternalError', rate: 0.1 },
          { fault: 'status', status: 429, code: 'SlowDown', rate: 0.1 },
          { fault: 'truncate', method: 'GET', path: /^\/[^?]*\/(packs|index|snapshots|keys|config)\b[^?]*$/, rate: 0.2 },
        ],
        { maxPerRequest: 2 },
      );
      const init = await cli(['init', '--json']);
      assert.equal(init.status, 0, init.why);
      const b = okSummary(await cli(['backup', src, '--json']));
      const target = path.join(work, 'restore-1');
      const r = okSummary(await cli(['restore', 'latest', target, '--json']));
      assert.equal(r.snapshot, b.snapshot);
      assertSameManifest(manifest(path.join(target, 'src')), manifest(src));
      removeTree(target);
      const c = await cli(['check', '--read-data', '--json']);
      assert.equal(c.status, 0, c.why);
      assert.equal(c.lines[0].ok, true, c.why);
      const seen = proxy.take();
      proxy.set([]);
      for (const kind of ['status 503', 'status 500', 'status 429', 'reset', 'reset-after', 'stall', 'truncate']) {
        assert.ok(seen.faults[kind] > 0, `${kind} was injected: ${JSON.stringify(seen.faults)}`);
      }
      assert.deepEqual(await s3.multipartUploads(BUCKET), [], 'no multipart upload left behind');
      if (process.env.SHMPIPE_E2E_VERBOSE) console.log(`      ${seen.requests} requests, faults: ${JSON.stringify(seen.faults)}`);
    });

    it('503 SlowDown on every pack upload: SHMPIPE_E_STORE, no snapshot, no object or upload left; check passes; the next backup completes', async function () {
      // New data, so that the backup has packs to upload.
      fs.mkdirSync(path.join(src, 'new'));
      writeRandom(path.join(src, 'new', 'data.bin'), 20 * MiB + 1, 'faults-new');
      const before = await repoKeys();
      assert.ok(before.length > 0);
      proxy.set([{ fault: 'status', status: 503, code: 'SlowDown', method: 'PUT', path: /\/packs\// }]);
      const r = await cli(['backup', src, '--json']);
      const seen = proxy.take();
      proxy.set([]);
      if (process.env.SHMPIPE_E2E_VERBOSE) console.log(`      backup: exit ${r.status}: ${r.stderr.trim()}`);
      assert.equal(r.status, 1, r.why);
      assert.equal(r.summary, undefined, 'no summary: nothing committed');
      assert.match(r.stderr, /SHMPIPE_E_STORE/, r.why);
      assert.match(r.stderr, /503/, `the status is named: ${r.why}`);
      assert.match(r.stderr, /\(transient\)/, `classified as transient (worth trying again later): ${r.why}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `a message, not a stack trace: ${r.why}`);
      assert.ok(seen.faults['status 503'] >= RETRIES + 1, `every attempt of a pack upload was refused: ${JSON.stringify(seen.faults)}`);
      assert.deepEqual(await s3.multipartUploads(BUCKET), [], 'no multipart upload left behind');
      assert.deepEqual(await repoKeys(), before, 'no object added: no pack, no index, no snapshot, no lock');

      const c = await cli(['check', '--read-data', '--json']);
      assert.equal(c.status, 0, c.why);
      assert.equal(c.lines[0].ok, true, c.why);
      assert.equal(c.lines[0].snapshots, 1);
      const b = okSummary(await cli(['backup', src, '--json']));
      assert.equal(b.files_new, 1, 'the new file');
      const target = path.join(work, 'restore-2');
      okSummary(await cli(['restore', 'latest', target, '--json']));
      assertSameManifest(manifest(path.join(target, 'src')), manifest(src));
      removeTree(target);
    });

    it('file data bodies cut short every time: restore exits 3 naming those files, restores the rest exactly, no partial file; all of it once the faults stop', async function () {
      // File data, not the trees: only reads of 256 KiB and more.
      proxy.set([{ fault: 'truncate', method: 'GET', path: /\/packs\//, minBytes: 256 * 1024 }]);
      const target = path.join(work, 'restore-3');
      const r = await cli(['restore', 'latest', target, '--json']);
      const seen = proxy.take();
      proxy.set([]);
      if (process.env.SHMPIPE_E2E_VERBOSE) console.log(`      restore: exit ${r.status}: ${r.stderr.trim().slice(0, 2000)}\n${JSON.stringify(r.lines?.filter?.((l) => l.type !== 'progress')).slice(0, 2000)}`);
      assert.notEqual(r.status, 0, r.why);
      assert.ok(seen.faults.truncate > RETRIES, `bodies were cut: ${JSON.stringify(seen.faults)}`);
      // Exit 3: the files whose data could not be read are named, and are not there (not even
      // cut short); every other file, directory and link is restored exactly.
      assert.equal(r.status, 3, r.why);
      const failed = r.lines.filter((l) => l.type === 'error');
      assert.ok(failed.length > 0, r.why);
      for (const f of failed) assert.equal(f.code, 'SHMPIPE_E_STORE', JSON.stringify(f));
      assert.equal(r.summary.failed, failed.length);
      const lost = new Set(failed.map((f) => f.path.slice('src/'.length)));
      for (const p of lost) assert.equal(fs.existsSync(path.join(target, 'src', p)), false, `no partial ${p}`);
      assertSameManifest(manifest(path.join(target, 'src')), without(manifest(src), (k) => lost.has(k)));
      removeTree(target);

      const again = path.join(work, 'restore-4');
      okSummary(await cli(['restore', 'latest', again, '--json']));
      assertSameManifest(manifest(path.join(again, 'src')), manifest(src));
      removeTree(again);
      const c = await cli(['check', '--read-data', '--json']);
      assert.equal(c.status, 0, c.why);
    });
  });

  describe('S3 faults: the store unreachable mid-upload, then back', function () {
    this.timeout(120_000);
    let s3;
    let proxy;
    let sidecar;
    let client;
    const prefix = 'agent-down';
    before(async function () {
      s3 = await startS3();
      await s3.createBucket(BUCKET);
      proxy = await startFaultProxy({ host: '127.0.0.1', port: s3.port });
      const env = s3Env({ endpoint: proxy.endpoint }, BUCKET, prefix, {
        SHMPIPE_PART_SIZE: String(6 * MiB),
        SHMPIPE_STORE_RETRIES: '2',
        SHMPIPE_STORE_RETRY_BACKOFF_MS: '50',
        SHMPIPE_STORE_RETRY_TIMEOUT_S: '2',
      });
      sidecar = await startSidecar({ env });
      client = await require(bundle).connect({ socketPath: sidecar.socketPath, clientName: 's3-down' });
    });
    after(async function () {
      await client?.close();
      await sidecar?.stop();
      await proxy?.close();
      await s3?.stop();
    });

    it('SHMPIPE_E_STORE; nothing visible under the key (moto kept its state); the same upload succeeds once the store is back', async function () {
      const file = path.join(sidecar.dir, 'upload.bin');
      const size = 40 * MiB + 5;
      const digest = await makeFile(file, size);
      const key = 'down/mid-upload';
      const full = `${prefix}/${key}`;
      const cut = (async () => {
        const started = await waitFor(async () => (await s3.multipartUploads(BUCKET)).includes(full), 20_000, 5);
        assert.ok(started, 'the multipart upload started');
        await proxy.down();
      })();
      const unavailable = 'shmpipe_store_errors_total{kind="unavailable"}';
      const failed = 'shmpipe_store_errors_total{kind="failed"}';
      const before = { unavailable: await metric(sidecar.pid, unavailable), failed: await metric(sidecar.pid, failed) };
      await assert.rejects(client.putFile(file, key), { code: 'SHMPIPE_E_STORE' });
      await cut;
      // The sidecar classified it (by type: a refused connection) as the store being unavailable.
      assert.ok((await metric(sidecar.pid, unavailable)) > before.unavailable, 'counted as unavailable');
      assert.equal(await metric(sidecar.pid, failed), before.failed, 'not as a failure that would fail again');
      const left = await s3.multipartUploads(BUCKET);
      assert.deepEqual(left, [full], 'the upload the sidecar could not abort while the store was down (README: AbortIncompleteMultipartUpload lifecycle rule)');
      assert.ok(!(await s3.keys(BUCKET)).includes(full), 'no object under the key');

      await proxy.up();
      await assert.rejects(client.stat(key), { code: 'SHMPIPE_E_NOT_FOUND' }, 'no partial object');
      const r = await client.putFile(file, key);
      assert.equal(r.size, size);
      const out = path.join(sidecar.dir, 'download.bin');
      assert.deepEqual(await client.getFile(key, out), { size, verified: true });
      assert.equal(await sha256File(out), digest);
      fs.rmSync(file);
      fs.rmSync(out);
    });
  });
}
