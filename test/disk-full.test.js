// Disk full: a file:// repository on a small filesystem of its own (a 96 MiB tmpfs the test
// mounts; as root only — without the right to mount it is skipped with a message), filled
// until a 40 MiB backup cannot fit. The backup fails with one clear line (exit 1, the store
// error naming the full disk), commits no snapshot and leaves no partial object (no staging
// file, nothing `check --read-data` objects to); once space is freed, the same backup
// completes and restores bit-exact.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');
const { manifest, assertSameManifest, removeTree, writeRandom, MiB } = require('./helpers/tree');

const PASSWORD = 'disk full';

/** Every file under `dir` (relative paths). */
function filesUnder(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

/** Mounts a tmpfs of `bytes` on `dir`; null if that is allowed, else the reason it is not. */
function mountSmall(dir, bytes) {
  if (process.getuid() !== 0) return 'needs root to mount a small tmpfs';
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'shmpipe-disk-full', dir], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return `mount -t tmpfs failed: ${(r.error?.message ?? r.stderr).trim()}`;
  return null;
}

describe('disk full: a file:// repository on a filesystem that fills up', function () {
  this.timeout(180_000);
  let work;
  let small;
  let mounted = false;
  let env;
  let src;
  let repo;
  let filler;
  const cli = (args) => runCli([...args, '--repo', repo], { env });

  before(function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-disk-full-'));
    small = path.join(work, 'small');
    fs.mkdirSync(small);
    const why = mountSmall(small, 96 * MiB);
    if (why !== null) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    mounted = true;
    repo = path.join(small, 'repo');
    src = path.join(work, 'src');
    filler = path.join(small, 'filler');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    fs.mkdirSync(path.join(src, 'data'), { recursive: true });
    for (let i = 0; i < 4; i++) writeRandom(path.join(src, 'data', `part-${i}.bin`), 10 * MiB, `disk-full-${i}`);
    fs.writeFileSync(path.join(src, 'note.txt'), 'small and compressible\n'.repeat(100));
  });

  after(function () {
    if (mounted) execFileSync('umount', ['-l', small]);
    if (work) removeTree(work);
  });

  it('the backup fails with a clear error and leaves the repository consistent; it completes once space is freed', async function () {
    const init = await cli(['init', '--json']);
    assert.equal(init.status, 0, init.why);
    const initial = filesUnder(repo);
    // Leave ~20 MiB free: less than the 40 MiB of incompressible data.
    const free = () => {
      const s = fs.statfsSync(small);
      return s.bavail * s.bsize;
    };
    writeRandom(filler, free() - 20 * MiB, 'filler');
    assert.ok(free() < 24 * MiB, `free: ${free()}`);

    const r = await cli(['backup', src, '--json']);
    assert.equal(r.status, 1, r.why);
    assert.equal(r.summary, undefined, 'no summary: nothing committed');
    assert.match(r.stderr, /no space left on device/i, `the full disk is named: ${r.why}`);
    assert.match(r.stderr, /SHMPIPE_E_STORE/, r.why);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.why}`);

    // Consistent: no snapshot, no staging file (`<key>#<n>`), and what packs made it are
    // whole (check --read-data reads every one).
    const left = filesUnder(repo);
    assert.deepEqual(left.filter((f) => f.includes('#')), [], 'no partial (staging) file left');
    assert.deepEqual(left.filter((f) => f.startsWith('snapshots/')), initial.filter((f) => f.startsWith('snapshots/')));
    const snaps = await cli(['snapshots', '--json']);
    assert.equal(snaps.status, 0, snaps.why);
    assert.deepEqual(JSON.parse(snaps.stdout), []);
    const c = await cli(['check', '--read-data', '--json']);
    assert.equal(c.status, 0, c.why);
    assert.equal(c.lines[0].ok, true, c.why);
    assert.deepEqual(c.lines[0].errors, []);

    fs.rmSync(filler);
    const b = okSummary(await cli(['backup', src, '--json']));
    assert.equal(b.files_new, 5);
    assert.equal(b.bytes_read, 40 * MiB + 'small and compressible\n'.length * 100);
    const target = path.join(work, 'restore');
    okSummary(await cli(['restore', 'latest', target, '--json']));
    assertSameManifest(manifest(path.join(target, 'src')), manifest(src));
    const c2 = await cli(['check', '--read-data', '--json']);
    assert.equal(c2.status, 0, c2.why);
    assert.equal(c2.lines[0].snapshots, 1);
  });
});
