// The job ops (SPEC §7.3 JOB_START / JOB_NEXT) end to end: the real sidecar binary over a
// memory:// repository, driven through ts-lib's jobLines/runJob. The job machinery's own edge
// cases (paging, cancellation, failures after output) are tested in the sidecar
// (sidecar/src/jobs/tests.rs); here: the wire, the TS iteration, errors and cancellation.
'use strict';

const assert = require('node:assert/strict');
const B = require('../ts-lib/dist/backup.js');
const { connect } = require('../ts-lib/dist/index.js');
const { startSidecar } = require('./helpers/sidecar');

const { ops } = B;
const PASSWORD = 'jobs-test';

describe('jobs over the wire', function () {
  let sc;
  let client;
  let repo;
  const ids = [];

  before(async function () {
    // A small handle limit, so that handles leaked by cancelled jobs would soon run out (BUSY).
    sc = await startSidecar({ env: { SHMPIPE_STORE: 'memory://', SHMPIPE_MAX_IN_FLIGHT: '16' } });
    client = await connect({ socketPath: sc.socketPath });
    repo = await ops.repoInit(client, PASSWORD, { kdf_m_kib: 64, kdf_t: 1 });
    for (const host of ['h1', 'h2', 'h3']) {
      const b = await ops.backupBegin(client, repo, { host, paths: ['/data'] });
      ids.push((await ops.backupCommit(client, b)).id);
    }
  });

  after(async function () {
    await client?.close();
    await sc?.stop();
  });

  it('runs the snapshots job: one line per snapshot, oldest first', async function () {
    const lines = await ops.runJob(client, repo, { job: 'snapshots' });
    assert.deepEqual(lines.map((l) => l.id), ids);
    assert.deepEqual(lines.map((l) => l.host), ['h1', 'h2', 'h3']);
    assert.deepEqual(lines[0].paths, ['/data']);
  });

  it('refuses an unknown job with MALFORMED and names the jobs there are', async function () {
    await assert.rejects(ops.runJob(client, repo, { job: 'no-such-job' }), (e) => {
      assert.equal(e.code, 'SHMPIPE_E_MALFORMED');
      assert.match(e.message, /no-such-job/);
      assert.match(e.message, /snapshots/);
      return true;
    });
  });

  it('fails a job whose arguments it does not take, with the message', async function () {
    await assert.rejects(ops.runJob(client, repo, { job: 'snapshots', bogus: 1 }), (e) => {
      assert.equal(e.code, 'SHMPIPE_E_MALFORMED');
      assert.match(e.message, /bogus/);
      return true;
    });
  });

  it('cancels a job whose iteration stops early, and the session goes on', async function () {
    for await (const line of ops.jobLines(client, repo, { job: 'snapshots' })) {
      assert.equal(line.id, ids[0]);
      break;
    }
    // The handle was closed: 50 more early stops stay within the limit of 16 open handles.
    for (let i = 0; i < 50; i++) {
      for await (const _ of ops.jobLines(client, repo, { job: 'snapshots' })) break;
    }
    assert.equal((await ops.runJob(client, repo, { job: 'snapshots' })).length, 3);
  });

  it('refuses bad requests before any ring work', async function () {
    for (const bad of [null, {}, { job: '' }, { job: 7 }]) {
      await assert.rejects(ops.jobStart(client, repo, bad), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
    }
    await assert.rejects(ops.jobStart(client, 0, { job: 'snapshots' }), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
  });
});
