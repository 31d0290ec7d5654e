// The backup agent's filesystem side (ts-lib/dist/backup.js): names that are not UTF-8, the
// walker's metadata and error reporting, the incremental test, and a restore target fed by
// positional writes, checked by a walk → restore → walk round trip (bit- and metadata-exact;
// mtimes within 1 µs, see restore-fs.ts). No sidecar involved.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const B = require('../ts-lib/dist/backup.js');

const b = (s) => Buffer.from(s, 'latin1');

async function collect(roots) {
  const errors = [];
  const entries = [];
  for await (const e of B.walk(roots, (err) => errors.push(err))) entries.push(e);
  return { entries, errors };
}

function setTimes(p, ns) {
  const t = Number(ns) / 1e9;
  fs.lutimesSync(p, t, t);
}

/** A tree with the awkward cases; returns its root. */
function makeTree(base) {
  const root = path.join(base, 'src');
  const j = (...p) => Buffer.concat([b(root), ...p.flatMap((x) => [b('/'), Buffer.isBuffer(x) ? x : Buffer.from(x, 'utf8')])]);
  fs.mkdirSync(root);
  fs.mkdirSync(j('empty'), 0o750);
  fs.mkdirSync(j('sub', 'deep', 'x'), { recursive: true });
  fs.writeFileSync(j('sub', 'deep', 'x', 'file.txt'), 'deep\n'.repeat(1000));
  const dup = crypto.randomBytes(2 << 20);
  fs.writeFileSync(j('dup1.bin'), dup);
  fs.writeFileSync(j('dup2.bin'), dup);
  fs.writeFileSync(j('zero'), '');
  fs.writeFileSync(j('big.bin'), crypto.randomBytes((5 << 20) + 123));
  fs.writeFileSync(j('a.txt'), 'hello\n');
  for (const odd of ['ünïcødé ☃.txt', 'with space', '-leading-dash', 'new\nline', 'back\\slash', '\\x41']) fs.writeFileSync(j(odd), odd);
  fs.writeFileSync(j(b('bad\xff\xfename')), 'not utf-8');
  fs.writeFileSync(j('exec.sh'), '#!/bin/sh\n', { mode: 0o755 });
  fs.chmodSync(j('exec.sh'), 0o755);
  fs.writeFileSync(j('secret'), 's');
  fs.chmodSync(j('secret'), 0o600);
  fs.symlinkSync('a.txt', j('link'));
  fs.symlinkSync('../nowhere/at/all', j('dangling'));
  fs.symlinkSync(b('bad\xfetarget'), j('oddlink'));
  execFileSync('mkfifo', [path.join(root, 'fifo')]);
  if (process.getuid() === 0) fs.chownSync(j('secret'), 1234, 5678);
  // Times with sub-second parts, children before their directories (writing changes a dir's mtime).
  let ns = 1_600_000_000_123_456_000n;
  const all = [];
  (function list(dir) {
    for (const name of fs.readdirSync(dir, { encoding: 'buffer' })) {
      const p = Buffer.concat([dir, b('/'), name]);
      if (fs.lstatSync(p).isDirectory()) list(p);
      all.push(p);
    }
  })(b(root));
  for (const p of [...all, b(root)]) setTimes(p, (ns += 1_000_017_000n));
  return root;
}

async function restoreFromDisk(entries, target, include = []) {
  const t = new B.RestoreTarget(target);
  await t.prepare();
  const sel = B.selector({ include });
  const buf = Buffer.alloc(1 << 20);
  const skipped = [];
  for (const e of entries) {
    const s = sel(e.path, e.kind === 'dir');
    if (!s.restore && !s.descend) continue;
    if (e.kind === 'dir') t.dir(e, undefined, !s.restore);
    else if (e.kind === 'symlink') t.symlink(e);
    else if (e.kind === 'file') {
      const sink = await t.file(e);
      const fd = fs.openSync(e.abs, 'r');
      let pos = 0;
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        if (n === 0) break;
        await sink.write(buf, n, pos);
        pos += n;
      }
      fs.closeSync(fd);
      await sink.finish();
    } else if (t.special(e) === 'skipped') skipped.push(e.path);
  }
  t.finishDirs();
  t.close();
  return skipped;
}

const meta = (e) => ({ kind: e.kind, mode: e.mode, uid: e.uid, gid: e.gid, size: e.kind === 'dir' ? 'dir' : e.size, target: e.target });

describe('backup agent: filesystem side', function () {
  let base;
  beforeEach(function () {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-agent-'));
  });
  afterEach(function () {
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('escapes names that are not UTF-8, and backslashes, reversibly', function () {
    assert.equal(B.escapeName(Buffer.from('plain ü ☃')), 'plain ü ☃');
    assert.equal(B.escapeName(b('a\\b')), 'a\\\\b');
    assert.equal(B.escapeName(b('x\xffy')), 'x\\xffy');
    assert.equal(B.escapeName(b('\\xff')), '\\\\xff', 'a literal backslash-x is not an escape');
    assert.equal(B.escapeName(Buffer.from([0xc0, 0xaf])), '\\xc0\\xaf', 'overlong encodings are escaped');
    assert.equal(B.escapeName(Buffer.from([0xed, 0xa0, 0x80])), '\\xed\\xa0\\x80', 'surrogates are escaped');
    for (let i = 0; i < 2000; i++) {
      const raw = crypto.randomBytes(1 + (i % 17));
      assert.deepEqual(B.unescapeName(B.escapeName(raw)), raw);
    }
    assert.throws(() => B.unescapeName('a\\q'), /bad escape/);
  });

  it('walks with full metadata, in a deterministic order, directories before their contents', async function () {
    const root = makeTree(base);
    const { entries, errors } = await collect([root]);
    assert.deepEqual(errors, []);
    const byPath = new Map(entries.map((e) => [e.path, e]));
    assert.equal(entries[0].path, 'src');
    assert.equal(byPath.get('src/bad\\xff\\xfename').kind, 'file');
    assert.equal(byPath.get('src/back\\\\slash').size, 10n);
    assert.equal(byPath.get('src/link').target, 'a.txt');
    assert.equal(byPath.get('src/oddlink').target, 'bad\\xfetarget');
    assert.equal(byPath.get('src/fifo').kind, 'other');
    assert.equal(byPath.get('src/exec.sh').mode & 0o7777, 0o755);
    assert.equal(byPath.get('src/empty').kind, 'dir');
    const st = fs.lstatSync(path.join(root, 'a.txt'), { bigint: true });
    assert.equal(byPath.get('src/a.txt').mtimeNs, st.mtimeNs);
    assert.equal(byPath.get('src/a.txt').inode, st.ino);
    for (const e of entries) {
      const parent = e.path.slice(0, e.path.lastIndexOf('/'));
      if (parent) assert.ok(entries.findIndex((x) => x.path === parent) < entries.indexOf(e), `${parent} before ${e.path}`);
    }
    assert.deepEqual((await collect([root])).entries.map((e) => e.path), entries.map((e) => e.path));
  });

  it('reports what it cannot read and goes on', async function () {
    const root = makeTree(base);
    const { entries, errors } = await collect([path.join(base, 'missing'), root]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].path, 'missing');
    assert.equal(errors[0].code, 'ENOENT');
    assert.ok(entries.length > 10);
    assert.throws(() => B.rootNames(['/a/x', '/b/x']), /same name 'x'/);
    assert.throws(() => B.rootNames(['/']), /no name/);
  });

  it('classifies files against the parent snapshot by size, mtime, ctime and inode (restic\'s rule)', function () {
    const e = { kind: 'file', size: 10n, mtimeNs: 5n, inode: 7n, ctimeNs: 9n };
    const p = { kind: 'file', size: 10n, mtimeNs: 5n, inode: 7n, ctimeNs: 9n };
    assert.equal(B.classify(e, undefined), 'new');
    assert.equal(B.classify(e, p), 'unchanged');
    assert.equal(B.classify(e, { ...p, size: 11n }), 'changed');
    assert.equal(B.classify(e, { ...p, mtimeNs: 6n }), 'changed');
    assert.equal(B.classify(e, { ...p, inode: 8n }), 'changed');
    assert.equal(B.classify(e, { ...p, ctimeNs: 10n }), 'changed', 'a change that keeps size and mtime moves ctime');
    assert.equal(B.classify(e, { ...p, ctimeNs: undefined }), 'changed', 'a parent without ctime (older snapshot): read again');
    assert.equal(B.classify(e, p, true), 'changed', '--force');
    assert.equal(B.classify(e, { ...p, kind: 'symlink' }), 'changed');
  });

  it('restores bit-exact and metadata-exact from positional writes', async function () {
    const root = makeTree(base);
    const { entries } = await collect([root]);
    const target = path.join(base, 'out');
    const skipped = await restoreFromDisk(entries, target);
    assert.deepEqual(skipped, [], 'the FIFO is made again');
    const back = (await collect([path.join(target, 'src')])).entries;
    const want = entries;
    assert.deepEqual(back.map((e) => e.path), want.map((e) => e.path));
    for (const [i, e] of want.entries()) {
      assert.deepEqual(meta(back[i]), meta(e), e.path);
      assert.equal(back[i].mtimeNs, e.mtimeNs, `mtime of ${e.path}: restored to the nanosecond`);
      if (e.kind === 'file') assert.ok(fs.readFileSync(back[i].abs).equals(fs.readFileSync(e.abs)), `bytes of ${e.path}`);
    }
    const leftovers = (await collect([target])).entries.filter((e) => e.path.includes('.shmpipe-restore-'));
    assert.deepEqual(leftovers, []);
  });

  it('restores only what --include names (with the directories above it)', async function () {
    const root = makeTree(base);
    const { entries } = await collect([root]);
    const target = path.join(base, 'out');
    await restoreFromDisk(entries, target, ['src/sub/deep', '/src/a.txt/']);
    const got = (await collect([path.join(target, 'src')])).entries.map((e) => e.path).sort();
    assert.deepEqual(got, ['src', 'src/a.txt', 'src/sub', 'src/sub/deep', 'src/sub/deep/x', 'src/sub/deep/x/file.txt']);
  });

  it('an aborted file leaves nothing behind, and paths cannot escape the target', async function () {
    const t = new B.RestoreTarget(path.join(base, 'out'));
    await t.prepare();
    const sink = await t.file({ path: 'f', kind: 'file', mode: 0o100644, uid: 0, gid: 0, mtimeNs: 0n, size: 100n });
    await sink.write(Buffer.alloc(10, 1), 10, 0);
    await sink.abort();
    t.close();
    assert.deepEqual(fs.readdirSync(path.join(base, 'out')), []);
    for (const bad of ['../x', 'a/../../x', '', 'a//b', '.', '/abs', '\\x2e\\x2e', 'a\\x2fb', 'a\\x00', '\\x41']) {
      assert.throws(() => B.pathNames(bad), (e) => e.code === 'SHMPIPE_E_UNSAFE_ENTRY' && /refusing entry/.test(e.message), bad);
    }
    assert.deepEqual(B.pathNames('back\\\\slash/\\\\x2e\\\\x2e'), [b('back\\slash'), b('\\x2e\\x2e')]);
  });

  it('restores small files with synchronous writes (exact content, sparse tail, metadata; abort leaves nothing), making directories once', async function () {
    const root = path.join(base, 'out-sync');
    const t = new B.RestoreTarget(root);
    await t.prepare();
    t.dir({ path: 'd', kind: 'dir', mode: 0o40750, uid: 0, gid: 0, mtimeNs: 1_000_000_123n, size: 0n });
    await t.dir({ path: 'd/e', kind: 'dir', mode: 0o40755, uid: 0, gid: 0, mtimeNs: 2_000_000_456n, size: 0n });
    const a = crypto.randomBytes(5000);
    const b = crypto.randomBytes(3000);
    // Two chunks covering the file exactly, the second written first.
    const f1 = t.syncFile({ path: 'd/e/one', kind: 'file', mode: 0o100640, uid: 0, gid: 0, mtimeNs: 1_234_567_891_234_567_891n, size: 8000n });
    f1.write(b, 3000, 5000);
    f1.write(a, 5000, 0);
    f1.finish();
    assert.deepEqual(fs.readFileSync(path.join(root, 'd/e/one')), Buffer.concat([a, b]));
    const st = fs.statSync(path.join(root, 'd/e/one'), { bigint: true });
    assert.equal(Number(st.mode) & 0o7777, 0o640);
    assert.equal(st.mtimeNs, 1_234_567_891_234_567_891n);
    // Writes that do not reach the size: the tail is zeros; 0-byte file: no write at all.
    const f2 = t.syncFile({ path: 'd/two', kind: 'file', mode: 0o100600, uid: 0, gid: 0, mtimeNs: 0n, size: 100n });
    f2.write(a, 10, 0);
    f2.finish();
    assert.deepEqual(fs.readFileSync(path.join(root, 'd/two')), Buffer.concat([a.subarray(0, 10), Buffer.alloc(90)]));
    t.syncFile({ path: 'three', kind: 'file', mode: 0o100644, uid: 0, gid: 0, mtimeNs: 0n, size: 0n }).finish();
    assert.equal(fs.statSync(path.join(root, 'three')).size, 0);
    // A file whose directory entry was not seen (out of order, or a hostile listing): refused.
    assert.throws(() => t.syncFile({ path: 'x/y/four', kind: 'file', mode: 0o100644, uid: 0, gid: 0, mtimeNs: 0n, size: 0n }), /its directory was not restored/);
    assert.ok(!fs.existsSync(path.join(root, 'x')));
    const f5 = t.syncFile({ path: 'd/five', kind: 'file', mode: 0o100644, uid: 0, gid: 0, mtimeNs: 0n, size: 10n });
    f5.write(a, 10, 0);
    f5.abort();
    assert.deepEqual(fs.readdirSync(path.join(root, 'd')).sort(), ['e', 'two']);
    assert.equal(fs.statSync(path.join(root, 'd')).mode & 0o7777, 0o700, 'directories stay 0700 while their contents are restored');
    t.finishDirs();
    t.close();
    assert.equal(fs.statSync(path.join(root, 'd')).mode & 0o7777, 0o750);
    assert.equal(fs.statSync(path.join(root, 'd/e'), { bigint: true }).mtimeNs, 2_000_000_456n);
  });

  it('formats progress (TTY line, JSON records) and the summary', function () {
    assert.equal(B.formatBytes(0), '0 B');
    assert.equal(B.formatBytes(1536), '1.50 KiB');
    assert.equal(B.formatBytes(300 * 2 ** 20), '300 MiB');
    assert.equal(B.formatDuration(3723), '1:02:03');
    assert.equal(B.formatDuration(59.6), '1:00');
    const c = { files: 10, filesTotal: 40, bytes: 50 * 2 ** 20, bytesTotal: 100 * 2 ** 20, totalKnown: true, errors: 0 };
    const line = B.progressLine('backup', c, 2, 100);
    assert.ok(line.length <= 100, line);
    assert.match(line, /^backup \[#{15}\.{15}\]  50% 50.0 MiB 25.0 MiB\/s 10\/40 files ETA 0:02$/);
    assert.match(B.progressLine('backup', { ...c, totalKnown: false, errors: 2 }, 2, 200), /10\+\/40 files ETA --:-- 2 errors$/);
    const rec = B.progressRecord('restore', c, 2);
    assert.deepEqual([rec.type, rec.op, rec.bytes_per_s, rec.files_total], ['progress', 'restore', 25 * 2 ** 20, 40]);
    const writes = [];
    const p = new B.Progress('backup', { isTTY: false, write: (x) => writes.push(x) }, true, 60_000);
    p.update(c);
    p.update(c); // within the interval: dropped
    p.end({ ...c, files: 40 });
    assert.equal(writes.length, 2);
    assert.equal(JSON.parse(writes[1]).files, 40);
    const silent = [];
    new B.Progress('backup', { isTTY: false, write: (x) => silent.push(x) }, false).end(c);
    assert.deepEqual(silent, [], 'no progress on a non-TTY without --json');
    const lines = B.summaryLines({ snapshot: 'ab12', files_new: 3, files_changed: 1, files_unchanged: 7, dirs: 2, others: 1, bytes_read: 2 ** 30, bytes_added: 2 ** 29, bytes_added_packed: 2 ** 28, duration_s: 2, unreadable: 1 });
    assert.match(lines.join('\n'), /3 new, 1 changed, 7 unchanged/);
    assert.match(lines.join('\n'), /512 MiB new data, 256 MiB stored/);
    assert.match(lines.join('\n'), /512 MiB\/s \(1\.93 TB\/h\)/);
    assert.match(lines.at(-1), /unreadable: 1/);
  });

  it('resolves the repository URL and the password from flag, environment, file or terminal', async function () {
    const { pathToFileURL } = require('node:url');
    assert.equal(B.resolveRepo('s3://bucket/x', {}), 's3://bucket/x');
    assert.equal(B.resolveRepo(undefined, { SHMPIPE_REPO: 'file:///r' }), 'file:///r');
    assert.equal(B.resolveRepo('rel/dir', {}), pathToFileURL(path.resolve('rel/dir')).href);
    assert.equal(B.resolveRepo(undefined, { XDG_DATA_HOME: '/xdg' }), 'file:///xdg/shmpipe/repo');
    assert.equal(B.defaultRepoDir({}), path.join(os.homedir(), '.local', 'share', 'shmpipe', 'repo'));

    const pwFile = path.join(base, 'pw');
    fs.writeFileSync(pwFile, 'from file\nignored\n');
    assert.equal(await B.resolvePassword({ passwordFile: pwFile, env: { SHMPIPE_PASSWORD: 'env' }, tty: null }), 'from file');
    assert.equal(await B.resolvePassword({ env: { SHMPIPE_PASSWORD: 'env' }, tty: null }), 'env');
    await assert.rejects(B.resolvePassword({ env: {}, tty: null }), /no password: set SHMPIPE_PASSWORD/);
    await assert.rejects(B.resolvePassword({ passwordFile: path.join(base, 'nope'), env: {}, tty: null }), /cannot read the password file/);

    const { EventEmitter } = require('node:events');
    const fakeTty = (typed) => {
      const input = new EventEmitter();
      const shown = [];
      input.raw = [];
      input.setRawMode = (on) => input.raw.push(on);
      input.resume = () => setImmediate(() => input.emit('data', Buffer.from(typed.shift())));
      input.pause = () => {};
      return { tty: { input, output: { write: (x) => shown.push(x) } }, shown, input };
    };
    const t = fakeTty(['sec\x7fcret\r', 'secret\r']);
    assert.equal(await B.resolvePassword({ env: {}, tty: t.tty, confirm: true }), 'secret');
    assert.ok(!t.shown.join('').includes('secret'), 'nothing typed is echoed');
    assert.deepEqual(t.input.raw, [true, false, true, false]);
    await assert.rejects(B.resolvePassword({ env: {}, tty: fakeTty(['a\r', 'b\r']).tty, confirm: true }), /do not match/);
  });
});
