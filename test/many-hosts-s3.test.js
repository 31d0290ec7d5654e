// Many hosts, one repository on the S3-protocol server (moto): two hosts (their own private
// sidecars, host names and source trees) back up round after round at the same time, while a
// third process keeps running `forget --keep-last 2 --prune`. Locks decide who runs (restic's
// rule: prune is exclusive, backups shared): a refused run says "locked" and is retried, as a
// scheduler would. In the end every remaining snapshot restores bit-exact (each compared with
// the tree as it was when that snapshot was taken), `check --read-data` passes and nothing
// unindexed is left.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { s3Available, s3Required, startS3, s3Env } = require('./helpers/s3');
const { cliEnv, runCli } = require('./helpers/cli');
const { writeRandom, sha256File, KiB, MiB } = require('./helpers/tree');

const BUCKET = 'shmpipe-many-hosts';
const PREFIX = 'shared';
const ROUNDS = 4;

/** name → sha256 of every file directly in `dir`. */
function sums(dir) {
  return Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .map((n) => [n, sha256File(path.join(dir, n))]),
  );
}

const isLocked = (r) => r.status === 1 && /is locked by another process/.test(r.stderr);

if (!s3Available()) {
  if (s3Required()) {
    it('many hosts on S3 — SHMPIPE_REQUIRE_S3=1 but moto is not installed', () => {
      assert.fail('run `npm run setup:s3` (scripts/install-s3-server.sh) to install moto into .venv-s3/');
    });
  } else {
    describe('many hosts, one S3 repository', () => {
      it('SKIPPED: moto is not installed (npm run setup:s3)', function () {
        this.skip();
      });
    });
  }
} else {
  describe('many hosts, one S3 repository (moto)', function () {
    this.timeout(900_000);
    let s3;
    let work;
    let s3vars;
    const url = `s3://${BUCKET}/${PREFIX}`;
    /** Runs the CLI as `host` (its own HOSTNAME: lock holders are named by it). */
    const cli = (host, args, o = {}) => runCli([args[0], '--repo', url, ...args.slice(1)], { env: cliEnv(path.join(work, host), { SHMPIPE_PASSWORD: 'many hosts', HOSTNAME: host, ...s3vars }), ...o });
    /** Runs until it is not refused for a lock; returns the result and how often it was refused. */
    async function retryLocked(host, args, o = {}) {
      for (let refused = 0; ; refused++) {
        const r = await cli(host, args, o);
        if (!isLocked(r)) return { r, refused };
        if (refused > 500) assert.fail(`${host} was refused 500 times: ${r.why}`);
      }
    }

    before(async function () {
      this.timeout(120_000);
      s3 = await startS3();
      await s3.createBucket(BUCKET);
      work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-many-hosts-'));
      const { SHMPIPE_STORE: _, ...vars } = s3Env(s3, BUCKET, PREFIX);
      s3vars = vars;
      const init = await cli('admin', ['init']);
      assert.equal(init.status, 0, init.why);
    });
    after(async function () {
      await s3?.stop();
      if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it('two hosts back up while a third runs forget --prune; every remaining snapshot restores', async function () {
      /** snapshot id → { host, files (name → sha256) } */
      const taken = new Map();
      let backupsDone = 0;
      let refusedBackups = 0;
      // The pruner starts once a backup is under way (holds its lock): uploads are throttled
      // so each backup lasts seconds, and the three really overlap.
      let running;
      const aBackupRuns = new Promise((resolve) => {
        running = resolve;
      });
      const onLine = (line) => {
        if (line.includes('"type":"progress"')) running();
      };
      async function host(name, seed) {
        const src = path.join(work, name, 'src');
        fs.mkdirSync(src, { recursive: true });
        for (let round = 0; round < ROUNDS; round++) {
          // A changed file, a new file each round, and the earlier ones kept (shared data).
          writeRandom(path.join(src, 'data'), MiB, `${seed}-${round}`);
          writeRandom(path.join(src, `round-${round}`), 256 * KiB + round, `${seed}-r${round}`);
          const { r, refused } = await retryLocked(name, ['backup', src, '--host', name, '--limit-upload', '512', '--json'], { onLine });
          refusedBackups += refused;
          assert.equal(r.status, 0, r.why);
          taken.set(r.summary.snapshot, { host: name, files: sums(src) });
        }
        backupsDone++;
      }
      let prunes = 0;
      let refusedPrunes = 0;
      let removed = 0;
      async function pruner() {
        await aBackupRuns;
        // Until both hosts are done, and at least twice.
        while (backupsDone < 2 || prunes < 2) {
          const { r, refused } = await retryLocked('admin', ['forget', '--keep-last', '2', '--prune', '--json']);
          refusedPrunes += refused;
          assert.equal(r.status, 0, r.why);
          const [groups, summary] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
          assert.equal(summary.message_type, 'summary');
          removed += groups.reduce((n, g) => n + (g.remove?.length ?? 0), 0);
          prunes++;
        }
      }
      await Promise.all([host('alpha', 1), host('beta', 2), pruner()]);
      // Whatever ran when, the last forget left the two newest of each host.
      const final = await cli('admin', ['forget', '--keep-last', '2', '--prune', '--json']);
      assert.equal(final.status, 0, final.why);
      const list = JSON.parse((await cli('admin', ['snapshots', '--json'])).stdout);
      assert.equal(list.length, 4, JSON.stringify(list));
      assert.deepEqual(list.map((s) => s.host).sort(), ['alpha', 'alpha', 'beta', 'beta']);
      const finalRemoved = JSON.parse(final.stdout.split('\n')[0]).reduce((n, g) => n + (g.remove?.length ?? 0), 0);
      assert.equal(removed + finalRemoved, 2 * ROUNDS - 4, 'each snapshot beyond the two newest per host was removed once');
      for (const s of list) {
        const want = taken.get(s.id);
        assert.ok(want, `snapshot ${s.id} is one the hosts made`);
        const target = path.join(work, 'restore', s.id);
        const r = await cli('admin', ['restore', s.id, target]);
        assert.equal(r.status, 0, r.why);
        assert.deepEqual(sums(path.join(target, 'src')), want.files, `snapshot ${s.id} of ${want.host} restores bit-exact`);
      }
      const check = await cli('admin', ['check', '--read-data', '--json']);
      assert.equal(check.status, 0, check.why);
      const report = JSON.parse(check.stdout);
      assert.deepEqual(report.infos, [], 'nothing unindexed left');
      // For the record (the mocha output): how the three got along.
      console.log(`      ${prunes} forget --prune runs (refused ${refusedPrunes}×), backups refused ${refusedBackups}×`);
    });
  });
}
