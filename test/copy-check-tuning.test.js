// Through the real CLI and sidecars: copy between two repositories with different passwords
// (data re-chunked by the destination, snapshots kept with their time/host/paths/tags, re-runs
// skip what is there), check --read-data-subset (n/t covers every pack exactly once; a damaged
// pack is found by exactly one of them; P% and SIZE), and the tuning flags and their SHMPIPE_*
// variables (--compression, --pack-size, --read-concurrency).
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli } = require('./helpers/cli');

function write(root, rel, data) {
  const f = path.join(root, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, data);
}

/** Relative path → sha256 of every file under `root` (and '/' for directories). */
function contents(root) {
  const out = {};
  (function walk(rel) {
    for (const n of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      const st = fs.lstatSync(path.join(root, r));
      if (st.isDirectory()) {
        out[`${r}/`] = true;
        walk(r);
      } else {
        out[r] = crypto.createHash('sha256').update(fs.readFileSync(path.join(root, r))).digest('hex');
      }
    }
  })('');
  return out;
}

const compressible = (n) => Buffer.from('the quick brown fox jumps over the lazy dog 0123456789\n'.repeat(Math.ceil(n / 55)).slice(0, n));

describe('copy, check --read-data-subset, tuning flags', function () {
  this.timeout(600_000);
  let work;
  let env;
  let src;
  const repoA = () => path.join(work, 'a');
  const repoB = () => path.join(work, 'b');
  const cli = (args, o = {}) => runCli([args[0], ...args.slice(1)], { env: { ...env, ...o.env }, ...(o.input ? { input: o.input } : {}) });
  const ok = async (args, o) => {
    const r = await cli(args, o);
    assert.equal(r.status, 0, r.why);
    return r;
  };
  const A = { SHMPIPE_PASSWORD: 'password-of-a' };
  const B = { SHMPIPE_PASSWORD: 'another-password-b' };

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-copy-'));
    env = cliEnv(work);
    src = path.join(work, 'src');
    write(src, 'random.bin', crypto.randomBytes(3 * 1024 * 1024));
    write(src, 'text.txt', compressible(1024 * 1024));
    write(src, 'dup/one', 'the same bytes\n');
    write(src, 'dup/two', 'the same bytes\n');
    fs.symlinkSync('text.txt', path.join(src, 'link'));
    await ok(['init', '--repo', repoA()], { env: A });
    await ok(['init', '--repo', repoB()], { env: B });
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('copy: every snapshot, re-chunked into a repository with another password; re-runs skip', async function () {
    await ok(['backup', src, '--repo', repoA(), '--tag', 'first', '--host', 'h1'], { env: A });
    write(src, 'later.txt', 'added before the second backup\n');
    await ok(['backup', src, '--repo', repoA(), '--host', 'h2'], { env: A });
    const listA = JSON.parse((await ok(['snapshots', '--json', '--repo', repoA()], { env: A })).stdout);

    const c = await ok(['copy', '--from-repo', repoA(), '--repo', repoB(), '--json'], { env: { ...B, SHMPIPE_FROM_PASSWORD: A.SHMPIPE_PASSWORD } });
    const copied = c.lines.filter((l) => l.type === 'copied');
    assert.deepEqual(copied.map((l) => l.source), listA.map((s) => s.id));
    assert.ok(copied[1].bytes_added < copied[0].bytes_added / 4, 'the second snapshot dedups against the first in the destination');
    const listB = JSON.parse((await ok(['snapshots', '--json', '--repo', repoB()], { env: B })).stdout);
    const meta = (s) => ({ time_ns: s.time_ns, host: s.host, paths: s.paths, tags: s.tags, entries: s.entries });
    assert.deepEqual(listB.map(meta), listA.map(meta), 'time, host, paths, tags and entries kept');
    assert.deepEqual(listB.map((s) => s.id), copied.map((l) => l.snapshot));
    for (const [i, s] of listB.entries()) assert.notEqual(s.id, listA[i].id);

    // Restored from B, each copy is what A restores.
    for (const [i, s] of listB.entries()) {
      const fromA = path.join(work, `ra${i}`);
      const fromB = path.join(work, `rb${i}`);
      await ok(['restore', listA[i].id, fromA, '--repo', repoA()], { env: A });
      await ok(['restore', s.id, fromB, '--repo', repoB()], { env: B });
      assert.deepEqual(contents(fromB), contents(fromA));
    }
    assert.ok((await ok(['check', '--read-data', '--repo', repoB()], { env: B })).stdout.startsWith('no errors'));

    const again = await ok(['copy', '--from-repo', repoA(), '--repo', repoB(), '--json'], { env: { ...B, SHMPIPE_FROM_PASSWORD: A.SHMPIPE_PASSWORD } });
    assert.deepEqual(again.lines.map((l) => l.type), ['skipped', 'skipped', 'summary']);
    assert.equal(JSON.parse((await ok(['snapshots', '--json', '--repo', repoB()], { env: B })).stdout).length, 2);
  });

  it('copy: a filter or ids choose; --from-password-file; a wrong source password is exit 1', async function () {
    const repoC = path.join(work, 'c');
    await ok(['init', '--repo', repoC], { env: B });
    const pw = path.join(work, 'pw-a');
    fs.writeFileSync(pw, `${A.SHMPIPE_PASSWORD}\n`);
    const r = await ok(['copy', '--from-repo', repoA(), '--from-password-file', pw, '--repo', repoC, '--host', 'h2', '--json'], { env: B });
    assert.deepEqual(r.lines.map((l) => l.type), ['copied', 'summary']);
    const listC = JSON.parse((await ok(['snapshots', '--json', '--repo', repoC], { env: B })).stdout);
    assert.deepEqual(listC.map((s) => s.host), ['h2']);
    const wrong = await cli(['copy', '--from-repo', repoA(), '--repo', repoC], { env: { ...B, SHMPIPE_FROM_PASSWORD: 'not it' } });
    assert.equal(wrong.status, 1, wrong.why);
    assert.match(wrong.stderr, /wrong password for repository .*\/a/);
    assert.equal((await cli(['copy', '--repo', repoC], { env: B })).status, 2, '--from-repo is required');
  });

  it('copy: a format-1 repository (before the keyed chunker) into a format-2 one, re-chunked with its key', async function () {
    // Written by the engine before format 2 (sidecar/engine/tests/fixtures/README.md).
    const v1 = path.join(work, 'v1');
    fs.cpSync(path.join(__dirname, '..', 'sidecar', 'engine', 'tests', 'fixtures', 'repo-v1'), v1, { recursive: true });
    const V1 = { SHMPIPE_PASSWORD: 'fixture password' };
    const repoD = path.join(work, 'd');
    await ok(['init', '--repo', repoD], { env: B });
    const format = async (repo) => JSON.parse((await ok(['version', '--repo', repo, '--json'])).stdout).repository_format;
    assert.equal(await format(v1), 1);
    assert.equal(await format(repoD), 2);
    const c = await ok(['copy', '--from-repo', v1, '--repo', repoD, '--json'], { env: { ...B, SHMPIPE_FROM_PASSWORD: V1.SHMPIPE_PASSWORD } });
    assert.deepEqual(c.lines.map((l) => l.type), ['copied', 'summary']);
    const [from] = JSON.parse((await ok(['snapshots', '--json', '--repo', v1], { env: V1 })).stdout);
    const [to] = JSON.parse((await ok(['snapshots', '--json', '--repo', repoD], { env: B })).stdout);
    await ok(['restore', from.id, path.join(work, 'rv1'), '--repo', v1], { env: V1 });
    await ok(['restore', to.id, path.join(work, 'rv2'), '--repo', repoD], { env: B });
    const restored = contents(path.join(work, 'rv2'));
    assert.deepEqual(restored, contents(path.join(work, 'rv1')));
    assert.ok(Object.keys(restored).some((k) => k.endsWith('big.bin')), JSON.stringify(restored));
    assert.ok((await ok(['check', '--read-data', '--repo', repoD], { env: B })).stdout.startsWith('no errors'));
  });

  it('tuning: --compression off/max and SHMPIPE_COMPRESSION, --pack-size, --read-concurrency; bad values exit 2', async function () {
    const t = path.join(work, 'tune');
    write(t, 'text.txt', compressible(2 * 1024 * 1024));
    write(t, 'random.bin', crypto.randomBytes(5 * 1024 * 1024));
    const repoT = path.join(work, 't');
    await ok(['init', '--repo', repoT], { env: B });
    const sum = async (args, extra = {}) => (await ok(['backup', t, '--repo', repoT, '--no-parent', '--json', ...args], { env: { ...B, ...extra } })).summary;
    const off = await sum(['--compression', 'off', '--pack-size', '1']);
    assert.ok(off.bytes_added > 7 * 1024 * 1024, `stored raw: ${off.bytes_added}`);
    assert.ok(off.packs_added >= 4, `1 MiB packs (a pack closes after the chunk that crosses 1 MiB): ${off.packs_added}`);
    // Same data again: nothing new whatever the settings (dedup), so compare on fresh data.
    write(t, 'text.txt', compressible(2 * 1024 * 1024 - 1));
    const max = await sum(['--read-concurrency', '1'], { SHMPIPE_COMPRESSION: 'max' });
    assert.ok(max.bytes_added_plain > 1024 * 1024 && max.bytes_added < max.bytes_added_plain / 10, `compressed: ${max.bytes_added} of ${max.bytes_added_plain}`);
    const help = (await ok(['help', 'backup'])).stdout.replace(/\s+/g, ' ');
    for (const v of ['SHMPIPE_COMPRESSION', 'SHMPIPE_PACK_SIZE', 'SHMPIPE_READ_CONCURRENCY']) assert.ok(help.includes(`env: ${v}`), v);
    for (const [args, extra] of [[['--compression', 'best']], [[], { SHMPIPE_PACK_SIZE: '0' }], [['--pack-size', '129']], [['--read-concurrency', 'x']]]) {
      const r = await cli(['backup', t, '--repo', repoT, ...args], { env: { ...B, ...extra } });
      assert.equal(r.status, 2, r.why);
    }
    const fromEnv = await cli(['backup', t, '--repo', repoT], { env: { ...B, SHMPIPE_PACK_SIZE: '0' } });
    assert.match(fromEnv.stderr, /SHMPIPE_PACK_SIZE/);
  });

  it('--limit-upload / --limit-download (and their SHMPIPE_* variables) pace the private sidecar', async function () {
    const l = path.join(work, 'limited');
    write(l, 'random.bin', crypto.randomBytes(3 * 1024 * 1024));
    const repoL = path.join(work, 'l');
    await ok(['init', '--repo', repoL], { env: B });
    // 3 MiB of packs at 256 KiB/s with one second of burst: the index and snapshot objects
    // written after them cannot start before ~11 s; unlimited, the whole command takes ~2.5 s
    // here. (Lower bounds only: a slow machine makes it later, never earlier.)
    const up = await ok(['backup', l, '--repo', repoL, '--pack-size', '1', '--limit-upload', '256', '--json'], { env: B });
    assert.ok(up.summary.packs_added >= 2);
    assert.ok(up.ms >= 5000, `upload paced: ${up.ms} ms`);
    const t0 = Date.now();
    await ok(['restore', 'latest', path.join(work, 'limited-back'), '--repo', repoL], { env: { ...B, SHMPIPE_LIMIT_DOWNLOAD: '256' } });
    assert.ok(Date.now() - t0 >= 5000, `download paced: ${Date.now() - t0} ms`);
    assert.equal((await cli(['backup', l, '--repo', repoL, '--limit-upload', '0'], { env: B })).status, 2);
  });

  it('check --read-data-subset: 1/t … t/t read every pack once; a damaged pack is found by one of them', async function () {
    const repoT = path.join(work, 't');
    const full = JSON.parse((await ok(['check', '--read-data', '--json', '--repo', repoT], { env: B })).stdout);
    assert.ok(full.ok && full.packs >= 4, `packs: ${full.packs}`);
    const subsets = [];
    for (let n = 1; n <= 3; n++) subsets.push(JSON.parse((await ok(['check', '--read-data-subset', `${n}/3`, '--json', '--repo', repoT], { env: B })).stdout));
    assert.equal(subsets.reduce((a, r) => a + r.blobs_verified, 0), full.blobs_verified, 'the three groups verify every blob exactly once');
    assert.equal(subsets.reduce((a, r) => a + r.bytes_read, 0), full.bytes_read);
    const all = JSON.parse((await ok(['check', '--read-data-subset', '100%', '--json', '--repo', repoT], { env: B })).stdout);
    assert.equal(all.blobs_verified, full.blobs_verified);
    const one = JSON.parse((await ok(['check', '--read-data-subset', '1', '--json', '--repo', repoT], { env: B })).stdout);
    assert.ok(one.blobs_verified > 0 && one.blobs_verified < full.blobs_verified, 'SIZE 1 byte: one pack');
    const half = JSON.parse((await ok(['check', '--read-data-subset', '50%', '--json', '--repo', repoT], { env: B })).stdout);
    assert.ok(half.bytes_read > 0 && half.bytes_read < full.bytes_read);

    // Damage one pack (flip a byte in the middle): exactly one group reports it.
    const packs = [];
    (function walk(d) {
      for (const n of fs.readdirSync(d)) {
        const p = path.join(d, n);
        if (fs.statSync(p).isDirectory()) walk(p);
        else packs.push(p);
      }
    })(path.join(repoT, 'packs'));
    const victim = packs.sort()[0];
    const fd = fs.openSync(victim, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, 100);
    b[0] ^= 0xff;
    fs.writeSync(fd, b, 0, 1, 100);
    fs.closeSync(fd);
    const runs = [];
    for (let n = 1; n <= 3; n++) runs.push(await cli(['check', '--read-data-subset', `${n}/3`, '--json', '--repo', repoT], { env: B }));
    const verdicts = runs.map((r) => r.status);
    assert.deepEqual(verdicts.filter((s) => s === 1).length, 1, `exactly one group finds the damage: ${verdicts}\n${runs.map((r) => r.stderr).join('\n---\n')}`);
    for (const bad of ['0/3', '4/3', '0%', '101%', 'abc', '1/0']) assert.equal((await cli(['check', '--read-data-subset', bad, '--repo', repoT], { env: B })).status, 2, bad);
    assert.equal((await cli(['check', '--read-data', '--read-data-subset', '1/2', '--repo', repoT], { env: B })).status, 2);
  });
});
