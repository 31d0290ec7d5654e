// The browsing verbs that read the repository through the sidecar's jobs, through the real
// CLI: diff (restic's markers, the counts and the blob summary), cat (objects decrypted, no
// secrets), tag (rewrites under a new id), stats --mode (restic's counting modes).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { CLI, cliEnv, runCli } = require('./helpers/cli');

function write(root, rel, data) {
  const f = path.join(root, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, data);
}

describe('browsing the repository: diff, cat, tag, stats', function () {
  this.timeout(300_000);
  let work;
  let env;
  let repo;
  let src;
  let one;
  let two;
  const content = {
    keep: 'kept the same\n',
    change1: 'first version of change\n',
    change2: 'second, longer version of change\n',
    remove: 'this file goes away\n',
    typeFile: 'a file that becomes a directory\n',
    rot1: 'original bytes 1234\n',
    rot2: 'ROTTEN!! bytes 1234\n',
    meta: 'mode changes only\n',
    added: 'added later\n',
    inner: 'inside the new directory "type"\n',
    x: 'in a new directory\n',
  };
  const cli = (args, o = {}) => runCli([args[0], '--repo', repo, ...args.slice(1)], { env, ...o });
  const ok = async (args, o) => {
    const r = await cli(args, o);
    assert.equal(r.status, 0, r.why);
    return r;
  };

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-browse-repo-'));
    env = cliEnv(work, { SHMPIPE_PASSWORD: 'browse-repo-test' });
    repo = path.join(work, 'repo');
    src = path.join(work, 'src');
    write(src, 'keep.txt', content.keep);
    write(src, 'change.txt', content.change1);
    write(src, 'remove.txt', content.remove);
    write(src, 'type', content.typeFile);
    write(src, 'rot.txt', content.rot1);
    fs.utimesSync(path.join(src, 'rot.txt'), 1_600_000_000, 1_600_000_000); // whole seconds: settable again exactly
    write(src, 'meta.txt', content.meta);
    write(src, 'dir/a', content.keep);
    await ok(['init']);
    one = (await ok(['backup', src, '--json'])).summary.snapshot;
    write(src, 'change.txt', content.change2);
    fs.rmSync(path.join(src, 'remove.txt'));
    fs.rmSync(path.join(src, 'type'));
    write(src, 'type/inner', content.inner);
    write(src, 'added.txt', content.added);
    write(src, 'newdir/x', content.x);
    // Same size, same mtime, same inode, other bytes: what bitrot looks like.
    const rot = path.join(src, 'rot.txt');
    const fd = fs.openSync(rot, 'r+');
    fs.writeSync(fd, content.rot2, 0);
    fs.closeSync(fd);
    fs.utimesSync(rot, 1_600_000_000, 1_600_000_000);
    fs.chmodSync(path.join(src, 'meta.txt'), 0o600);
    two = (await ok(['backup', src, '--no-parent', '--json'])).summary.snapshot;
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("diff: restic's markers, counts, and the data blobs added and removed", async function () {
    const r = await ok(['diff', one, two]);
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], `comparing snapshot ${one.slice(0, 8)} to ${two.slice(0, 8)}:`);
    const changes = lines.filter((l) => /^[-+TMU?]+ +\//.test(l));
    assert.deepEqual(changes, [
      '+    /src/added.txt',
      'M    /src/change.txt',
      '+    /src/newdir/',
      '+    /src/newdir/x',
      '-    /src/remove.txt',
      'M?   /src/rot.txt',
      'T    /src/type/',
      '+    /src/type/inner',
    ]);
    assert.match(r.stdout, /^Files: +3 new, +1 removed, +3 changed$/m);
    assert.match(r.stdout, /^Dirs: +1 new, +0 removed$/m);
    assert.match(r.stdout, /^Data Blobs: +5 new, +4 removed$/m);
    assert.match(r.stdout, /^Tree Blobs: +1 new, +1 removed$/m);

    const meta = await ok(['diff', one, two, '--metadata', '--json']);
    const byPath = Object.fromEntries(meta.lines.filter((l) => l.message_type === 'change').map((l) => [l.path, l.modifier]));
    assert.equal(byPath['/src/meta.txt'], 'U', 'a mode change shows with --metadata');
    assert.equal(byPath['/src/keep.txt'], undefined);
    const stats = meta.lines[meta.lines.length - 1];
    assert.equal(stats.message_type, 'statistics');
    assert.equal(stats.source_snapshot, one);
    assert.equal(stats.target_snapshot, two);
    const len = (...names) => names.reduce((a, n) => a + Buffer.byteLength(content[n]), 0);
    assert.deepEqual({ ...stats.added, bytes: undefined }, { files: 3, dirs: 1, others: 0, data_blobs: 5, tree_blobs: 1, bytes: undefined });
    assert.equal(stats.added.bytes - len('change2', 'added', 'inner', 'x', 'rot2') > 0, true, 'the new data, plus the new tree blob');
    assert.equal(stats.removed.data_blobs, 4);
    assert.ok(stats.removed.bytes > len('change1', 'remove', 'typeFile', 'rot1'));
    assert.equal(stats.changed_files, 5, 'change, rot, type, meta, and the top directory');

    const same = await ok(['diff', one, one, '--json']);
    assert.deepEqual(same.lines.filter((l) => l.message_type === 'change'), []);
    assert.equal((await cli(['diff', one])).status, 2);
  });

  it('cat: config (no secrets), snapshot, index, pack, tree, blob', async function () {
    const config = JSON.parse((await ok(['cat', 'config'])).stdout);
    assert.equal(config.settings.chunker.avg_size > 0, true);
    const text = JSON.stringify(config);
    for (const secret of ['wrapped_key', 'id_key', 'gear_seed']) assert.ok(!text.includes(secret), `cat config shows no ${secret}`);

    const snap = (await ok(['cat', 'snapshot', two, '--json'])).lines[0];
    assert.equal(snap.id, two);
    assert.deepEqual(snap.paths, [src]);
    assert.ok(snap.tree.length >= 1 && snap.tree.every((t) => /^[0-9a-f]{64}$/.test(t)));

    const tree = (await ok(['cat', 'tree', snap.tree[0], '--json'])).lines;
    assert.ok(tree.some((e) => e.p === 'src/newdir/x' && e.k === 'file'));

    const listed = await runCli(['list', 'index/', '--store', `file://${repo}`], { env });
    const indexId = listed.stdout.trim().split('\n')[0].split('/').pop();
    const index = (await ok(['cat', 'index', indexId.slice(0, 10), '--json'])).lines[0];
    assert.equal(index.id, indexId);
    const pack = index.packs[0];
    const header = (await ok(['cat', 'pack', pack.id.slice(0, 8), '--json'])).lines[0];
    assert.deepEqual(header.blobs, pack.blobs, "the pack's header agrees with the index");

    // Some data blob holds keep.txt's bytes (one chunk: the file is small).
    const indexes = await Promise.all(listed.stdout.trim().split('\n').map(async (l) => (await ok(['cat', 'index', l.split('/').pop(), '--json'])).lines[0]));
    const dataBlobs = indexes.flatMap((i) => i.packs.flatMap((p) => p.blobs)).filter((b) => b.type === 'data' && b.raw_length === Buffer.byteLength(content.keep));
    assert.ok(dataBlobs.length >= 1);
    const bodies = dataBlobs.map((b) => spawnSync(process.execPath, [CLI, 'cat', '--repo', repo, 'blob', b.id], { env }).stdout.toString());
    assert.ok(bodies.includes(content.keep), 'cat blob writes the plaintext');

    assert.equal((await cli(['cat', 'snapshot'])).status, 2);
    assert.equal((await cli(['cat', 'frob', 'x'])).status, 2);
    assert.equal((await cli(['cat', 'blob', 'abcd'])).status, 2, 'blobs by full id only');
    assert.equal((await cli(['cat', 'index', 'ffffffff'])).status, 1);
  });

  it('stats --mode: restore-size, files-by-contents, raw-data, blobs-per-file', async function () {
    const get = async (mode, ...args) => JSON.parse((await ok(['stats', '--mode', mode, '--json', ...args])).stdout);
    const files1 = ['keep', 'change1', 'remove', 'typeFile', 'rot1', 'meta', 'keep'];
    const size1 = files1.reduce((a, n) => a + Buffer.byteLength(content[n]), 0);
    const rs = await get('restore-size', one);
    assert.deepEqual(rs, { snapshots_count: 1, total_size: size1, total_file_count: 9 });
    const fc = await get('files-by-contents', one);
    assert.deepEqual(fc, { snapshots_count: 1, total_size: size1 - Buffer.byteLength(content.keep), total_file_count: 6 }, 'dir/a has the same content as keep.txt');
    const raw = await get('raw-data');
    assert.equal(raw.snapshots_count, 2);
    assert.ok(raw.total_blob_count >= 11, 'distinct data blobs of both snapshots and their tree blobs');
    assert.ok(raw.total_uncompressed_size > 0 && raw.total_size > 0);
    const bpf = await get('blobs-per-file', one);
    assert.equal(bpf.total_blob_count, 6);
    assert.equal(bpf.total_file_count, 6);
    const text = await ok(['stats', '--mode', 'restore-size', one]);
    assert.match(text.stdout, /Total File Count: +9/);
    assert.equal((await cli(['stats', '--mode', 'nope'])).status, 2);
  });

  it('tag --add/--remove/--set: a new id per changed snapshot, the old one gone', async function () {
    const list = async (...args) => JSON.parse((await ok(['snapshots', '--json', ...args])).stdout);
    const added = await ok(['tag', '--add', 'keep,important', two, '--json']);
    const [line] = added.lines;
    assert.equal(line.old, two);
    assert.notEqual(line.new, two);
    assert.equal(line.changed, true);
    assert.deepEqual(line.tags, ['keep', 'important']);
    const ids = (await list()).map((s) => s.id);
    assert.ok(!ids.includes(two) && ids.includes(line.new), 'the old snapshot id is gone, the new one is there');
    assert.deepEqual((await list('--tag', 'keep')).map((s) => s.id), [line.new]);
    // Its content did not change: the same entries.
    const lsOld = (await ok(['ls', line.new, '--json'])).lines.slice(1);
    assert.ok(lsOld.some((n) => n.path === '/src/newdir/x'));

    const again = await ok(['tag', '--add', 'keep', line.new, '--json']);
    assert.equal(again.lines[0].changed, false, 'nothing to change: same id');
    assert.equal(again.lines[0].new, line.new);

    const removed = await ok(['tag', '--remove', 'important', '--tag', 'keep', '--json']);
    assert.deepEqual(removed.lines[0].tags, ['keep']);
    const set = await ok(['tag', '--set', 'a,b']);
    assert.match(set.stdout, /modified 2 snapshot\(s\)/);
    assert.deepEqual((await list()).map((s) => s.tags), [['a', 'b'], ['a', 'b']]);
    const none = await ok(['tag', '--set', '', '--json']);
    assert.deepEqual(none.lines.map((l) => l.tags), [[], []]);
    assert.equal((await cli(['tag', 'latest'])).status, 2, 'nothing to change is a usage error');
    assert.equal((await cli(['tag', '--set', 'x', '--add', 'y'])).status, 2);
  });
});
