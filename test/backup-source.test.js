// Backup trusts no source (README: threat model), tried as an attacker (or a busy system) would,
// with the real sidecar:
// - between the walk's lstat and the read, a file is swapped for a symlink, a FIFO, another
//   file, or a directory (deterministically: the backup's test hook runs right before the
//   open): never followed, never blocked; recorded as what it is now, or left out, and reported;
// - a file that changes while it is read (the hook runs after the read, before the final
//   fstat): kept as read, reported, the CLI exits 3;
// - a change that keeps size and mtime moves ctime: the next backup reads the file again
//   (restic's rule), and --force reads everything again.
// And every file type round-trips through the real CLI: hard links (linked again, read once),
// a 1 GiB sparse file (restored allocation within 1 % of the source's), FIFOs, sockets, a
// device (as root), extended attributes and POSIX ACLs (with the system's setfattr/setfacl).
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const { pathToFileURL } = require('node:url');
const B = require('../ts-lib/dist/backup.js');
const { startSidecar } = require('./helpers/sidecar');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');

const PASSWORD = 'backup-source password';
const MiB = 1 << 20;

const rmrf = (p) => execFileSync('rm', ['-rf', '--', p]);

describe('backup reads sources safely (library, with hooks at the read)', function () {
  this.timeout(300_000);
  let work;
  let repo;
  let sc;
  let client;
  let repoHandle;

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-source-'));
    repo = path.join(work, 'repo');
    const init = await runCli(['init', '--repo', repo, '--json'], { env: cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD }) });
    assert.equal(init.status, 0, init.why);
    sc = await startSidecar({ env: { SHMPIPE_STORE: pathToFileURL(repo).href } });
    client = await B.connect({ socketPath: sc.socketPath, slotSize: 1 << 20, slotCount: 32 });
    repoHandle = await B.ops.repoOpen(client, PASSWORD);
  });

  after(async function () {
    await client?.close();
    await sc?.stop();
    if (work) rmrf(work);
  });

  /** A source with `victim` (to be swapped) among ordinary files; returns its root. */
  function source(name, victimSize = 100) {
    const src = path.join(work, name);
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'a.txt'), 'a\n');
    fs.writeFileSync(path.join(src, 'victim'), crypto.randomBytes(victimSize));
    fs.writeFileSync(path.join(src, 'z.txt'), 'z\n');
    return src;
  }

  /** Backs up `src` with `hooks`; the result and the snapshot's entries by path. */
  async function backup(src, hooks) {
    const warnings = [];
    const unreadable = [];
    const r = await B.runBackup(client, repoHandle, { paths: [src], parent: null, testHooks: hooks, onWarning: (w) => warnings.push(w), onUnreadable: (u) => unreadable.push(u) });
    const entries = new Map();
    for await (const e of await B.ops.entries(client, repoHandle, r.commit.id)) entries.set(e.path, e);
    return { r, entries, warnings, unreadable };
  }

  const at = (name, f) => (e) => {
    if (e.path.endsWith(`/${name}`)) f(e);
  };

  it('a file swapped for a symlink before the read is recorded as the symlink, never followed', async function () {
    const secret = path.join(work, 'secret.txt');
    fs.writeFileSync(secret, 'SECRET '.repeat(1000));
    const src = source('to-symlink');
    const { r, entries, warnings } = await backup(src, {
      beforeOpen: at('victim', (e) => {
        fs.unlinkSync(e.abs);
        fs.symlinkSync(secret, e.abs);
      }),
    });
    const v = entries.get('to-symlink/victim');
    assert.equal(v.kind, 'symlink');
    assert.equal(v.target, secret);
    assert.equal(v.content, undefined);
    assert.equal(r.bytesRead, 4, 'only a.txt and z.txt were read, not the secret');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0].message, /became a symlink during the backup/);
    assert.equal(warnings[0].path, 'to-symlink/victim');
  });

  it('a file swapped for a FIFO (small and large read paths) does not block and is recorded as a FIFO', async function () {
    for (const [name, size] of [['to-fifo', 100], ['to-fifo-large', 3 * MiB]]) {
      const src = source(name, size);
      const { entries, warnings } = await backup(src, {
        beforeOpen: at('victim', (e) => {
          fs.unlinkSync(e.abs);
          execFileSync('mkfifo', [e.abs.toString()]);
        }),
      });
      const v = entries.get(`${name}/victim`);
      assert.equal(v.kind, 'other', name);
      assert.equal(v.mode & 0o170000, 0o010000, `${name}: a FIFO`);
      assert.match(warnings[0].message, /became a FIFO during the backup/);
    }
  });

  it('a file replaced by another one is read as the new one and reported', async function () {
    const src = source('replaced', 3 * MiB);
    const fresh = crypto.randomBytes(5000);
    let newIno;
    const { entries, warnings } = await backup(src, {
      beforeOpen: at('victim', (e) => {
        const tmp = path.join(src, 'tmp');
        fs.writeFileSync(tmp, fresh);
        newIno = fs.statSync(tmp, { bigint: true }).ino;
        fs.renameSync(tmp, e.abs);
      }),
    });
    const v = entries.get('replaced/victim');
    assert.equal(v.size, 5000n);
    assert.equal(v.inode, newIno);
    const back = [];
    for await (const ch of B.ops.contentRead(client, repoHandle, v.content)) back.push(Buffer.from(ch.slot.buffer.subarray(0, ch.length)));
    assert.deepEqual(Buffer.concat(back), fresh);
    assert.match(warnings[0].message, /replaced by another file/);
  });

  it('a directory swapped in is left out and reported; the backup goes on', async function () {
    const src = source('to-dir');
    const { entries, unreadable } = await backup(src, {
      beforeOpen: at('victim', (e) => {
        fs.unlinkSync(e.abs);
        fs.mkdirSync(e.abs);
      }),
    });
    assert.ok(!entries.has('to-dir/victim'));
    assert.ok(entries.has('to-dir/z.txt'));
    assert.equal(unreadable[0].code, 'EISDIR');
  });

  it('a file that changes while it is read is kept as read and reported', async function () {
    for (const [name, size] of [['grows', 100], ['grows-large', 3 * MiB]]) {
      const src = source(name, size);
      const { entries, warnings } = await backup(src, { afterRead: at('victim', (e) => fs.appendFileSync(e.abs, 'more')) });
      assert.equal(entries.get(`${name}/victim`).size, BigInt(size), `${name}: the size it had when read`);
      assert.equal(warnings.length, 1, name);
      assert.match(warnings[0].message, /changed while it was read \(size \d+ → \d+, mtime, ctime\)/);
    }
  });
});

describe('backup and restore of every file type (CLI)', function () {
  this.timeout(900_000);
  let work;
  let repo;
  let env;
  const cli = (args, o = {}) => runCli([...args, '--repo', repo, '--json'], { env, timeoutMs: 600_000, ...o });

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-types-'));
    repo = path.join(work, 'repo');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    const init = await cli(['init']);
    assert.equal(init.status, 0, init.why);
  });

  after(function () {
    if (work) rmrf(work);
  });

  it('a change that keeps size and mtime (ctime moves) is backed up; --force reads everything', async function () {
    const src = path.join(work, 'ctime');
    fs.mkdirSync(src);
    const f = path.join(src, 'same-size.txt');
    fs.writeFileSync(f, 'version one\n');
    fs.writeFileSync(path.join(src, 'other.txt'), 'other\n');
    const t = new Date('2024-01-02T03:04:05Z');
    fs.utimesSync(f, t, t);
    const first = okSummary(await cli(['backup', src]));
    assert.equal(first.files_new, 2);
    fs.writeFileSync(f, 'version two\n'); // same size
    fs.utimesSync(f, t, t); // same mtime: only ctime says it changed
    const second = okSummary(await cli(['backup', src]));
    assert.equal(second.files_changed, 1, 'read again: its ctime moved');
    assert.equal(second.files_unchanged, 1);
    const third = okSummary(await cli(['backup', src, '--force']));
    assert.equal(third.files_changed, 2, '--force reads every file');
    assert.equal(third.bytes_read, 18);
    const target = path.join(work, 'ctime-restore');
    okSummary(await cli(['restore', second.snapshot, target]));
    assert.equal(fs.readFileSync(path.join(target, 'ctime', 'same-size.txt'), 'utf8'), 'version two\n');
  });

  it('hard links are backed up once and restored as hard links', async function () {
    const src = path.join(work, 'links');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    const data = crypto.randomBytes(2 * MiB + 7);
    fs.writeFileSync(path.join(src, 'one'), data);
    fs.linkSync(path.join(src, 'one'), path.join(src, 'sub', 'two'));
    fs.linkSync(path.join(src, 'one'), path.join(src, 'three'));
    fs.writeFileSync(path.join(src, 'single'), 'x');
    const s = okSummary(await cli(['backup', src]));
    assert.equal(s.bytes_read, data.length + 1, 'the linked content is read once');
    const target = path.join(work, 'links-restore');
    const r = okSummary(await cli(['restore', s.snapshot, target]));
    assert.equal(r.hardlinks, 2);
    const ino = (p) => fs.statSync(path.join(target, 'links', p)).ino;
    assert.equal(ino('sub/two'), ino('one'));
    assert.equal(ino('three'), ino('one'));
    assert.notEqual(ino('single'), ino('one'));
    assert.equal(fs.statSync(path.join(target, 'links', 'one')).nlink, 3);
    assert.deepEqual(fs.readFileSync(path.join(target, 'links', 'three')), data);
  });

  it('a 1 GiB sparse file keeps its holes (restored allocation within 1 % of the source), bit-exact', async function () {
    const src = path.join(work, 'sparse');
    fs.mkdirSync(src);
    const f = path.join(src, 'disk.img');
    const fd = fs.openSync(f, 'w');
    const pieces = [0, 300 * MiB + 12345, 1024 * MiB - MiB];
    for (const at of pieces) fs.writeSync(fd, crypto.randomBytes(MiB), 0, MiB, at);
    fs.ftruncateSync(fd, 1024 * MiB);
    fs.closeSync(fd);
    const want = fs.statSync(f);
    assert.ok(want.blocks * 512 < 8 * MiB, `the source is sparse (${want.blocks} blocks)`);
    const s = okSummary(await cli(['backup', src]));
    const target = path.join(work, 'sparse-restore');
    okSummary(await cli(['restore', s.snapshot, target]));
    const got = fs.statSync(path.join(target, 'sparse', 'disk.img'));
    assert.equal(got.size, want.size);
    assert.ok(Math.abs(got.blocks - want.blocks) <= want.blocks / 100, `allocated ${got.blocks} blocks, the source ${want.blocks}`);
    const hash = (p) => execFileSync('sha256sum', [p], { encoding: 'utf8' }).split(' ')[0];
    assert.equal(hash(path.join(target, 'sparse', 'disk.img')), hash(f));
  });

  it('FIFOs, sockets and (as root) devices are recreated', async function () {
    const src = path.join(work, 'special');
    fs.mkdirSync(src);
    execFileSync('mkfifo', ['-m', '0640', path.join(src, 'fifo')]);
    const sock = spawnSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path.join(src, 'sock')]);
    assert.equal(sock.status, 0, String(sock.stderr));
    const root = process.getuid() === 0;
    if (root) execFileSync('mknod', ['-m', '0600', path.join(src, 'null'), 'c', '1', '3']);
    const s = okSummary(await cli(['backup', src]));
    const target = path.join(work, 'special-restore');
    const r = okSummary(await cli(['restore', s.snapshot, target]));
    const st = (n) => fs.lstatSync(path.join(target, 'special', n));
    assert.ok(st('fifo').isFIFO());
    assert.equal(st('fifo').mode & 0o7777, 0o640);
    assert.ok(st('sock').isSocket());
    if (root) {
      assert.ok(st('null').isCharacterDevice());
      assert.equal(st('null').rdev, fs.lstatSync(path.join(src, 'null')).rdev);
      assert.equal(r.specials, 3);
    } else {
      assert.equal(r.skipped, 0);
      this.skip(); // devices need root
    }
  });

  it('extended attributes and POSIX ACLs are backed up and restored (--no-xattrs skips them)', async function () {
    const src = path.join(work, 'xattrs');
    fs.mkdirSync(path.join(src, 'dir'), { recursive: true });
    const f = path.join(src, 'file.txt');
    fs.writeFileSync(f, 'with attributes\n');
    const set = spawnSync('setfattr', ['-n', 'user.shmpipe', '-v', '0sAAEC/w==', f]);
    if (set.error !== undefined || set.status !== 0) {
      console.log(`      (skipped: setfattr ${set.error ? 'is not installed' : `failed: ${String(set.stderr).trim()}`} — install the attr package, on a file system with user xattrs)`);
      this.skip();
    }
    execFileSync('setfattr', ['-n', 'user.dir', '-v', 'on a directory', path.join(src, 'dir')]);
    const acl = spawnSync('setfacl', ['-m', 'u:1234:r', f]);
    const dacl = spawnSync('setfacl', ['-d', '-m', 'g:2345:rx', path.join(src, 'dir')]);
    const acls = acl.status === 0 && dacl.status === 0;
    if (!acls) console.log('      (POSIX ACLs not checked: setfacl is missing or the file system has no ACLs)');
    const dump = (p) => execFileSync('getfattr', ['-d', '-m', '-', '--absolute-names', '-e', 'hex', p], { encoding: 'utf8' }).split('\n').slice(1).join('\n');
    const s = okSummary(await cli(['backup', src]));
    const target = path.join(work, 'xattrs-restore');
    okSummary(await cli(['restore', s.snapshot, target]));
    for (const p of ['file.txt', 'dir']) assert.equal(dump(path.join(target, 'xattrs', p)), dump(path.join(src, p)), p);
    if (acls) {
      const facl = (p) => execFileSync('getfacl', ['-c', '--absolute-names', p], { encoding: 'utf8' });
      assert.match(facl(path.join(target, 'xattrs', 'file.txt')), /user:1234:r--/);
      assert.match(facl(path.join(target, 'xattrs', 'dir')), /default:group:2345:r-x/);
    }
    const bare = path.join(work, 'xattrs-bare');
    okSummary(await cli(['restore', s.snapshot, bare, '--no-xattrs']));
    assert.doesNotMatch(dump(path.join(bare, 'xattrs', 'file.txt')), /user\.shmpipe/);
  });
});
