// Choosing snapshots as restic does, through the real CLI: --host, --tag (a,b = both; repeated
// = either), --path (all of them), `latest` = the newest snapshot passing the filters, ids and
// prefixes; `snapshots --latest N` per host and paths, and --group-by. Two hosts, two paths.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli } = require('./helpers/cli');

describe('snapshot filters and latest (two hosts, two paths)', function () {
  this.timeout(300_000);
  let work;
  let env;
  let repo;
  const ids = {};
  const cli = (args, o = {}) => runCli([args[0], '--repo', repo, ...args.slice(1)], { env, ...o });
  const listed = async (...args) => {
    const r = await cli(['snapshots', '--json', ...args]);
    assert.equal(r.status, 0, r.why);
    return JSON.parse(r.stdout);
  };
  const names = (list) => list.map((s) => Object.keys(ids).find((k) => ids[k] === s.id));

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-filter-'));
    env = cliEnv(work, { SHMPIPE_PASSWORD: 'filter-test' });
    repo = path.join(work, 'repo');
    assert.equal((await cli(['init'])).status, 0);
    for (const d of ['one', 'two']) fs.mkdirSync(path.join(work, d));
    // name, host, dir, tags: in this order, so a1 is the oldest.
    const plan = [
      ['a1', 'alpha', 'one', ['daily']],
      ['b1', 'beta', 'one', []],
      ['a2', 'alpha', 'one', ['daily', 'monthly']],
      ['b2', 'beta', 'two', ['weekly']],
      ['a3', 'alpha', 'two', []],
      ['b3', 'beta', 'one', ['daily']],
    ];
    for (const [name, host, dir, tags] of plan) {
      fs.writeFileSync(path.join(work, dir, 'file'), name);
      const r = await cli(['backup', path.join(work, dir), '--host', host, ...tags.flatMap((t) => ['--tag', t]), '--json']);
      assert.equal(r.status, 0, r.why);
      ids[name] = r.summary.snapshot;
    }
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('--host, --tag, --path select as restic does', async function () {
    const one = path.join(work, 'one');
    const two = path.join(work, 'two');
    assert.deepEqual(names(await listed()), ['a1', 'b1', 'a2', 'b2', 'a3', 'b3']);
    assert.deepEqual(names(await listed('--host', 'alpha')), ['a1', 'a2', 'a3']);
    assert.deepEqual(names(await listed('-H', 'alpha', '--host', 'beta')), ['a1', 'b1', 'a2', 'b2', 'a3', 'b3']);
    assert.deepEqual(names(await listed('--tag', 'daily')), ['a1', 'a2', 'b3']);
    assert.deepEqual(names(await listed('--tag', 'daily,monthly')), ['a2']);
    assert.deepEqual(names(await listed('--tag', 'weekly', '--tag', 'monthly')), ['a2', 'b2']);
    assert.deepEqual(names(await listed('--path', two)), ['b2', 'a3']);
    assert.deepEqual(names(await listed('--path', one, '--host', 'beta', '--tag', 'daily')), ['b3']);
    assert.deepEqual(names(await listed('--path', one, '--path', two)), [], 'a snapshot must have every --path');
    assert.deepEqual(names(await listed('--host', 'gamma')), []);
    // Arguments: ids, prefixes, latest (with the filters).
    assert.deepEqual(names(await listed(ids.b2.slice(0, 8), ids.a1)), ['a1', 'b2']);
    assert.deepEqual(names(await listed('latest', '--host', 'alpha')), ['a3']);
    const s = (await listed(ids.a2))[0];
    assert.equal(s.short_id, ids.a2.slice(0, 8));
    assert.match(s.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
  });

  it('snapshots --latest N (per host and paths) and --group-by', async function () {
    assert.deepEqual(names(await listed('--latest', '1')), ['a2', 'b2', 'a3', 'b3']);
    assert.deepEqual(names(await listed('--latest', '2', '--host', 'beta')), ['b1', 'b2', 'b3']);
    const byHost = await listed('--group-by', 'host');
    assert.deepEqual(byHost.map((g) => [g.group_key, names(g.snapshots)]), [
      [{ hostname: 'alpha', paths: null, tags: null }, ['a1', 'a2', 'a3']],
      [{ hostname: 'beta', paths: null, tags: null }, ['b1', 'b2', 'b3']],
    ]);
    const latestPerHost = await listed('--group-by', 'host', '--latest', '1');
    assert.deepEqual(latestPerHost.map((g) => names(g.snapshots)), [['a3'], ['b3']]);
    const byTags = await listed('--group-by', 'tags', '--tag', 'daily');
    assert.deepEqual(byTags.map((g) => [g.group_key.tags, names(g.snapshots)]), [[['daily'], ['a1', 'b3']], [['daily', 'monthly'], ['a2']]]);
    const text = await cli(['snapshots', '--group-by', 'host,paths']);
    assert.equal(text.status, 0, text.why);
    assert.match(text.stdout, /^snapshots for \(host \[alpha\], paths \[.*\/one\]\):$/m);
    assert.equal((await cli(['snapshots', '--group-by', 'user'])).status, 2);
    assert.equal((await cli(['snapshots', '--latest', '0'])).status, 2);
  });

  it('restore latest honours the filters; no match is a clear error', async function () {
    const restoreFile = async (...args) => {
      const target = fs.mkdtempSync(path.join(work, 'restore-'));
      const r = await cli(['restore', ...args.slice(0, 1), target, ...args.slice(1)]);
      assert.equal(r.status, 0, r.why);
      const dir = fs.readdirSync(target)[0];
      return fs.readFileSync(path.join(target, dir, 'file'), 'utf8');
    };
    assert.equal(await restoreFile('latest'), 'b3');
    assert.equal(await restoreFile('latest', '--host', 'alpha'), 'a3');
    assert.equal(await restoreFile('latest', '--host', 'beta', '--path', path.join(work, 'two')), 'b2');
    assert.equal(await restoreFile('latest', '--tag', 'monthly'), 'a2');
    assert.equal(await restoreFile(ids.a1.slice(0, 10)), 'a1');
    const none = await cli(['restore', 'latest', path.join(work, 'x'), '--host', 'gamma']);
    assert.equal(none.status, 1, none.why);
    assert.match(none.stderr, /no snapshot matching host gamma in /);
    const filtered = await cli(['restore', ids.a1.slice(0, 8), path.join(work, 'x'), '--host', 'beta']);
    assert.equal(filtered.status, 1, 'an id that does not pass the filters is not taken');
  });
});
