// Browsing snapshots through the real CLI and sidecar, as a restic user would: ls (all, a
// directory, --recursive, --long, --json), find (patterns, -i, --snapshot, --oldest/--newest,
// --json), and list (the store's objects; `ls` lists snapshots now).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');
const { cliEnv, runCli } = require('./helpers/cli');

/** Files, dirs and symlinks under `root`: relative path → type, mode bits, mtime (s), bytes' hash or target. */
function manifest(root) {
  const out = {};
  (function walk(rel) {
    for (const n of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      const st = fs.lstatSync(path.join(root, r));
      const m = { mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isSymbolicLink()) m.link = fs.readlinkSync(path.join(root, r));
      else if (st.isFile()) m.sha = crypto.createHash('sha256').update(fs.readFileSync(path.join(root, r))).digest('hex');
      else m.dir = true;
      out[r] = m;
      if (st.isDirectory()) walk(r);
    }
  })('');
  return out;
}

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

  it("SNAPSHOT:SUBFOLDER (restic's syntax) for ls, restore, dump and diff", async function () {
    const ls = await out('ls', `${first}:/src/docs`);
    assert.deepEqual(ls.slice(1).sort(), ['/Notes.TXT', '/readme.md', '/sub', '/sub/deep.txt'], 'paths relative to the subfolder');
    const into = path.join(work, 'sub-restore');
    await ok(['restore', 'latest:/src/docs', '--target', into]);
    assert.deepEqual(manifest(into), manifest(path.join(src, 'docs')), 'the subfolder\'s contents land at the top of the target');
    assert.equal(fs.existsSync(path.join(into, 'src')), false);
    assert.equal((await ok(['dump', `${first}:src/docs`, 'sub/deep.txt'])).stdout, 'docs/sub/deep.txt');
    const diff = await out('diff', `${first}:/src/docs`, `${second}:/src/docs`);
    assert.ok(diff.includes('+    /new.txt'), diff.join('\n'));
    assert.ok(!diff.some((l) => l.includes('/src/')), 'no path outside the subfolders');
    const missing = await cli(['restore', `${first}:/src/nope`, '--target', path.join(work, 'nope')]);
    assert.equal(missing.status, 1, missing.why);
    assert.match(missing.stderr, /there is no \/src\/nope in the snapshot/);
    const file = await cli(['ls', `${first}:/src/a.txt`]);
    assert.equal(file.status, 1, file.why);
    assert.match(file.stderr, /\/src\/a\.txt in the snapshot is a file, not a directory/);
    const up = await cli(['ls', `${first}:/src/../etc`]);
    assert.notEqual(up.status, 0);
    assert.match(up.stderr, /cannot contain '\.\.'/);
  });

  describe('dump', function () {
    let tree2;
    let snap;
    let big;
    before(async function () {
      tree2 = path.join(work, 'tree2');
      big = crypto.randomBytes(9 * 1024 * 1024 + 7);
      write(tree2, 'big.bin', big);
      write(tree2, 'name with spaces é.txt', 'unicode');
      write(tree2, 'sub/deeper/x', 'x');
      fs.mkdirSync(path.join(tree2, 'empty'));
      fs.symlinkSync('sub/deeper/x', path.join(tree2, 'link'));
      fs.chmodSync(path.join(tree2, 'sub/deeper/x'), 0o755);
      for (const p of ['sub/deeper/x', 'big.bin', 'sub/deeper', 'sub', 'empty', '']) fs.utimesSync(path.join(tree2, p), new Date('2022-03-04T05:06:07Z'), new Date('2022-03-04T05:06:07Z'));
      snap = (await ok(['backup', tree2, '--json'])).summary.snapshot;
    });

    it('a file: its bytes on stdout, or into --target', async function () {
      const r = spawnSync(process.execPath, [require('./helpers/cli').CLI, 'dump', '--repo', repo, snap, '/tree2/big.bin'], { env, maxBuffer: 64 << 20 });
      assert.equal(r.status, 0, String(r.stderr));
      assert.ok(r.stdout.equals(big), 'the dumped bytes are the file');
      const t = path.join(work, 'dumped.txt');
      await ok(['dump', snap, 'tree2/name with spaces é.txt', '--target', t]);
      assert.equal(fs.readFileSync(t, 'utf8'), 'unicode');
      const missing = await cli(['dump', snap, '/tree2/nope']);
      assert.equal(missing.status, 1, missing.why);
      assert.match(missing.stderr, /there is no \/tree2\/nope in snapshot/);
    });

    it('a directory as tar: the system tar extracts the same tree', async function () {
      const archive = path.join(work, 'tree2.tar');
      await ok(['dump', snap, '/tree2', '--target', archive]);
      const into = fs.mkdtempSync(path.join(work, 'untar-'));
      const x = spawnSync('tar', ['-x', '-p', '-f', archive, '-C', into], { encoding: 'utf8' });
      assert.equal(x.status, 0, x.stderr);
      assert.deepEqual(manifest(path.join(into, 'tree2')), manifest(tree2));
      // The whole snapshot (/), through stdout into tar's stdin.
      const all = fs.mkdtempSync(path.join(work, 'untar-'));
      const piped = spawnSync('sh', ['-c', 'node "$1" dump --repo "$2" "$3" / | tar -x -p -C "$4"', 'sh', require('./helpers/cli').CLI, repo, snap, all], { env, encoding: 'utf8' });
      assert.equal(piped.status, 0, piped.stderr);
      assert.deepEqual(fs.readdirSync(all), ['tree2'], 'the snapshot has one root');
      assert.deepEqual(manifest(path.join(all, 'tree2')), manifest(tree2));
    });

    it('a directory as zip: unzip extracts the same bytes, modes and symlink', async function () {
      const archive = path.join(work, 'tree2.zip');
      await ok(['dump', snap, '/tree2/', '--archive', 'zip', '--target', archive]);
      if (spawnSync('sh', ['-c', 'command -v unzip']).status !== 0) return this.skip();
      const into = fs.mkdtempSync(path.join(work, 'unzip-'));
      // A UTF-8 locale: in the POSIX one, Debian's unzip renders é as #U00e9 in the central
      // directory's name only, warns that the local name differs, and exits 1.
      const x = spawnSync('unzip', ['-q', archive, '-d', into], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C.UTF-8' } });
      assert.equal(x.status, 0, x.stderr);
      const got = manifest(path.join(into, 'tree2'));
      const want = manifest(tree2);
      // zip keeps times in local DOS time, to 2 s; compare the rest.
      const strip = (m) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, { ...v, mtime: undefined }]));
      assert.deepEqual(strip(got), strip(want));
      assert.equal((await cli(['dump', snap, '/tree2', '--archive', 'rar'])).status, 2);
    });
  });

  it('list: the store objects of the repository (restic list), by prefix', async function () {
    const r = await runCli(['list', 'snapshots', '--store', `file://${repo}`], { env });
    assert.equal(r.status, 0, r.why);
    const snaps = r.stdout.split('\n').filter((l) => l !== '');
    assert.equal(snaps.length, 2);
    for (const l of snaps) assert.match(l, /snapshots\/[0-9a-f]{64}$/);
  });
});
