// The backup pipeline end to end at a larger count of entries and with concurrent writers,
// through the real `shmpipe` CLI and sidecar binary:
// - 20 000 small files with long names: more entry lines than one 4 MiB slot holds (several
//   ADD_ENTRIES batches, several tree blobs, paged ENTRIES_NEXT on restore and for the parent
//   of an incremental backup), restored bit-exact; the unchanged re-backup reads nothing;
// - two backups into the same repository at the same time (the format is append-only: they
//   must not corrupt each other), both restored bit-exact, `check --read-data` clean.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');
const { manifest, assertSameManifest, removeTree, writeRandom, MiB } = require('./helpers/tree');

const PASSWORD = 'e2e scale password';

describe('backup e2e: 20 000 small files', function () {
  this.timeout(240_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  it('backs up, re-backs up unchanged and restores them all bit-exact', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-many-'));
    const src = path.join(work, 'src');
    const repo = path.join(work, 'repo');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    const N = 20_000;
    const pad = 'a-fairly-long-directory-name-to-make-entry-lines-longer';
    let bytes = 0;
    for (let d = 0; d < 100; d++) {
      const dir = path.join(src, `${pad}-${d}`);
      fs.mkdirSync(dir, { recursive: true });
      for (let f = 0; f < N / 100; f++) {
        const body = `file ${d}/${f}\n`.repeat(1 + (f % 7));
        fs.writeFileSync(path.join(dir, `small-file-with-a-long-name-number-${String(f).padStart(5, '0')}.txt`), body);
        bytes += body.length;
      }
    }
    assert.equal((await runCli(['init', '--repo', repo], { env })).status, 0);
    const b1 = await runCli(['backup', src, '--repo', repo, '--json'], { env });
    const s = okSummary(b1);
    assert.equal(s.files_new, N);
    assert.equal(s.dirs, 101);
    assert.equal(s.entries, N + 101);
    assert.equal(s.bytes_read, bytes);

    const b2 = await runCli(['backup', src, '--repo', repo, '--json'], { env });
    const s2 = okSummary(b2);
    assert.equal(s2.parent, s.snapshot);
    assert.equal(s2.files_unchanged, N);
    assert.equal(s2.bytes_read, 0);
    assert.equal(s2.entries, N + 101);

    const target = path.join(work, 'restore');
    const rr = await runCli(['restore', 'latest', target, '--repo', repo, '--json'], { env });
    const r = okSummary(rr);
    if (process.env.SHMPIPE_E2E_VERBOSE) console.log(`      backup ${b1.ms} ms, unchanged backup ${b2.ms} ms, restore ${rr.ms} ms`);
    assert.equal(r.files, N);
    assert.equal(r.dirs, 101);
    assert.equal(r.bytes, bytes);
    assertSameManifest(manifest(path.join(target, 'src')), manifest(src));
  });
});

describe('backup e2e: two backups into one repository at the same time', function () {
  this.timeout(240_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  it('both commit, both restore bit-exact, check --read-data is clean', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-e2e-concurrent-'));
    const repo = path.join(work, 'repo');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    const roots = ['alpha', 'beta'].map((n) => path.join(work, n));
    for (const [i, root] of roots.entries()) {
      fs.mkdirSync(root);
      for (let f = 0; f < 6; f++) writeRandom(path.join(root, `own-${f}.bin`), 5 * MiB + f, `${i}-${f}`);
      // The same 8 MiB in both: each backup may store it, neither may lose it.
      writeRandom(path.join(root, 'shared.bin'), 8 * MiB, 'shared');
    }
    assert.equal((await runCli(['init', '--repo', repo], { env })).status, 0);
    const [a, b] = await Promise.all(roots.map((root) => runCli(['backup', root, '--repo', repo, '--json'], { env })));
    const sa = okSummary(a);
    const sb = okSummary(b);
    assert.notEqual(sa.snapshot, sb.snapshot);
    for (const s of [sa, sb]) {
      assert.equal(s.files_new, 7);
      assert.equal(s.bytes_read, 6 * 5 * MiB + 15 + 8 * MiB);
    }
    const snaps = JSON.parse((await runCli(['snapshots', '--repo', repo, '--json'], { env })).stdout);
    assert.deepEqual(snaps.map((x) => x.id).sort(), [sa.snapshot, sb.snapshot].sort());
    const check = await runCli(['check', '--read-data', '--repo', repo, '--json'], { env });
    assert.equal(check.status, 0, check.why);
    assert.deepEqual(check.lines[0].errors, []);
    assert.deepEqual(check.lines[0].affected_files, []);
    for (const [i, s] of [sa, sb].entries()) {
      const target = path.join(work, `restore-${i}`);
      okSummary(await runCli(['restore', s.snapshot, target, '--repo', repo, '--json'], { env }));
      const name = path.basename(roots[i]);
      assertSameManifest(manifest(path.join(target, name)), manifest(roots[i]));
    }
  });
});
