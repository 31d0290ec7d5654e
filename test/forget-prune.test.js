// forget and prune through the real CLI and sidecar: restic's policy over snapshots made at
// chosen times (backup --time), the `--json` shapes of both verbs (restic's forget groups with
// keep/remove/reasons; prune's statistics), --dry-run changing nothing, forget by id, data of
// forgotten snapshots actually reclaimed, and after everything `check --read-data` passing and
// every remaining snapshot restoring bit-exact. Then a backup and a prune at once: whichever
// comes second is refused with "locked" (never both run), and both succeed when retried.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cliEnv, runCli } = require('./helpers/cli');
const { writeRandom, sha256File, diskUsage, MiB } = require('./helpers/tree');

describe('forget and prune (CLI)', function () {
  this.timeout(600_000);
  let work;
  let env;
  let repo;
  let src;
  /** snapshot id → sha256 of the file it holds. */
  const content = new Map();
  const cli = (args, o = {}) => runCli([args[0], '--repo', repo, ...args.slice(1)], { env, ...o });
  const ok = (r) => {
    assert.equal(r.status, 0, r.why);
    return r;
  };
  const snapshotIds = async () => JSON.parse(ok(await cli(['snapshots', '--json'])).stdout).map((s) => s.id);

  /** Backs up `src` holding a new 1 MiB file, as of `time`; records what the snapshot holds. */
  async function backupAt(time, seed, extra = []) {
    writeRandom(path.join(src, 'data'), MiB, seed);
    const r = ok(await cli(['backup', src, '--time', time, '--host', 'alpha', ...extra, '--json']));
    content.set(r.summary.snapshot, sha256File(path.join(src, 'data')));
    return r.summary.snapshot;
  }

  async function assertRestores(ids) {
    for (const id of ids) {
      const target = path.join(work, `restore-${id.slice(0, 8)}`);
      ok(await cli(['restore', id, target]));
      assert.equal(sha256File(path.join(target, 'src', 'data')), content.get(id), `snapshot ${id} restores what was backed up`);
      fs.rmSync(target, { recursive: true, force: true });
    }
  }

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-forget-'));
    env = cliEnv(work, { SHMPIPE_PASSWORD: 'forget-test' });
    repo = path.join(work, 'repo');
    src = path.join(work, 'src');
    fs.mkdirSync(src);
    ok(await cli(['init']));
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  const days = {};
  it('forget --dry-run --json: restic groups with keep, remove and reasons; nothing removed', async function () {
    // Ten days, one backup a day at noon UTC; the second of 2024-03-05 is tagged.
    for (let d = 1; d <= 10; d++) days[d] = await backupAt(`2024-03-${String(d).padStart(2, '0')}T12:00:00Z`, d);
    days.tagged = await backupAt('2024-03-05T18:00:00Z', 99, ['--tag', 'important']);
    const r = ok(await cli(['forget', '--keep-daily', '3', '--keep-tag', 'important', '--dry-run', '--json']));
    const groups = JSON.parse(r.stdout.split('\n')[0]);
    assert.equal(groups.length, 1);
    const g = groups[0];
    assert.equal(g.host, 'alpha');
    assert.deepEqual(g.paths, [src]);
    assert.equal(g.tags, null);
    const kept = g.keep.map((s) => s.id);
    // Newest first: the three newest days and the tagged one (the daily count is used up
    // before the oldest, so restic's "oldest daily snapshot" does not apply).
    assert.deepEqual(kept, [days[10], days[9], days[8], days.tagged]);
    assert.equal(g.remove.length, 7);
    assert.ok(!g.remove.some((s) => kept.includes(s.id)));
    for (const s of [...g.keep, ...g.remove]) {
      assert.equal(s.short_id, s.id.slice(0, 8));
      assert.match(s.time, /^2024-03-\d\dT\d\d:00:00\.000000000Z$/);
      assert.equal(s.host, 'alpha');
    }
    assert.deepEqual(
      g.reasons.map((x) => [x.snapshot.id, x.matches]),
      [
        [days[10], ['daily snapshot']],
        [days[9], ['daily snapshot']],
        [days[8], ['daily snapshot']],
        [days.tagged, ['has tags [important]']],
      ],
    );
    assert.deepEqual(g.reasons[0].counters, { last: 0, hourly: 0, daily: 2, weekly: 0, monthly: 0, yearly: 0 });
    assert.equal((await snapshotIds()).length, 11, '--dry-run removed nothing');
  });

  it('forget --keep-daily 3 --prune --json removes them and reclaims their data', async function () {
    const before = diskUsage(path.join(repo, 'packs')).bytes;
    const r = ok(await cli(['forget', '--keep-daily', '3', '--keep-tag', 'important', '--prune', '--max-unused', '0%', '--json']));
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 2, r.stdout);
    assert.equal(lines[0][0].remove.length, 7);
    const p = lines[1];
    assert.equal(p.message_type, 'summary');
    assert.equal(p.dry_run, false);
    for (const k of ['used', 'duplicate', 'unused', 'total', 'repack', 'repack_remove', 'remove', 'remove_total', 'remaining']) assert.equal(typeof p.blobs[k], 'number', k);
    for (const k of ['used', 'unused', 'partly_used', 'unreferenced', 'total', 'keep', 'repack', 'remove', 'remove_total']) assert.equal(typeof p.packfiles[k], 'number', k);
    assert.ok(p.bytes.remove_total >= 7 * MiB * 0.9, `7 MiB of random data were only in the removed snapshots: ${JSON.stringify(p)}`);
    assert.equal(p.bytes.remaining_unused, 0);
    const after = diskUsage(path.join(repo, 'packs')).bytes;
    assert.ok(after < before - 6 * MiB, `packs/ shrank from ${before} to ${after}`);
    const left = await snapshotIds();
    assert.deepEqual(new Set(left), new Set([days[10], days[9], days[8], days.tagged]));
    const check = await cli(['check', '--read-data', '--json']);
    assert.equal(check.status, 0, check.why);
    assert.deepEqual(JSON.parse(check.stdout).infos, [], 'no unindexed packs left');
    await assertRestores(left);
  });

  it('prune --json with nothing to do; prune --dry-run prints the plan; human output', async function () {
    const r = ok(await cli(['prune', '--json']));
    const s = JSON.parse(r.stdout);
    assert.equal(s.packs_deleted, 0);
    assert.equal(s.packs_written, 0);
    assert.equal(s.blobs.remove_total, 0);
    const forget = ok(await cli(['forget', '--keep-last', '1', '--dry-run']));
    assert.match(forget.stdout, /snapshots for \(host \[alpha\], paths \[.*src\]\):/);
    assert.match(forget.stdout, /keep 1 snapshot\(s\):\n[0-9a-f]{12} .* last snapshot/);
    assert.match(forget.stdout, /would remove 3 snapshot\(s\)/);
    const dry = ok(await cli(['prune', '--dry-run']));
    assert.match(dry.stdout, /would have made the following changes:/);
    assert.match(dry.stdout, /unused size after prune: /);
  });

  it('forget ID removes exactly that snapshot; bad arguments are usage errors', async function () {
    const r = ok(await cli(['forget', days.tagged.slice(0, 8), '--json']));
    const groups = JSON.parse(r.stdout);
    assert.deepEqual(groups[0].remove.map((s) => s.id), [days.tagged]);
    assert.deepEqual(new Set(await snapshotIds()), new Set([days[10], days[9], days[8]]));
    for (const bad of [['forget', '--keep-daily', 'x'], ['forget', '--keep-within', '3w'], ['forget', '--keep-last', '1', days[8]], ['prune', '--max-unused', '100%'], ['prune', '--max-repack-size', 'lots'], ['forget', '--group-by', 'colour', '--keep-last', '1']]) {
      const u = await cli(bad);
      assert.equal(u.status, 2, u.why);
    }
    const none = ok(await cli(['forget']));
    assert.match(none.stdout, /no policy was specified, no snapshots will be removed/);
    assert.equal((await snapshotIds()).length, 3);
  });

  it('a prune while a backup runs is refused (locked); both succeed afterwards', async function () {
    // A backup slow enough to be caught running: 48 MiB at 4 MiB/s of upload.
    writeRandom(path.join(src, 'big'), 48 * MiB, 7);
    let started;
    const running = new Promise((resolve) => {
      started = resolve;
    });
    const backup = cli(['backup', src, '--host', 'alpha', '--limit-upload', '4096', '--json'], {
      onLine: (line) => {
        // The first progress line: the backup holds its lock.
        if (line.includes('"type":"progress"')) started();
      },
    });
    await running;
    const pruneDuring = await cli(['prune', '--json']);
    const b = await backup;
    assert.equal(b.status, 0, b.why);
    assert.equal(pruneDuring.status, 1, pruneDuring.why);
    assert.match(pruneDuring.stderr, /locked by another process: .*Shared lock by .* \(backup\)/);
    const bigSum = sha256File(path.join(src, 'big'));
    content.set(b.summary.snapshot, sha256File(path.join(src, 'data')));
    fs.rmSync(path.join(src, 'big'));
    ok(await cli(['forget', '--keep-last', '1', '--prune', '--json']));
    assert.deepEqual(await snapshotIds(), [b.summary.snapshot]);
    ok(await cli(['check', '--read-data']));
    const target = path.join(work, 'restore-big');
    ok(await cli(['restore', 'latest', target]));
    assert.equal(sha256File(path.join(target, 'src', 'big')), bigSum);
    assert.equal(sha256File(path.join(target, 'src', 'data')), content.get(b.summary.snapshot));
  });
});
