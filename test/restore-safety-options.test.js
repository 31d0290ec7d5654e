// restore's options with restic's names and meanings, through the real CLI: --dry-run (nothing
// written, every action listed), --overwrite always|if-changed|if-newer|never against a target
// that already has files (inodes tell whether a file was rewritten), --delete (what the
// snapshot does not have goes, within --exclude), --verify, --include/--exclude/--iinclude
// patterns, and --sparse for a file that had no holes at backup.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');

const PASSWORD = 'restore-options password';
const MiB = 1 << 20;
const OLD = new Date('2001-02-03T04:05:06Z');

/** Every path below `dir`, relative, sorted. */
function listing(dir) {
  const out = [];
  (function walk(rel) {
    for (const n of fs.readdirSync(path.join(dir, rel)).sort()) {
      const p = rel === '' ? n : `${rel}/${n}`;
      out.push(p);
      if (fs.lstatSync(path.join(dir, p)).isDirectory()) walk(p);
    }
  })('');
  return out;
}

describe('restore options (restic semantics)', function () {
  this.timeout(600_000);
  let work;
  let repo;
  let env;
  let src;
  let snapshot;
  const cli = (args) => runCli([...args, '--repo', repo, '--json'], { env, timeoutMs: 300_000 });
  const restore = (target, ...more) => cli(['restore', snapshot, target, ...more]);

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-restore-opts-'));
    repo = path.join(work, 'repo');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    src = path.join(work, 'data');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    for (const [n, text] of [['keep.txt', 'keep\n'], ['change.txt', 'snapshot version\n'], ['newer.txt', 'snapshot newer.txt\n'], ['sub/deep.txt', 'deep\n'], ['a.log', 'log a\n'], ['sub/B.LOG', 'log b\n']]) {
      fs.writeFileSync(path.join(src, n), text);
    }
    // 8 MiB, fully allocated, with 6 MiB of zeros in the middle.
    fs.writeFileSync(path.join(src, 'zeros.bin'), Buffer.concat([crypto.randomBytes(MiB), Buffer.alloc(6 * MiB), crypto.randomBytes(MiB)]));
    const init = await cli(['init']);
    assert.equal(init.status, 0, init.why);
    snapshot = okSummary(await cli(['backup', src])).snapshot;
  });

  after(function () {
    if (work) execFileSync('rm', ['-rf', '--', work]);
  });

  const ALL = ['data', 'data/a.log', 'data/change.txt', 'data/keep.txt', 'data/newer.txt', 'data/sub', 'data/sub/B.LOG', 'data/sub/deep.txt', 'data/zeros.bin'];

  it('--dry-run writes nothing and lists what it would do', async function () {
    const target = path.join(work, 'dry');
    const r = await restore(target, '--dry-run');
    const s = okSummary(r);
    assert.equal(s.dry_run, true);
    assert.ok(!fs.existsSync(target), 'not even the target directory');
    const actions = r.lines.filter((l) => l.type === 'verbose_status');
    assert.deepEqual(actions.map((l) => l.item).sort(), ALL);
    assert.ok(actions.every((l) => l.action === 'restored'));
    assert.equal(s.files, 7);
  });

  /** A restored target, then changed the way a user would. */
  async function prepared(name) {
    const target = path.join(work, name);
    okSummary(await restore(target));
    const d = path.join(target, 'data');
    fs.writeFileSync(path.join(d, 'change.txt'), 'changed in the target, longer\n');
    fs.utimesSync(path.join(d, 'change.txt'), OLD, OLD); // older than the snapshot's
    fs.writeFileSync(path.join(d, 'newer.txt'), 'edited later\n');
    const future = new Date(Date.now() + 86_400_000);
    fs.utimesSync(path.join(d, 'newer.txt'), future, future); // newer than the snapshot's
    fs.writeFileSync(path.join(d, 'extra.txt'), 'not in the snapshot\n');
    fs.mkdirSync(path.join(d, 'extra-dir'));
    fs.writeFileSync(path.join(d, 'extra-dir', 'x'), 'x');
    fs.writeFileSync(path.join(d, 'extra.log'), 'excluded\n');
    const inode = (n) => fs.statSync(path.join(d, n)).ino;
    return { target, d, inode, before: Object.fromEntries(['keep.txt', 'change.txt', 'newer.txt'].map((n) => [n, inode(n)])) };
  }
  const text = (d, n) => fs.readFileSync(path.join(d, n), 'utf8');

  it('--overwrite never keeps every existing file', async function () {
    const t = await prepared('never');
    const s = okSummary(await restore(t.target, '--overwrite', 'never'));
    assert.equal(text(t.d, 'change.txt'), 'changed in the target, longer\n');
    assert.equal(text(t.d, 'newer.txt'), 'edited later\n');
    assert.equal(t.inode('keep.txt'), t.before['keep.txt']);
    assert.equal(s.skipped, 7, 'every file (the directories are merged)');
  });

  it('--overwrite if-newer replaces only what the snapshot has newer', async function () {
    const t = await prepared('if-newer');
    okSummary(await restore(t.target, '--overwrite', 'if-newer'));
    assert.equal(text(t.d, 'change.txt'), 'snapshot version\n', 'the target copy was older');
    assert.equal(text(t.d, 'newer.txt'), 'edited later\n', 'the target copy was newer');
  });

  it('--overwrite if-changed (the default) rewrites what differs and leaves identical files alone', async function () {
    const t = await prepared('if-changed');
    const s = okSummary(await restore(t.target));
    assert.equal(text(t.d, 'change.txt'), 'snapshot version\n');
    assert.equal(text(t.d, 'newer.txt'), 'snapshot newer.txt\n');
    assert.equal(t.inode('keep.txt'), t.before['keep.txt'], 'same type, size and mtime: not rewritten');
    assert.notEqual(t.inode('change.txt'), t.before['change.txt']);
    assert.ok(s.unchanged >= 5, JSON.stringify(s));
    assert.equal(text(t.d, 'extra.txt'), 'not in the snapshot\n', 'without --delete extra files stay');
  });

  it('--overwrite always rewrites every file', async function () {
    const t = await prepared('always');
    okSummary(await restore(t.target, '--overwrite', 'always'));
    assert.notEqual(t.inode('keep.txt'), t.before['keep.txt']);
    assert.equal(text(t.d, 'newer.txt'), 'snapshot newer.txt\n');
  });

  it('--delete removes what the snapshot does not have (--dry-run first lists it), but not what --exclude leaves out', async function () {
    const t = await prepared('delete');
    const dry = await restore(t.target, '--delete', '--dry-run', '--exclude', '*.log');
    okSummary(dry);
    const listed = dry.lines.filter((l) => l.type === 'verbose_status' && l.action === 'deleted').map((l) => l.item).sort();
    assert.deepEqual(listed, ['data/extra-dir', 'data/extra.txt']);
    assert.ok(fs.existsSync(path.join(t.d, 'extra.txt')), 'a dry run deletes nothing');
    const s = okSummary(await restore(t.target, '--delete', '--exclude', '*.log'));
    assert.equal(s.deleted, 2);
    assert.deepEqual(listing(t.target), [...ALL, 'data/extra.log'].sort(), 'extra.log is excluded: left alone');
  });

  it('--verify reads every restored file back', async function () {
    const s = okSummary(await restore(path.join(work, 'verify'), '--verify'));
    assert.equal(s.verified, 7);
  });

  it('--include, --exclude and --iinclude select with restic patterns', async function () {
    const inc = path.join(work, 'include');
    okSummary(await restore(inc, '--include', '/data/sub/deep.txt'));
    assert.deepEqual(listing(inc), ['data', 'data/sub', 'data/sub/deep.txt']);
    const exc = path.join(work, 'exclude');
    okSummary(await restore(exc, '--exclude', '*.log', '--exclude', '/data/zeros.bin'));
    assert.deepEqual(listing(exc), ALL.filter((p) => !p.endsWith('.log') && !p.includes('zeros')), 'patterns are case-sensitive: B.LOG stays');
    const iinc = path.join(work, 'iinclude');
    okSummary(await restore(iinc, '--iinclude', '*.log'));
    assert.deepEqual(listing(iinc), ['data', 'data/a.log', 'data/sub', 'data/sub/B.LOG']);
    const both = await restore(path.join(work, 'both'), '--include', 'x', '--exclude', 'y');
    assert.equal(both.status, 2, both.why);
  });

  it('--sparse leaves runs of zeros as holes in a file that had none', async function () {
    const dense = path.join(work, 'dense');
    okSummary(await restore(dense, '--include', '/data/zeros.bin'));
    const sparse = path.join(work, 'sparse');
    okSummary(await restore(sparse, '--include', '/data/zeros.bin', '--sparse'));
    const blocks = (t) => fs.statSync(path.join(t, 'data', 'zeros.bin')).blocks * 512;
    assert.ok(blocks(dense) >= 8 * MiB, `without --sparse: allocated (${blocks(dense)})`);
    assert.ok(blocks(sparse) <= 2 * MiB + 64 * 1024, `with --sparse: the zeros are holes (${blocks(sparse)})`);
    assert.deepEqual(fs.readFileSync(path.join(sparse, 'data', 'zeros.bin')), fs.readFileSync(path.join(src, 'zeros.bin')));
  });
});
