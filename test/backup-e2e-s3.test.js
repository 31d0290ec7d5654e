// The backup round trip of backup-e2e.test.js against the S3-protocol server (moto, through
// test/helpers/s3.js): `shmpipe init/backup/restore/check --repo s3://bucket/prefix`, the CLI's
// private sidecar reading the endpoint and credentials from SHMPIPE_S3_* / AWS_* (as a user
// would export them). Bit-exact and metadata-exact restore, an unchanged second backup that is
// recorded by reference, `check --read-data`, and the repository's objects under the prefix.
//
// Without moto these tests are skipped, unless SHMPIPE_REQUIRE_S3=1 (`npm run test:js` sets it),
// which makes them fail.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { s3Available, s3Required, startS3, s3Env } = require('./helpers/s3');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');
const { makeTree, manifest, assertSameManifest, removeTree, MiB } = require('./helpers/tree');

const BUCKET = 'shmpipe-backup-e2e';
const PREFIX = 'repos/host-1';

if (!s3Available()) {
  if (s3Required()) {
    it('backup e2e: S3 (moto) — SHMPIPE_REQUIRE_S3=1 but moto is not installed', () => {
      assert.fail('run `npm run setup:s3` (scripts/install-s3-server.sh) to install moto into .venv-s3/');
    });
  } else {
    describe('backup e2e: S3 (moto)', () => {
      it('SKIPPED: moto is not installed (npm run setup:s3)', function () {
        this.skip();
      });
    });
  }
} else {
  describe('backup e2e: round trip against the S3-protocol server (moto)', function () {
    this.timeout(240_000);
    let s3;
    let work;
    let src;
    let env;
    let tree;
    const url = `s3://${BUCKET}/${PREFIX}`;
    const cli = (args) => runCli([...args, '--repo', url], { env });

    before(async function () {
      this.timeout(120_000);
      s3 = await startS3();
      await s3.createBucket(BUCKET);
      work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-s3-'));
      src = path.join(work, 'src');
      // The store settings a user exports; SHMPIPE_STORE itself comes from --repo.
      const { SHMPIPE_STORE: _, ...s3vars } = s3Env(s3, BUCKET, PREFIX);
      env = cliEnv(work, { SHMPIPE_PASSWORD: 'e2e over S3', ...s3vars });
      // The generated tree with a 24 MiB file (several multipart parts, more than one pack).
      tree = makeTree(src, { bigBytes: 24 * MiB + 5 });
    });

    after(async function () {
      await s3?.stop();
      if (work) removeTree(work);
    });

    let first;
    it('init and backup write the repository into the bucket under the prefix', async function () {
      const init = await cli(['init', '--json']);
      assert.equal(init.status, 0, init.why);
      assert.equal(init.lines[0].repository, url);
      const r = await cli(['backup', src, '--json']);
      const s = okSummary(r);
      first = s;
      assert.equal(s.files_new, tree.fileCount);
      assert.equal(s.dirs, tree.dirCount);
      assert.equal(s.others, tree.symlinkCount);
      assert.equal(s.bytes_read, tree.totalBytes);
      assert.equal(s.unreadable, 0);
      const keys = await s3.keys(BUCKET);
      assert.ok(keys.length > 0);
      assert.deepEqual(
        keys.filter((k) => !k.startsWith(`${PREFIX}/`)),
        [],
        'every object under the prefix',
      );
      const kinds = new Set(keys.map((k) => k.slice(PREFIX.length + 1).split('/')[0]));
      for (const k of ['config', 'packs', 'index', 'snapshots']) assert.ok(kinds.has(k), `${k} in ${[...kinds].join(', ')}`);
      assert.equal(keys.filter((k) => k.startsWith(`${PREFIX}/snapshots/`)).length, 1);
      assert.deepEqual(await s3.multipartUploads(BUCKET), [], 'no unfinished multipart uploads');
    });

    it('restore latest from S3 is bit-exact and metadata-exact', async function () {
      assert.ok(first, 'needs the backup');
      const target = path.join(work, 'restore');
      const r = await cli(['restore', 'latest', target, '--json']);
      const s = okSummary(r);
      assert.equal(s.snapshot, first.snapshot);
      assert.equal(s.files, tree.fileCount);
      assert.equal(s.bytes, tree.totalBytes);
      assert.equal(s.failed, 0);
      assertSameManifest(manifest(path.join(target, 'src')), tree.manifest);
      removeTree(target);
    });

    it('a second backup records every file by reference; check --read-data passes', async function () {
      const r = await cli(['backup', src, '--json']);
      const s = okSummary(r);
      assert.equal(s.parent, first.snapshot);
      assert.equal(s.files_unchanged, tree.fileCount);
      assert.equal(s.bytes_read, 0);
      assert.ok(s.bytes_added_plain < 64 * 1024, JSON.stringify(s));
      const c = await cli(['check', '--read-data', '--json']);
      assert.equal(c.status, 0, c.why);
      assert.equal(c.lines[0].ok, true);
      assert.equal(c.lines[0].snapshots, 2);
      assert.ok(c.lines[0].bytes_read >= first.bytes_added - 64 * 1024, JSON.stringify(c.lines[0]));
      const st = await cli(['stats', '--json']);
      assert.equal(st.status, 0, st.why);
      const doc = JSON.parse(st.stdout);
      assert.equal(doc.snapshots, 2);
      assert.equal(doc.repository, url);
    });

    it('a wrong password against S3: exit 1, a clear message', async function () {
      const r = await runCli(['snapshots', '--repo', url], { env: { ...env, SHMPIPE_PASSWORD: 'wrong' } });
      assert.equal(r.status, 1, r.why);
      assert.match(r.stderr, /wrong password/i);
    });
  });
}
