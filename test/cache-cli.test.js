// The local metadata cache through the real CLI and sidecar (REPOSITORY.md §Cache): it lands
// under $XDG_CACHE_HOME/shmpipe/<repository id> (else ~/.cache/shmpipe), a later command reads
// index, snapshots and trees from it — shown by damaging the repository's own copies, which only
// `--no-cache` and `check` (always the repository) then see — and a snapshot deleted from the
// repository leaves the cache.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli, okSummary } = require('./helpers/cli');
const { removeTree } = require('./helpers/tree');

const PASSWORD = 'cache test password';

function filesUnder(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out.sort();
}

describe('metadata cache (CLI)', function () {
  this.timeout(180_000);
  let work;
  after(function () {
    if (work) removeTree(work);
  });

  it('is used by later commands, bypassed by --no-cache and check, and drops deleted snapshots', async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-cache-cli-'));
    const src = path.join(work, 'src');
    const repo = path.join(work, 'repo');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(src, 'sub', `f${i}`), `file ${i}\n`.repeat(i + 1));
    const cacheBase = path.join(work, 'xdg-cache');
    const env = cliEnv(work, { SHMPIPE_PASSWORD: PASSWORD, XDG_CACHE_HOME: cacheBase });
    const ok = async (args) => {
      const r = await runCli(args, { env });
      assert.equal(r.status, 0, `shmpipe ${args.join(' ')}: ${r.stderr}`);
      return r;
    };
    await ok(['init', '--repo', repo]);
    const first = okSummary(await ok(['backup', src, '--repo', repo, '--json']));
    const second = okSummary(await ok(['backup', src, '--repo', repo, '--json']));
    assert.equal(second.files_unchanged, 20);

    // The config is JSON followed by the store's 32-byte trailer.
    const repoId = JSON.parse(fs.readFileSync(path.join(repo, 'config')).subarray(0, -32).toString('utf8')).id;
    const cacheDir = path.join(cacheBase, 'shmpipe', repoId);
    const cached = filesUnder(cacheDir);
    assert.ok(cached.includes(`snapshots/${first.snapshot}`), cached.join('\n'));
    assert.ok(cached.some((f) => f.startsWith('index/')), cached.join('\n'));
    assert.ok(cached.some((f) => f.startsWith('trees/')), cached.join('\n'));
    assert.equal((fs.statSync(cacheDir).mode & 0o777).toString(8), '700');

    // Damage the repository's snapshots and index objects: served from the cache, `ls` still
    // lists the files; without the cache and in check, the damage shows.
    for (const rel of filesUnder(repo)) {
      if (rel.startsWith('snapshots/') || rel.startsWith('index/')) {
        const p = path.join(repo, rel);
        fs.writeFileSync(p, Buffer.alloc(fs.statSync(p).size, 0x5a));
      }
    }
    const ls = await ok(['ls', 'latest', '--repo', repo]);
    assert.match(ls.stdout, /sub\/f19/);
    const noCache = await runCli(['snapshots', '--no-cache', '--repo', repo], { env });
    assert.notEqual(noCache.status, 0, noCache.stdout);
    const check = await runCli(['check', '--repo', repo, '--json'], { env });
    assert.notEqual(check.status, 0, check.stdout);

    // A snapshot deleted from the repository (as forget does) leaves the cache at the next listing.
    fs.rmSync(path.join(repo, 'snapshots', first.snapshot));
    await ok(['snapshots', '--repo', repo]);
    assert.ok(!fs.existsSync(path.join(cacheDir, 'snapshots', first.snapshot)));
    assert.ok(fs.existsSync(path.join(cacheDir, 'snapshots', second.snapshot)));
  });
});
