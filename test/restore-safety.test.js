// Restore as an attacker would test it (README: threat model — restore trusts no repository and
// no target), with the real CLI and the real sidecar:
// - a hostile repository (written through the engine's own write path by the corpus tool,
//   sidecar/engine/examples/hostile_corpus.rs): `..` and escaped `..` / `/` / NUL names,
//   absolute and empty paths, a duplicate, symlinks out of the target and files "through"
//   them, a directory replaced by a file, nesting 10,000 deep, sizes that disagree with the
//   content, chunk lists pointing at missing or mismatched blobs. Restore exits 3, names every
//   bad entry, restores the honest ones, and nothing changes outside the target;
// - symlinks planted in the target (the target itself, a top-level name, a name inside): never
//   followed; replaced, or kept with a clear error under --overwrite never;
// - names that look like escapes (`\x2e\x2e`, `a\x2fb`, `back\\slash`) round-trip unchanged;
// - directories are 0700 while their contents are restored.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');
const { root } = require('./helpers/paths');

const PASSWORD = 'restore-safety password';
const CORPUS_TOOL = path.join(root, 'target', 'debug', 'examples', 'hostile_corpus');

/** Every path under `dir` (Buffer names) with what would show a change: type, mode, size,
 * mtime, a file's SHA-256, a symlink's target. `skip`: absolute paths left out. */
function treeState(dir, skip = []) {
  const out = new Map();
  const walk = (p) => {
    if (skip.includes(p.toString())) return;
    const st = fs.lstatSync(p, { bigint: true });
    const rec = { mode: Number(st.mode), size: st.size, mtimeNs: st.mtimeNs };
    if (st.isSymbolicLink()) rec.target = fs.readlinkSync(p, { encoding: 'buffer' }).toString('hex');
    else if (st.isFile()) rec.sha = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    out.set(p.toString('latin1'), rec);
    if (st.isDirectory()) for (const n of fs.readdirSync(p, { encoding: 'buffer' }).sort(Buffer.compare)) walk(Buffer.concat([p, Buffer.from('/'), n]));
  };
  walk(Buffer.from(dir));
  return out;
}

function assertSameState(after, before, what) {
  assert.deepEqual([...after.keys()], [...before.keys()], `${what}: the same paths`);
  for (const [p, rec] of before) assert.deepEqual(after.get(p), rec, `${what}: ${p} unchanged`);
}

/** `rm -rf` (coreutils walks with fds: it copes with trees deeper than PATH_MAX, Node's rmSync does not). */
const rmrf = (p) => execFileSync('rm', ['-rf', '--', p]);

describe('restore safety: a hostile repository', function () {
  this.timeout(900_000);
  let work;
  let repo;
  let land;
  let outside;
  let env;
  let result;
  let landBefore;

  before(function () {
    // The corpus tool is built by `cargo test --workspace` (examples are built with the tests);
    // this is a no-op then, and builds it when the file runs alone.
    execFileSync('cargo', ['build', '--locked', '--quiet', '-p', 'shmpipe-engine', '--example', 'hostile_corpus'], { cwd: root, stdio: 'inherit' });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-hostile-'));
    repo = path.join(work, 'repo');
    land = path.join(work, 'land');
    outside = path.join(land, 'outside');
    fs.mkdirSync(outside, { recursive: true });
    fs.writeFileSync(path.join(land, 'canary'), 'do not touch\n');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    execFileSync(CORPUS_TOOL, [repo, PASSWORD, outside], { stdio: ['ignore', 'pipe', 'inherit'] });
  });

  after(function () {
    if (work) rmrf(work);
  });

  it('exits 3, restores the honest entries, and writes nothing outside the target', async function () {
    const target = path.join(land, 'target');
    // Made beforehand (an existing, empty target): creating it would change land's mtime.
    fs.mkdirSync(target);
    landBefore = treeState(land, [target]);
    result = await runCli(['restore', 'latest', target, '--repo', repo, '--json'], { env, timeoutMs: 600_000 });
    assert.equal(result.status, 3, result.why);
    assertSameState(treeState(land, [target]), landBefore, 'outside the target');
    assert.deepEqual(fs.readdirSync(outside), [], 'nothing written through the symlinks');
    assert.ok(!fs.existsSync('/abs-escape'), 'the absolute path was not written');
    assert.equal(fs.readFileSync(path.join(target, 'data', 'ok.txt'), 'utf8'), 'fine\n');
    assert.equal(fs.readFileSync(path.join(target, 'data', 'dup'), 'utf8'), 'first\n', 'the first of two entries with one name stays');
    assert.ok(fs.lstatSync(path.join(target, 'data', 'd')).isDirectory(), 'the directory stays a directory');
    assert.equal(fs.readFileSync(path.join(target, 'data', 'd', 'x'), 'utf8'), 'fine\n');
    assert.equal(fs.readlinkSync(path.join(target, 'data', 'link')), outside, 'a symlink is restored as a symlink');
    assert.deepEqual(fs.readdirSync(path.join(target, 'data')).sort(), ['d', 'dup', 'link', 'link2', 'ok.txt'], 'no temporary file, no refused name');
    const s = result.summary;
    assert.ok(s, result.why);
    assert.equal(s.files, 3, 'ok.txt, dup, d/x');
  });

  it('names every refused or failed entry with a clear error', function () {
    const lines = result.lines.filter((l) => l.type === 'error');
    const errors = new Map();
    for (const l of lines) if (!errors.has(l.path)) errors.set(l.path, l);
    const expect = {
      'data/..': /refusing entry.*the name "\.\."/,
      'data/../../escape': /the name "\.\."/,
      'data/\\x2e\\x2e': /the name "\.\." once decoded/,
      'data/a\\x2fb': /contains \/ once decoded/,
      'data/nul\\x00': /contains NUL once decoded/,
      'data/\\x41': /not canonically escaped/,
      'data/dup': /listed twice/,
      'data/link/pwned': /its parent "data\/link" is not a directory listed before it/,
      'data/link2/pwned': /its parent "data\/link2" is not a directory/,
      'data/d': /its parent "data" is not a directory listed before it, or its entries already ended/,
      'data/size-lie': /has 5 bytes, its entry says 1073741824/,
      'data/huge-ref': /SHMPIPE_E_INTEGRITY/,
      'data/missing-blob': /SHMPIPE_E_NOT_FOUND/,
      'data/missing-list': /SHMPIPE_E_NOT_FOUND/,
      'data/wrong-length': /SHMPIPE_E_INTEGRITY/,
      'data/nul-target': /target contains NUL/,
      'data/not-special': /is not a FIFO, socket or device/,
      '..': /the name "\.\."/,
      '/abs-escape': /the path is absolute/,
      '': /the path is empty/,
    };
    for (const [p, re] of Object.entries(expect)) {
      assert.ok(errors.has(p), `an error line for ${JSON.stringify(p)}\n${result.stdout.slice(0, 4000)}`);
      assert.match(errors.get(p).message, re, p);
    }
    // The deep chain: refused where its path passes PATH_MAX, and what is below counted once.
    const deep = lines.filter((l) => l.path.startsWith('deep/'));
    assert.equal(deep.length, 2, 'the too-long path, and one line for the entries below it');
    assert.match(deep[0].message, /longer than 4096 bytes/);
    assert.match(deep[1].message, /^(\d+) entries below it were not restored either$/);
    const below = Number(/^(\d+)/.exec(deep[1].message)[1]);
    assert.equal(deep[0].path, deep[1].path);
    const depth = deep[0].path.split('/').length - 1;
    assert.equal(below, 10_000 - depth + 1, 'every deeper directory and the bottom file');
    assert.equal(result.summary.failed, Object.keys(expect).length + 1 + below + 1, 'failed counts every entry not restored (data/\\x2e\\x2e/pwned below its refused parent)');
  });

  it('restores the deep chain up to PATH_MAX, each level 0755 again at the end', function () {
    const target = path.join(land, 'target');
    // Walk it one relative step at a time: a path this long cannot be opened in one go.
    let levels = 0;
    const cwd = process.cwd();
    try {
      process.chdir(path.join(target, 'deep'));
      while (fs.existsSync('n')) {
        assert.equal(fs.statSync('n').mode & 0o7777, 0o755);
        process.chdir('n');
        levels++;
      }
      assert.deepEqual(fs.readdirSync('.'), [], 'the bottom file is below the limit: not restored');
    } finally {
      process.chdir(cwd);
    }
    assert.equal(levels, 2046, '"deep" and 2046 "/n" are 4096 bytes');
  });
});

describe('restore safety: a hostile target', function () {
  this.timeout(600_000);
  let work;
  let repo;
  let env;
  let src;
  let snapshot;

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-target-'));
    repo = path.join(work, 'repo');
    env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD });
    src = path.join(work, 'data');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'top.txt'), 'top\n');
    fs.writeFileSync(path.join(src, 'sub', 'file.txt'), 'sub file\n');
    fs.chmodSync(path.join(src, 'sub'), 0o755);
    // Names that look like escapes must come back byte for byte.
    for (const n of ['\\x2e\\x2e', 'a\\x2fb', 'back\\slash']) fs.writeFileSync(path.join(src, n), `name ${n}\n`);
    // A directory of 0755 holding a file large enough that the restore is caught while writing it.
    fs.mkdirSync(path.join(src, 'slow'));
    fs.writeFileSync(path.join(src, 'slow', 'big.bin'), crypto.randomBytes(96 << 20));
    fs.chmodSync(path.join(src, 'slow'), 0o755);
    const init = await runCli(['init', '--repo', repo, '--json'], { env });
    assert.equal(init.status, 0, init.why);
    snapshot = okSummary(await runCli(['backup', src, '--repo', repo, '--json'], { env })).snapshot;
  });

  after(function () {
    if (work) rmrf(work);
  });

  const restore = (target, ...more) => runCli(['restore', snapshot, target, '--repo', repo, '--json', ...more], { env });

  it('names that look like escapes round-trip unchanged', async function () {
    const target = path.join(work, 'names');
    okSummary(await restore(target));
    for (const n of ['\\x2e\\x2e', 'a\\x2fb', 'back\\slash']) assert.equal(fs.readFileSync(path.join(target, 'data', n), 'utf8'), `name ${n}\n`, n);
    assert.deepEqual(fs.readdirSync(path.join(target, 'data')).sort(), ['a\\x2fb', 'back\\slash', 'slow', 'sub', 'top.txt', '\\x2e\\x2e'].sort());
  });

  it('refuses a target that is itself a symlink, writing nothing through it', async function () {
    const elsewhere = path.join(work, 'elsewhere-root');
    fs.mkdirSync(elsewhere);
    const target = path.join(work, 'planted-root');
    fs.symlinkSync(elsewhere, target);
    const r = await restore(target);
    assert.equal(r.status, 1, r.why);
    assert.match(r.stderr, /the restore target .*planted-root is a symlink/);
    assert.deepEqual(fs.readdirSync(elsewhere), []);
  });

  it('replaces a symlink planted at the top of the target and one inside it, following neither', async function () {
    const elsewhere = path.join(work, 'elsewhere-a');
    const elsewhere2 = path.join(work, 'elsewhere-b');
    fs.mkdirSync(elsewhere);
    fs.mkdirSync(elsewhere2);
    const target = path.join(work, 'planted');
    fs.mkdirSync(target);
    fs.symlinkSync(elsewhere, path.join(target, 'data'));
    const first = await restore(target);
    okSummary(first);
    assert.ok(fs.lstatSync(path.join(target, 'data')).isDirectory(), 'the planted symlink became the directory');
    // Inside: the restored directory's sub is swapped for a symlink, then restored again.
    fs.rmSync(path.join(target, 'data', 'sub'), { recursive: true });
    fs.symlinkSync(elsewhere2, path.join(target, 'data', 'sub'));
    fs.symlinkSync(path.join(elsewhere2, 'victim'), path.join(target, 'data', 'top.txt.planted'));
    okSummary(await restore(target, '--overwrite', 'always'));
    assert.ok(fs.lstatSync(path.join(target, 'data', 'sub')).isDirectory());
    assert.equal(fs.readFileSync(path.join(target, 'data', 'sub', 'file.txt'), 'utf8'), 'sub file\n');
    assert.deepEqual(fs.readdirSync(elsewhere), [], 'nothing written through the top-level symlink');
    assert.deepEqual(fs.readdirSync(elsewhere2), [], 'nothing written through the inner symlink');
  });

  it('a file whose name is a planted symlink is replaced, the symlink target untouched', async function () {
    const victim = path.join(work, 'victim.txt');
    fs.writeFileSync(victim, 'precious\n');
    const target = path.join(work, 'planted-file');
    fs.mkdirSync(path.join(target, 'data'), { recursive: true });
    fs.symlinkSync(victim, path.join(target, 'data', 'top.txt'));
    okSummary(await restore(target));
    assert.equal(fs.readFileSync(victim, 'utf8'), 'precious\n');
    assert.ok(fs.lstatSync(path.join(target, 'data', 'top.txt')).isFile());
    assert.equal(fs.readFileSync(path.join(target, 'data', 'top.txt'), 'utf8'), 'top\n');
  });

  it('--overwrite never keeps a planted symlink, fails the entries that would go through it, and follows nothing', async function () {
    const elsewhere = path.join(work, 'elsewhere-never');
    fs.mkdirSync(elsewhere);
    const target = path.join(work, 'planted-never');
    fs.mkdirSync(path.join(target, 'data'), { recursive: true });
    fs.symlinkSync(elsewhere, path.join(target, 'data', 'sub'));
    const r = await restore(target, '--overwrite', 'never');
    assert.equal(r.status, 3, r.why);
    const errors = r.lines.filter((l) => l.type === 'error');
    assert.ok(errors.some((l) => l.path === 'data/sub' && /not a directory is in its place \(kept: --overwrite never\)/.test(l.message)), r.why);
    assert.ok(fs.lstatSync(path.join(target, 'data', 'sub')).isSymbolicLink(), 'kept');
    assert.deepEqual(fs.readdirSync(elsewhere), []);
    assert.equal(fs.readFileSync(path.join(target, 'data', 'top.txt'), 'utf8'), 'top\n', 'the rest is restored');
  });

  it('directories are 0700 while their contents are restored, their own mode at the end', async function () {
    const target = path.join(work, 'modes');
    const slow = path.join(target, 'data', 'slow');
    let seen = null;
    let done = false;
    // Look at the directory while the CLI writes the 96 MiB file into it (its temporary file is
    // there), polling with a deadline.
    const r = runCli(['restore', snapshot, target, '--repo', repo, '--json'], { env });
    const deadline = Date.now() + 120_000;
    while (!done && seen === null && Date.now() < deadline) {
      let st = null;
      try {
        st = fs.statSync(slow);
      } catch {
        /* not yet */
      }
      if (st !== null && fs.readdirSync(slow).some((n) => n.startsWith('.shmpipe-restore-'))) seen = st.mode & 0o7777;
      else await new Promise((res) => setTimeout(res, 2));
    }
    const res = await r;
    done = true;
    okSummary(res);
    assert.equal(seen, 0o700, 'seen while the file inside was being written');
    assert.equal(fs.statSync(slow).mode & 0o7777, 0o755);
  });
});
