// Browsing snapshots through the real CLI and sidecar, as a restic user would: ls (all, a
// directory, --recursive, --long, --json), find (patterns, -i, --snapshot, --oldest/--newest,
// --json), and list (the store's objects; `ls` lists snapshots now).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli } = require('./helpers/cli');

function write(root, rel, data = rel) {
  const f = path.join(root, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, data);
}

describe('browsing: ls, find, list', function () {
  this.timeout(300_000);
  let work;
  let env;
  let repo;
  let src;
  let first;
  let second;
  const cli = (args, o = {}) => runCli([args[0], '--repo', repo, ...args.slice(1)], { env, ...o });
  const ok = async (args, o) => {
    const r = await cli(args, o);
    assert.equal(r.status, 0, r.why);
    return r;
  };
  const out = async (...args) => (await ok(args)).stdout.split('\n').filter((l) => l !== '');

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-browse-'));
    env = cliEnv(work, { SHMPIPE_PASSWORD: 'browse-test' });
    repo = path.join(work, 'repo');
    src = path.join(work, 'src');
    for (const f of ['a.txt', 'docs/readme.md', 'docs/sub/deep.txt', 'docs/Notes.TXT']) write(src, f);
    fs.mkdirSync(path.join(src, 'empty'));
    fs.symlinkSync('a.txt', path.join(src, 'link'));
    fs.chmodSync(path.join(src, 'a.txt'), 0o640);
    fs.utimesSync(path.join(src, 'docs/readme.md'), new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'));
    await ok(['init']);
    first = (await ok(['backup', src, '--json'])).summary.snapshot;
    write(src, 'docs/new.txt');
    second = (await ok(['backup', src, '--json'])).summary.snapshot;
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('ls: everything, one directory, --recursive, --long', async function () {
    const all = await out('ls', first);
    assert.match(all[0], new RegExp(`^snapshot ${first.slice(0, 8)} of \\[${src}\\] at `));
    assert.deepEqual(all.slice(1).sort(), ['/src', '/src/a.txt', '/src/docs', '/src/docs/Notes.TXT', '/src/docs/readme.md', '/src/docs/sub', '/src/docs/sub/deep.txt', '/src/empty', '/src/link']);
    assert.deepEqual((await out('ls', first, '/src/docs')).slice(1).sort(), ['/src/docs', '/src/docs/Notes.TXT', '/src/docs/readme.md', '/src/docs/sub']);
    assert.deepEqual((await out('ls', first, 'src/docs/', '--recursive')).slice(1).sort(), ['/src/docs', '/src/docs/Notes.TXT', '/src/docs/readme.md', '/src/docs/sub', '/src/docs/sub/deep.txt']);
    assert.deepEqual((await out('ls', 'latest', '/src/docs')).slice(1).sort(), ['/src/docs', '/src/docs/Notes.TXT', '/src/docs/new.txt', '/src/docs/readme.md', '/src/docs/sub']);
    const long = await out('ls', first, '/src', '-l');
    assert.ok(long.some((l) => /^-rw-r----- +\d+ +\d+ +5 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \/src\/a\.txt$/.test(l)), long.join('\n'));
    assert.ok(long.some((l) => /^lrwxrwxrwx .* \/src\/link -> a\.txt$/.test(l)), long.join('\n'));
    assert.ok(long.some((l) => /^drwx.* \/src\/empty$/.test(l)), long.join('\n'));
    assert.equal((await cli(['ls'])).status, 2, 'a snapshot is required');
    assert.equal((await cli(['ls', 'ffffffff'])).status, 1, 'an unknown snapshot is an error');
  });

  it('ls --json: the snapshot line, then restic-style nodes', async function () {
    const r = await ok(['ls', first, '/src/docs', '--recursive', '--json']);
    const [snap, ...nodes] = r.lines;
    assert.equal(snap.message_type, 'snapshot');
    assert.equal(snap.id, first);
    assert.deepEqual(snap.paths, [src]);
    const readme = nodes.find((n) => n.path === '/src/docs/readme.md');
    assert.deepEqual(
      { name: readme.name, type: readme.type, size: readme.size, mtime: readme.mtime, message_type: readme.message_type, struct_type: readme.struct_type },
      { name: 'readme.md', type: 'file', size: 14, mtime: '2020-01-02T03:04:05.000000000Z', message_type: 'node', struct_type: 'node' },
    );
    assert.equal(readme.permissions, '-rw-r--r--');
    assert.equal(readme.mode & 0o777, 0o644);
    assert.equal(nodes.find((n) => n.path === '/src/docs/sub').type, 'dir');
    assert.equal(nodes.length, 5);
  });

  it('find: patterns across snapshots (newest first), -i, --snapshot, --oldest/--newest, --json', async function () {
    const text = await out('find', '*.txt');
    assert.match(text[0], new RegExp(`^Found matching entries in snapshot ${second.slice(0, 8)} from \\d{4}-`));
    assert.deepEqual(text.slice(1, 4), ['/src/a.txt', '/src/docs/new.txt', '/src/docs/sub/deep.txt']);
    assert.match(text[4], new RegExp(`^Found matching entries in snapshot ${first.slice(0, 8)} from `));
    assert.deepEqual(text.slice(5), ['/src/a.txt', '/src/docs/sub/deep.txt']);
    const ci = await ok(['find', '-i', '*.txt', '--snapshot', first, '--json']);
    const doc = JSON.parse(ci.stdout);
    assert.equal(doc.length, 1);
    assert.equal(doc[0].snapshot, first);
    assert.deepEqual(doc[0].matches.map((m) => m.path).sort(), ['/src/a.txt', '/src/docs/Notes.TXT', '/src/docs/sub/deep.txt']);
    assert.equal(doc[0].hits, 3);
    const anchored = await out('find', '/src/docs/*', '--snapshot', 'latest', '--reverse');
    assert.deepEqual(anchored.slice(1).sort(), ['/src/docs/Notes.TXT', '/src/docs/new.txt', '/src/docs/readme.md', '/src/docs/sub', '/src/docs/sub/deep.txt']);
    const old = await out('find', '*', '--newest', '2021-01-01', '--snapshot', first);
    assert.deepEqual(old.slice(1), ['/src/docs/readme.md'], 'only the entry modified before 2021');
    const none = await ok(['find', 'nothing-like-this', '--json']);
    assert.deepEqual(JSON.parse(none.stdout), []);
    assert.equal((await cli(['find', '[bad'])).status, 2);
    assert.equal((await cli(['find', 'x', '--oldest', 'yesterday-ish'])).status, 2);
  });

  it('list: the store objects of the repository (restic list), by prefix', async function () {
    const r = await runCli(['list', 'snapshots', '--store', `file://${repo}`], { env });
    assert.equal(r.status, 0, r.why);
    const snaps = r.stdout.split('\n').filter((l) => l !== '');
    assert.equal(snaps.length, 2);
    for (const l of snaps) assert.match(l, /snapshots\/[0-9a-f]{64}$/);
  });
});
