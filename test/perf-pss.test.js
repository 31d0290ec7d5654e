// perf/lib/pss.js, the memory sampler every perf script uses for shmpipe and its peers: summed
// over a process tree, a page two processes share counts once (PSS), where summed RSS would count
// it twice. Real processes: a Python parent and its forked child sharing 64 MiB they both touch.
'use strict';

const assert = require('node:assert');
const { spawn } = require('node:child_process');
const { once } = require('node:events');

const { treePss, PssSampler } = require('../perf/lib/pss');

const MiB = 1 << 20;
const SHARED = 64 * MiB;

// The parent maps SHARED bytes MAP_SHARED|MAP_ANONYMOUS and writes every page, forks; the child
// reads every page (faulting it into its own page tables) and says so; the parent then says
// "ready <child pid>". Both exit when stdin closes.
const script = `
import mmap, os, sys
n = ${SHARED}
m = mmap.mmap(-1, n)
for i in range(0, n, 4096): m[i] = 1
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    s = 0
    for i in range(0, n, 4096): s += m[i]
    os.write(w, b"x")
    sys.stdin.read()
    os._exit(0)
os.read(r, 1)
print("ready", pid, flush=True)
sys.stdin.read()
os.waitpid(pid, 0)
`;

describe('perf PSS sampler (perf/lib/pss.js)', function () {
  let proc;
  afterEach(async () => {
    if (proc && proc.exitCode === null) {
      proc.stdin.end();
      await once(proc, 'exit');
    }
  });

  it('counts memory two processes of the tree share once, and counts it', async () => {
    proc = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.setEncoding('utf8');
    for await (const chunk of proc.stdout) {
      out += chunk;
      if (out.includes('\n')) break;
    }
    assert.match(out, /^ready \d+/);

    const s = treePss(proc.pid);
    assert.strictEqual(s.procs.length, 2, `parent and child: ${JSON.stringify(s.procs)}`);
    const rss = s.procs.reduce((a, p) => a + p.rss, 0);
    assert.ok(rss >= 2 * SHARED, `summed RSS counts the shared pages twice: ${rss / MiB} MiB`);
    // Each interpreter adds a few MiB of its own; the shared 64 MiB count once.
    assert.ok(s.total >= SHARED, `PSS counts the shared pages at all: ${s.total / MiB} MiB`);
    assert.ok(s.total < SHARED + 24 * MiB, `PSS counts the shared pages once: ${s.total / MiB} MiB`);
    for (const p of s.procs) assert.ok(p.shmem >= SHARED / 2 - MiB, `each holds half of the shared pages: ${p.shmem / MiB} MiB`);

    const sampler = new PssSampler(proc.pid, { intervalMs: 10 }).start();
    sampler.sample();
    const r = sampler.stop();
    assert.ok(r.samples >= 2);
    assert.ok(r.peak >= SHARED && r.peak < SHARED + 24 * MiB, `peak ${r.peak / MiB} MiB`);
    assert.strictEqual(r.peakProcs.length, 2);
  });

  it('reads nothing of a process that is gone', () => {
    const s = treePss(2 ** 22 + 12345); // above pid_max's default: no such process
    assert.deepStrictEqual(s, { total: 0, procs: [] });
  });
});
