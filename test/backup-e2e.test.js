// The backup pipeline end to end (issue 5, deliverable 6), through the real `shmpipe` CLI
// (ts-lib/dist/cli.js) and the real sidecar binary (target/release/shmpipe-sidecar), which the
// CLI starts privately on `--repo DIR`: a generated tree (0 B .. 100 MiB files, symlinks, empty
// directories, odd and non-UTF-8 names, modes, sub-second mtimes) is backed up and restored
// bit-exact and metadata-exact; `--include` restores a subtree; an unchanged second backup and a
// copy of the tree elsewhere dedup (< 1 % growth of the repository on disk); an incremental
// backup reports exactly what changed; a wrong password fails cleanly and writes nothing.
//
// The other failure cases (a corrupted pack, a sidecar killed mid-backup, unreadable files)
// are in backup-e2e-faults.test.js; the S3 round trip in backup-e2e-s3.test.js.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');
const { makeTree, manifest, assertSameManifest, diskUsage, listing, removeTree, sha256File, MiB } = require('./helpers/tree');

const PASSWORD = 'correct horse battery staple — e2e';
const BIG = 100 * MiB;

/** The part of a manifest under `prefix` (keys re-rooted at it; '.' for prefix itself). */
function subManifest(m, prefix) {
  const out = {};
  for (const [k, v] of Object.entries(m)) {
    if (k === prefix) out['.'] = v;
    else if (k.startsWith(prefix + '/')) out[k.slice(prefix.length + 1)] = v;
  }
  return out;
}

describe('backup e2e: round trip of a generated tree through the shmpipe CLI', function () {
  this.timeout(240_000);
  let work;
  let src;
  let repo;
  let env;
  let tree;
  let first; // the first backup's summary
  let second; // the unchanged second backup's summary
  const cli = (args, extra = {}) => runCli([...args, '--repo', repo], { env: { ...env, ...extra } });

  before(function () {
    this.timeout(120_000);
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-backup-e2e-'));
    src = path.join(work, 'src');
    repo = path.join(work, 'repo');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    tree = makeTree(src, { bigBytes: BIG });
  });

  after(function () {
    if (work) removeTree(work);
  });

  it('init creates the repository in the --repo directory (and nothing under HOME)', async function () {
    const r = await cli(['init', '--json']);
    assert.equal(r.status, 0, r.why);
    assert.equal(r.lines.length, 1, r.why);
    assert.equal(r.lines[0].type, 'init');
    assert.equal(r.lines[0].repository, `file://${repo}`);
    assert.ok(fs.existsSync(path.join(repo, 'config')), 'config in the repository directory');
    // Under HOME only the metadata cache, where restic keeps its own (~/.cache/<tool>).
    const home = path.join(work, 'home');
    assert.deepEqual(fs.readdirSync(home), ['.cache'], 'nothing written under HOME but the cache');
    assert.deepEqual(fs.readdirSync(path.join(home, '.cache')), ['shmpipe'], 'the cache is ~/.cache/shmpipe');
    const again = await cli(['init']);
    assert.equal(again.status, 1, again.why);
    assert.match(again.stderr, /already exists/);
    // --exists-ok (deployments run init on every start): fine, if the password opens it.
    const ok = await cli(['init', '--exists-ok', '--json']);
    assert.equal(ok.status, 0, ok.why);
    assert.deepEqual(ok.lines, [{ type: 'init', repository: `file://${repo}`, existed: true }]);
    const wrong = await cli(['init', '--exists-ok'], { SHMPIPE_PASSWORD: 'not the password' });
    assert.equal(wrong.status, 1, wrong.why);
    assert.match(wrong.stderr, /wrong password/);
  });

  it('backs up the tree: --json progress lines, then a summary with exact counts', async function () {
    const r = await cli(['backup', src, '--json']);
    const s = okSummary(r);
    first = s;
    const before = r.lines.slice(0, -1);
    assert.ok(before.length >= 1, `at least one progress line: ${r.why}`);
    assert.deepEqual([...new Set(before.map((l) => l.type))], ['progress'], 'only progress lines before the summary');
    assert.match(s.snapshot, /^[0-9a-f]{64}$/);
    assert.equal(s.parent, null);
    assert.equal(s.files_new, tree.fileCount);
    assert.equal(s.files_changed, 0);
    assert.equal(s.files_unchanged, 0);
    assert.equal(s.dirs, tree.dirCount);
    assert.equal(s.others, tree.symlinkCount, 'symlinks are counted as others');
    assert.equal(s.entries, tree.fileCount + tree.dirCount + tree.symlinkCount);
    assert.equal(s.unreadable, 0);
    assert.equal(s.bytes_read, tree.totalBytes);
    // What is stored: the random bytes once (the 4 MiB + 1 duplicate dedups, the 3 MiB text
    // compresses to almost nothing), plus encryption and pack overhead.
    const random = tree.totalBytes - (4 * MiB + 1) - (3 * MiB + 17);
    assert.ok(s.bytes_added >= random, `bytes_added ${s.bytes_added} ≥ the random bytes ${random}`);
    assert.ok(s.bytes_added < random * 1.01 + 256 * 1024, `bytes_added ${s.bytes_added} ≈ the random bytes ${random}`);
    const repoBytes = diskUsage(repo).bytes;
    assert.ok(repoBytes >= s.bytes_added && repoBytes < s.bytes_added + 64 * 1024, `repository ${repoBytes} bytes on disk vs bytes_added ${s.bytes_added}`);
    for (const k of ['duration_ms', 'mbps']) assert.ok(typeof s[k] === 'number' && s[k] > 0, `${k} = ${s[k]}`);
    const last = before[before.length - 1];
    assert.equal(last.op, 'backup');
    assert.equal(last.bytes, tree.totalBytes, 'the last progress line counts every byte');
    assert.equal(last.files_total, s.entries);

    const list = await cli(['snapshots', '--json']);
    assert.equal(list.status, 0, list.why);
    const snaps = JSON.parse(list.stdout);
    assert.equal(snaps.length, 1);
    assert.equal(snaps[0].id, s.snapshot);
    assert.deepEqual(snaps[0].paths, [src]);
    assert.equal(snaps[0].entries, s.entries);
  });

  it('restore latest is bit-exact and metadata-exact (type, mode, owner, mtime ±1 µs, symlink targets, empty dirs)', async function () {
    const target = path.join(work, 'restore-all');
    const r = await runCli(['restore', 'latest', target, '--json', '--repo', repo, '--password-file', writePasswordFile(work, PASSWORD)], { env: { ...env, SHMPIPE_PASSWORD: '' } });
    const s = okSummary(r);
    assert.equal(s.snapshot, first.snapshot);
    assert.equal(s.files, tree.fileCount);
    assert.equal(s.dirs, tree.dirCount);
    assert.equal(s.symlinks, tree.symlinkCount);
    assert.equal(s.failed, 0);
    assert.equal(s.skipped, 0);
    assert.equal(s.bytes, tree.totalBytes);
    assert.deepEqual(fs.readdirSync(target), ['src'], 'the snapshot root is restored under its name');
    const got = manifest(path.join(target, 'src'));
    assertSameManifest(got, tree.manifest);
    // Spot checks that do not depend on the manifest code.
    assert.equal(sha256File(path.join(target, 'src', 'files', 'big.bin')), tree.files['files/big.bin'].sha);
    assert.equal(fs.statSync(path.join(target, 'src', 'files', 'big.bin')).size, BIG);
    assert.equal(fs.readlinkSync(path.join(target, 'src', 'links', 'dangling-relative')), 'does/not/exist');
    assert.deepEqual(fs.readdirSync(path.join(target, 'src', 'deep', 'a', 'b', 'c', 'd', 'e', 'leaf')), []);
    assert.equal(fs.statSync(path.join(target, 'src', 'empty-0700')).mode & 0o7777, 0o700);
    assert.equal(fs.statSync(path.join(target, 'src', 'modes', 'setuid.bin')).mode & 0o7777, 0o4755);
    assert.equal(fs.statSync(path.join(target, 'src', 'modes', 'readonly.txt')).mtimeMs, 86_400_500);
    // No temporary files left behind.
    assert.deepEqual(Object.keys(got).filter((k) => k.includes('.shmpipe-restore-')), []);
    removeTree(target);
  });

  it('restore --include restores just that subtree (and the directories above it)', async function () {
    const target = path.join(work, 'restore-include');
    const r = await cli(['restore', 'latest', target, '--include', 'src/names', '--json']);
    const s = okSummary(r);
    const names = subManifest(tree.manifest, 'names');
    const files = Object.values(names).filter((e) => e.type === 'file');
    assert.equal(s.files, files.length);
    assert.equal(s.bytes, files.reduce((a, e) => a + e.size, 0));
    assert.equal(s.failed, 0);
    const got = manifest(target);
    assert.deepEqual(Object.keys(got).filter((k) => k !== '.' && k !== 'src' && !k.startsWith('src/names')), [], 'nothing outside src/names');
    assertSameManifest(subManifest(got, 'src/names'), names, 0n, 'src/names');

    // A single file, given with a leading slash.
    const one = path.join(work, 'restore-one');
    const r1 = await cli(['restore', first.snapshot.slice(0, 12), one, '--include', '/src/files/4m+1.bin', '--json']);
    const s1 = okSummary(r1);
    assert.equal(s1.files, 1);
    assert.equal(s1.bytes, 4 * MiB + 1);
    assert.deepEqual(Object.keys(manifest(one)).sort(), ['.', 'src', 'src/files', 'src/files/4m+1.bin']);
    assert.equal(sha256File(path.join(one, 'src', 'files', '4m+1.bin')), tree.files['files/4m+1.bin'].sha);
    removeTree(target);
    removeTree(one);
  });

  it('a second backup of unchanged data adds < 1 % to the repository and reports every file unchanged', async function () {
    const before = diskUsage(repo).bytes;
    const r = await cli(['backup', src, '--json']);
    const s = okSummary(r);
    second = s;
    const after = diskUsage(repo).bytes;
    assert.equal(s.parent, first.snapshot);
    assert.equal(s.files_unchanged, tree.fileCount);
    assert.equal(s.files_new, 0);
    assert.equal(s.files_changed, 0);
    assert.equal(s.bytes_read, 0, 'unchanged files are not read again');
    assert.ok(s.bytes_added_plain < 64 * 1024, `no new data, only the snapshot's tree: ${JSON.stringify(s)}`);
    assert.ok(after - before < before * 0.01, `the repository grew by ${after - before} bytes of ${before}`);
    assert.ok(after - before >= s.bytes_added, `bytes_added ${s.bytes_added} is on disk (grew ${after - before})`);

    assert.deepEqual(fs.existsSync(path.join(repo, 'locks')) ? fs.readdirSync(path.join(repo, 'locks')) : [], [], 'no lock left after the commands');
  });

  it('stats: objects by kind as the store lists them, and what the backups stored', async function () {
    assert.ok(second, 'needs the second backup');
    const after = diskUsage(repo).bytes;
    const s = second;
    const st = await cli(['stats', '--json']);
    assert.equal(st.status, 0, st.why);
    const doc = JSON.parse(st.stdout);
    assert.equal(doc.snapshots, 2);
    // Object sizes as the store lists them; the file store adds a small trailer per file.
    assert.deepEqual(Object.keys(doc.by_kind).sort(), ['config', 'index', 'packs', 'snapshots'], JSON.stringify(doc.by_kind));
    assert.ok(doc.bytes <= after && after - doc.bytes <= 64 * doc.objects, `stats ${doc.bytes} bytes in ${doc.objects} objects, on disk ${after}`);
    assert.equal(doc.bytes_read, tree.totalBytes, 'the second backup read nothing');
    // What the backups stored (their summaries' bytes_added, less each snapshot object's own
    // size, which its counts cannot include).
    const stored = first.bytes_added + s.bytes_added;
    const snaps = JSON.parse((await cli(['snapshots', '--json'])).stdout);
    // The first wrote 8 packs and an index; the second nothing but its own snapshot object.
    const recorded = snaps.map((x) => x.counts.bytes_added_packed);
    assert.ok(recorded[0] > first.bytes_added - 4096 && recorded[0] <= first.bytes_added, `the first snapshot records what its backup stored (${first.bytes_added}): ${JSON.stringify(snaps[0].counts)}`);
    assert.ok(recorded[1] <= s.bytes_added, JSON.stringify(snaps[1].counts));
    assert.ok(doc.bytes_stored <= stored && doc.bytes_stored >= stored - 2 * 4096, `stats bytes_stored ${doc.bytes_stored}, the summaries say ${stored}`);
    assert.equal(typeof doc.compression_ratio, 'number', JSON.stringify(doc));
  });

  it('a copy of the tree at another path dedups by content (no parent, every file read)', async function () {
    const copy = path.join(work, 'elsewhere', 'copy-of-src');
    fs.mkdirSync(path.dirname(copy));
    // cp -a: fs.cpSync cannot copy names that are not UTF-8.
    execFileSync('cp', ['-a', src, copy]);
    const before = diskUsage(repo).bytes;
    const r = await cli(['backup', copy, '--json']);
    const s = okSummary(r);
    const after = diskUsage(repo).bytes;
    assert.equal(s.parent, null, 'other paths: no parent snapshot');
    assert.equal(s.files_new, tree.fileCount);
    assert.equal(s.bytes_read, tree.totalBytes, 'every file read');
    assert.ok(s.bytes_added_plain < 0.01 * tree.totalBytes, `new plaintext ${s.bytes_added_plain} bytes of ${tree.totalBytes}`);
    assert.ok(after - before < before * 0.01, `the repository grew by ${after - before} bytes of ${before}`);
    removeTree(path.dirname(copy));
  });

  it('incremental: one modified file is reported changed, the rest unchanged, and the newest snapshot restores the new content', async function () {
    const f = path.join(src, 'files', '4m.bin');
    const fd = fs.openSync(f, 'r+');
    fs.writeSync(fd, Buffer.from('modified in the middle'), 0, 22, 2 * MiB);
    fs.closeSync(fd);
    const r = await cli(['backup', src, '--json']);
    const s = okSummary(r);
    assert.equal(s.files_changed, 1);
    assert.equal(s.files_unchanged, tree.fileCount - 1);
    assert.equal(s.files_new, 0);
    assert.equal(s.bytes_read, 4 * MiB, 'only the changed file is read');
    // Content-defined chunks: only the chunk(s) around the change are new.
    assert.ok(s.bytes_added_plain > 0 && s.bytes_added_plain <= 4 * MiB, `new plaintext ${s.bytes_added_plain}`);

    // Only the mtime changes: still "changed" (it is read again), but no new data.
    const t = path.join(src, 'files', '1m.bin');
    fs.utimesSync(t, 1_234_567_890.5, 1_234_567_890.5);
    const r2 = await cli(['backup', src, '--json']);
    const s2 = okSummary(r2);
    assert.equal(s2.parent, s.snapshot);
    assert.equal(s2.files_changed, 1);
    assert.equal(s2.files_unchanged, tree.fileCount - 1);
    assert.equal(s2.bytes_read, MiB);
    assert.ok(s2.bytes_added_plain < 64 * 1024, `a touched file adds no data: ${JSON.stringify(s2)}`);

    const list = JSON.parse((await cli(['snapshots', '--json'])).stdout);
    assert.equal(list.length, 5);
    assert.equal(list[list.length - 1].id, s2.snapshot);

    const target = path.join(work, 'restore-newest');
    const rr = await cli(['restore', 'latest', target, '--json']);
    const sr = okSummary(rr);
    assert.equal(sr.snapshot, s2.snapshot);
    assertSameManifest(manifest(path.join(target, 'src')), manifest(src), 0n, 'newest snapshot');
    const buf = fs.readFileSync(path.join(target, 'src', 'files', '4m.bin'));
    assert.equal(buf.subarray(2 * MiB, 2 * MiB + 22).toString(), 'modified in the middle');
    removeTree(target);

    // The first snapshot still has the old content.
    const old = path.join(work, 'restore-old');
    const ro = await cli(['restore', first.snapshot, old, '--include', 'src/files/4m.bin', '--json']);
    okSummary(ro);
    assert.equal(sha256File(path.join(old, 'src', 'files', '4m.bin')), tree.files['files/4m.bin'].sha);
    removeTree(old);
  });

  it('a wrong password: a clear error naming the password, exit 1, nothing written', async function () {
    const before = listing(repo);
    const target = path.join(work, 'restore-wrong-password');
    const attempts = [
      ['backup', src, '--json'],
      ['backup', src],
      ['restore', 'latest', target],
      ['snapshots'],
      ['check'],
      ['stats'],
    ];
    for (const args of attempts) {
      const r = await cli(args, { SHMPIPE_PASSWORD: 'not the password' });
      assert.equal(r.status, 1, r.why);
      assert.match(r.stderr, /wrong password/i, r.why);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace: ${r.why}`);
      assert.doesNotMatch(r.stdout, /"type":"summary"/, r.why);
    }
    const viaFile = await runCli(['backup', src, '--repo', repo, '--password-file', writePasswordFile(work, 'wrong again')], { env: { ...env, SHMPIPE_PASSWORD: '' } });
    assert.equal(viaFile.status, 1, viaFile.why);
    assert.match(viaFile.stderr, /wrong password/i);
    assert.deepEqual(listing(repo), before, 'the repository is unchanged (no lock, pack, index or snapshot left)');
    assert.equal(fs.existsSync(target), false, 'the restore target was not created');

    // No password at all, without a terminal: a clear error too.
    const none = await runCli(['snapshots', '--repo', repo], { env: { ...env, SHMPIPE_PASSWORD: '' } });
    assert.equal(none.status, 1, none.why);
    assert.match(none.stderr, /password/i);
  });
});

function writePasswordFile(work, password) {
  const f = path.join(work, `password-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(f, `${password}\n`, { mode: 0o600 });
  return f;
}
