// backup's selection flags through the real CLI and sidecar: --exclude and friends, tag files
// (CACHEDIR.TAG valid and not), --exclude-larger-than, --one-file-system across a tmpfs mounted
// in a private mount namespace (skipped where that is not allowed), --files-from and its
// verbatim and raw variants, and --dry-run (writes nothing). What a snapshot holds is checked
// by restoring it and listing the result.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { CLI, cliEnv, runCli } = require('./helpers/cli');

/** Every path under `root`, relative, sorted; directories end in `/`. */
function tree(root) {
  const out = [];
  (function walk(rel) {
    for (const n of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel === '' ? n : `${rel}/${n}`;
      const dir = fs.lstatSync(path.join(root, r)).isDirectory();
      out.push(dir ? `${r}/` : r);
      if (dir) walk(r);
    }
  })('');
  return out;
}

function write(root, rel, data = rel) {
  const f = path.join(root, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, data);
}

describe('backup: excludes, includes, --one-file-system, --dry-run', function () {
  this.timeout(300_000);
  let work;
  let env;
  let repo;
  let src;
  let n = 0;

  const cli = async (args, o = {}) => runCli([...args, '--repo', repo], { env, ...o });
  /** Backs up with `args`, restores the snapshot, and returns the restored tree below the root. */
  async function backedUp(args, o = {}) {
    const b = await cli(['backup', '--json', ...args], o);
    assert.equal(b.status, o.status ?? 0, b.why);
    const snapshot = b.summary.snapshot;
    const target = path.join(work, `restore-${n++}`);
    const r = await cli(['restore', snapshot, target]);
    assert.equal(r.status, 0, r.why);
    return { tree: tree(target), backup: b };
  }

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-select-'));
    env = cliEnv(work, { SHMPIPE_PASSWORD: 'select-test', EXCLUDED_NAME: 'env.txt' });
    repo = path.join(work, 'repo');
    src = path.join(work, 'src');
    for (const f of ['keep.txt', 'main.c', 'main.go', 'Photo.JPG', 'env.txt', 'doc/readme', 'foo/bar', 'foo/x/y/bar/deep', 'foo/keep', 'sub/main.c.txt']) write(src, f);
    write(src, 'big.bin', Buffer.alloc(1024 * 1024 + 1));
    write(src, 'edge.bin', Buffer.alloc(1024 * 1024));
    write(src, 'cache/CACHEDIR.TAG', 'Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n');
    write(src, 'cache/blob');
    write(src, 'cache/sub/blob');
    write(src, 'notcache/CACHEDIR.TAG', 'Signature: 0000000000000000000000000000000\n');
    write(src, 'notcache/blob');
    write(src, 'marked/.nobackup', '');
    write(src, 'marked/data');
    write(src, 'header/.tag', 'HEADER and more');
    write(src, 'header/data');
    write(src, 'wrongheader/.tag', 'HEAD');
    write(src, 'wrongheader/data');
    const init = await cli(['init']);
    assert.equal(init.status, 0, init.why);
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('--exclude, --iexclude, --exclude-file (comments, $VAR), tag files, CACHEDIR.TAG, --exclude-larger-than', async function () {
    const excludes = path.join(work, 'excludes.txt');
    fs.writeFileSync(excludes, '# comment line\n\n  foo/**/bar  \n$EXCLUDED_NAME\n');
    const { tree: t, backup } = await backedUp([
      src,
      '--exclude', '*.c',
      '-e', '*.go',
      '--iexclude', '*.jpg',
      '--exclude-file', excludes,
      '--exclude-caches',
      '--exclude-if-present', '.nobackup',
      '--exclude-if-present', '.tag:HEADER',
      '--exclude-larger-than', '1M',
    ]);
    assert.deepEqual(t, [
      'src/',
      'src/cache/',
      'src/cache/CACHEDIR.TAG', // the tag file itself stays
      'src/doc/',
      'src/doc/readme',
      'src/edge.bin', // exactly 1 MiB is not larger than 1M
      'src/foo/',
      'src/foo/keep',
      'src/foo/x/',
      'src/foo/x/y/',
      'src/header/',
      'src/header/.tag',
      'src/keep.txt',
      'src/marked/',
      'src/marked/.nobackup',
      'src/notcache/', // a CACHEDIR.TAG without the signature does not count
      'src/notcache/CACHEDIR.TAG',
      'src/notcache/blob',
      'src/sub/',
      'src/sub/main.c.txt',
      'src/wrongheader/',
      'src/wrongheader/.tag',
      'src/wrongheader/data',
    ]);
    assert.match(backup.stderr, /warning: exclusion tag file .*notcache\/CACHEDIR.TAG does not start with the expected signature/);
    assert.match(backup.stderr, /warning: exclusion tag file .*wrongheader\/.tag/);
  });

  it('a path named on the command line is backed up even if a pattern matches it (not what is below it)', async function () {
    const { tree: t } = await backedUp([path.join(src, 'main.c'), path.join(src, 'doc'), '--exclude', '*.c', '--exclude', 'doc']);
    // restic: "Content inside a directory you back up is still filtered": doc/readme matches `doc`.
    assert.deepEqual(t, ['doc/', 'main.c']);
  });

  it('! patterns take back earlier matches', async function () {
    const { tree: t } = await backedUp([src, '--exclude', `${src}/*`, '--exclude', `!${src}/doc`, '--exclude', `!${src}/keep.txt`]);
    assert.deepEqual(t, ['src/', 'src/doc/', 'src/doc/readme', 'src/keep.txt']);
  });

  it('bad patterns, sizes and exclude files are usage errors (exit 2), before anything is written', async function () {
    for (const args of [['--exclude', 'a/[b'], ['--iexclude', 'x\\'], ['--exclude-larger-than', '10q'], ['--exclude-file', path.join(work, 'missing')], ['--exclude-if-present', ':HEADER']]) {
      const r = await cli(['backup', src, ...args]);
      assert.equal(r.status, 2, r.why);
      assert.match(r.stderr, /^shmpipe backup: /);
    }
  });

  it('--files-from (globs, comments), --files-from-verbatim, --files-from-raw (- is stdin), with paths', async function () {
    const list = path.join(work, 'list.txt');
    fs.writeFileSync(list, `# what to back up\n  ${src}/doc/*  \n${src}/foo/x\n${src}/no-such-*\n`);
    const verbatim = path.join(work, 'verbatim.txt');
    write(src, 'odd/[literal]*', 'x');
    write(src, 'odd/ spaced ', 'x');
    fs.writeFileSync(verbatim, `${src}/odd/[literal]*\n\n${src}/odd/ spaced \n`);
    const { tree: t, backup } = await backedUp(['--files-from', list, '--files-from-verbatim', verbatim, path.join(src, 'keep.txt')]);
    assert.deepEqual(t, ['src/', 'src/doc/', 'src/doc/readme', 'src/foo/', 'src/foo/x/', 'src/foo/x/y/', 'src/foo/x/y/bar/', 'src/foo/x/y/bar/deep', 'src/keep.txt', 'src/odd/', 'src/odd/ spaced ', 'src/odd/[literal]*']);
    assert.match(backup.stderr, /pattern ".*no-such-\*" in .*list.txt does not match any files/);

    write(src, 'raw/new\nline', 'x');
    write(src, 'raw/other', 'x');
    const raw = await backedUp(['--files-from-raw', '-'], { input: `${src}/raw/new\nline\0${src}/main.go\0` });
    assert.deepEqual(raw.tree, ['src/', 'src/main.go', 'src/raw/', 'src/raw/new\nline']);

    const missing = await cli(['backup', '--files-from-verbatim', '-', '--json'], { input: `${src}/keep.txt\n${src}/gone\n` });
    assert.equal(missing.status, 3, `a listed path that does not exist is left out with exit 3: ${missing.why}`);
    assert.match(missing.stderr, /gone does not exist, skipping/);
    const bad = await cli(['backup', '--files-from-raw', '-'], { input: `${src}/keep.txt` });
    assert.equal(bad.status, 2, bad.why);
    assert.match(bad.stderr, /does not end in a NUL byte/);
  });

  it('--dry-run lists what would be stored and writes nothing', async function () {
    const before = await cli(['snapshots', '--json']);
    const objects = tree(repo);
    const d = await cli(['backup', src, '--dry-run', '--exclude', '*.bin', '--json']);
    assert.equal(d.status, 0, d.why);
    const items = d.lines.filter((l) => l.type === 'verbose_status');
    assert.ok(items.some((l) => l.item === path.join(src, 'keep.txt') && l.action === 'new' && l.kind === 'file'));
    assert.ok(!items.some((l) => l.item.endsWith('.bin')), 'excluded files are not listed');
    assert.equal(d.summary.dry_run, true);
    assert.equal(d.summary.entries, items.length);
    assert.equal(d.summary.bytes_to_read, items.filter((l) => l.kind === 'file' && l.action !== 'unchanged').reduce((a, l) => a + l.size, 0));
    assert.ok(items.some((l) => l.action === 'unchanged'), 'compared with the parent (the earlier backups of src)');
    assert.deepEqual(tree(repo), objects, 'no object was written');
    assert.equal((await cli(['snapshots', '--json'])).stdout, before.stdout);
    const text = await cli(['backup', src, '-n']);
    assert.equal(text.status, 0, text.why);
    assert.match(text.stdout, /^would add file +.*\/keep.txt$/m);
    assert.match(text.stdout, /nothing was written/);
  });

  it('--one-file-system: a tmpfs mounted below the root stays an empty directory', async function () {
    const mnt = path.join(src, 'mnt');
    fs.mkdirSync(mnt);
    const probe = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs shmpipe-test '${mnt}'`], { encoding: 'utf8' });
    if (probe.status !== 0) {
      console.log(`      (skipped: cannot mount a tmpfs in a private mount namespace here: ${(probe.stderr || probe.error?.message || '').trim()})`);
      fs.rmdirSync(mnt);
      return this.skip();
    }
    // Each backup runs in a private mount namespace with a tmpfs on src/mnt holding d/on-tmpfs.
    const run = (extra) =>
      spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs shmpipe-test "$1" && mkdir "$1/d" && echo x > "$1/d/on-tmpfs" && shift && exec "$@"', 'sh', mnt, process.execPath, CLI, 'backup', '--json', '--repo', repo, src, '--exclude', '*.bin', ...extra], { env, encoding: 'utf8', timeout: 120_000 });
    const snapshotOf = (r) => {
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      return JSON.parse(r.stdout.trim().split('\n').pop()).snapshot;
    };
    const restoreTree = async (id) => {
      const target = path.join(work, `restore-${n++}`);
      const r = await cli(['restore', id, target]);
      assert.equal(r.status, 0, r.why);
      return tree(target);
    };
    const crossing = await restoreTree(snapshotOf(run([])));
    assert.ok(crossing.includes('src/mnt/d/on-tmpfs'), `without -x the tmpfs is backed up: ${crossing.join(' ')}`);
    const staying = await restoreTree(snapshotOf(run(['--one-file-system'])));
    assert.ok(staying.includes('src/mnt/'), 'the mount point stays');
    assert.ok(!staying.some((p) => p.startsWith('src/mnt/') && p !== 'src/mnt/'), `nothing below it: ${staying.join(' ')}`);
    assert.ok(staying.includes('src/keep.txt'));
    fs.rmdirSync(mnt);
  });
});
