// The backup-engine ops' agent side (ts-lib/src/backup/ops.ts, via dist/backup.js) without a
// sidecar: every argument is refused locally, before any ring work (the fake client below
// throws if anything reaches it), and tree entries are encoded as SPEC §7.3 says — 64-bit
// fields as decimal strings, `c` for files only, `x` only when not "new" — and decoded back.
'use strict';

const assert = require('node:assert/strict');
const B = require('../ts-lib/dist/backup.js');

const { ops } = B;
/** A client that fails the test if an op gets as far as using it. */
const untouchable = new Proxy(
  {},
  {
    get(_, prop) {
      throw new Error(`the op reached the client (${String(prop)}) instead of refusing its arguments`);
    },
  },
);
const ID = 'ab'.repeat(32);

async function refused(p, pattern) {
  await assert.rejects(p, (e) => {
    assert.equal(e.code, 'SHMPIPE_E_INVALID_ARGUMENT', e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

const entry = (over = {}) => ({
  path: 'root/a.txt',
  kind: 'file',
  mode: 0o100644,
  uid: 1000,
  gid: 1000,
  mtimeNs: 1_700_000_000_123_456_789n,
  size: 6n,
  inode: 2n ** 63n + 5n,
  dev: 2049n,
  content: '00ff',
  ...over,
});

describe('backup ops: argument checks (no sidecar)', function () {
  it('refuses bad passwords and repository parameters', async function () {
    await refused(ops.repoOpen(untouchable, ''), /password/);
    await refused(ops.repoOpen(untouchable, 42), /password/);
    await refused(ops.repoInit(untouchable, 'pw', { compression_level: 20 }), /compression_level/);
    await refused(ops.repoInit(untouchable, 'pw', { pack_size_mib: 0 }), /pack_size_mib/);
    await refused(ops.repoInit(untouchable, 'pw', { kdf_m_kib: 63 }), /kdf_m_kib/);
    await refused(ops.repoInit(untouchable, 'pw', { kdf_t: 1.5 }), /kdf_t/);
    await refused(ops.repoInit(untouchable, 'pw', { level: 3 }), /level/);
  });

  it('refuses handles that are not integers ≥ 1', async function () {
    for (const h of [0, -1, 1.5, NaN, '1', 2 ** 53, undefined]) {
      await refused(ops.snapshots(untouchable, h), /handle/);
      await refused(ops.fileOpen(untouchable, h), /handle/);
      await refused(ops.backupCommit(untouchable, h), /handle/);
      await refused(ops.backupAbort(untouchable, h), /handle/);
      await refused(ops.close(untouchable, h), /handle/);
      await refused(ops.entriesNext(untouchable, h), /handle/);
      await refused(ops.check(untouchable, h), /handle/);
      assert.throws(() => ops.contentRead(untouchable, h, '00'), { code: 'SHMPIPE_E_INVALID_ARGUMENT' });
    }
  });

  it('refuses bad backup requests, snapshot names and content references', async function () {
    await refused(ops.backupBegin(untouchable, 1, { parent: 'latest' }), /parent/);
    await refused(ops.backupBegin(untouchable, 1, { parent: ID.toUpperCase() }), /parent/);
    await refused(ops.backupBegin(untouchable, 1, { tags: 'x' }), /tags/);
    await refused(ops.backupBegin(untouchable, 1, { exclude: [] }), /exclude/);
    await refused(ops.entriesOpen(untouchable, 1, 'abc'), /snapshot/);
    await refused(ops.entriesOpen(untouchable, 1, ID + '0'), /snapshot/);
    await refused(ops.check(untouchable, 1, { readData: 'yes' }), /readData/);
    for (const ref of ['', 'abc', 'ABCD', 'zz', 42]) {
      assert.throws(() => ops.contentRead(untouchable, 1, ref), { code: 'SHMPIPE_E_INVALID_ARGUMENT' }, String(ref));
    }
    assert.throws(() => ops.contentRead(untouchable, 1, '00', { readAhead: 65 }), /readAhead/);
  });

  it('refuses data ops without a slot of this client', async function () {
    await refused(ops.filePut(untouchable, 1, {}, 0), /Slot/);
    await refused(ops.fileWrite(untouchable, 1, Buffer.alloc(4), 4), /Slot/);
    await refused(ops.addEntries(untouchable, 1, null, 0), /Slot/);
  });
});

describe('backup ops: tree entry lines', function () {
  it('encodes 64-bit fields as decimal strings, and c/x as SPEC §7.3 says', function () {
    const line = JSON.parse(B.encodeEntry(entry()));
    assert.deepEqual(line, { p: 'root/a.txt', k: 'file', m: 0o100644, u: 1000, g: 1000, t: '1700000000123456789', s: '6', n: '9223372036854775813', d: '2049', c: '00ff' });
    assert.equal(JSON.parse(B.encodeEntry(entry(), 'unchanged')).x, 'unchanged');
    assert.equal(JSON.parse(B.encodeEntry(entry(), 'changed')).x, 'changed');
    const dir = JSON.parse(B.encodeEntry(entry({ path: 'root', kind: 'dir', mode: 0o40755, content: undefined })));
    assert.equal(dir.c, undefined);
    const link = JSON.parse(B.encodeEntry(entry({ path: 'root/l', kind: 'symlink', content: undefined, target: '../x\\xff' })));
    assert.equal(link.l, '../x\\xff');
    assert.ok(!B.encodeEntry(entry()).includes('\n'), 'one line per entry');
  });

  it('refuses entries the sidecar would refuse', function () {
    const bad = (over, pattern, change) => assert.throws(() => B.encodeEntry(entry(over), change), (e) => e.code === 'SHMPIPE_E_INVALID_ARGUMENT' && pattern.test(e.message));
    bad({ content: undefined }, /content/);
    bad({ content: 'XYZ' }, /content/);
    bad({ kind: 'dir' }, /only files/);
    bad({ kind: 'fifo' }, /kind/);
    bad({ path: '' }, /path/);
    bad({ path: '/abs' }, /path/);
    bad({ size: 6 }, /size/);
    bad({ mtimeNs: 2n ** 63n }, /mtimeNs/);
    bad({ inode: 2n ** 64n }, /inode/);
    bad({ mode: 2 ** 32 }, /mode/);
    bad({ target: 'x' }, /target/);
    bad({}, /change/, 'gone');
  });

  it('decodes what it encodes (ENTRIES_NEXT lines), bigints exact', function () {
    for (const e of [entry(), entry({ mtimeNs: -15_595_199_750_000_001n }), entry({ path: 'r/d', kind: 'dir', content: undefined }), entry({ path: 'r/s', kind: 'symlink', content: undefined, target: 't' })]) {
      const back = B.decodeEntry(B.encodeEntry(e));
      assert.deepEqual({ ...back }, { ...e, target: e.target, content: e.content });
    }
    assert.throws(() => B.decodeEntry('{"p":"a","k":"file","m":1,"u":0,"g":0,"t":1,"s":"0","n":"0","d":"0"}'), { code: 'SHMPIPE_E_PROTOCOL' });
    assert.throws(() => B.decodeEntry('not json'), { code: 'SHMPIPE_E_PROTOCOL' });
  });
});
