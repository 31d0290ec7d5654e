#!/usr/bin/env node
// perf:clients — the three agents (TypeScript, Go, Python) against one real sidecar, each beside
// its own language's Unix-socket baseline client (the sidecar's UDS baseline transport,
// sidecar/src/baseline.rs: the same ops as frames on a socket) in the same run:
//   - await round trip of a 64-byte ECHO, one in flight: p50/p99 (µs);
//   - 1 MiB PUTs and whole-object GETs, --inflight requests in flight (GB/s), the payload copied
//     from process memory into the slot (or written to the socket);
//   - OS threads of the client process before and with --threads-inflight DELAYs outstanding.
// The parts are perf/lib/clients-ts.js, go-lib/cmd/shmpipe-bench (built here) and
// perf/lib/clients-py.py; each runs `--rounds` times, interleaved, and the median is reported.
// The store is memory:// so the transports, not a disk, are measured. Prints a table, then one
// JSON object as the last line. Needs `npm run build` (the sidecar and ts-lib/dist) and Go.
// Measures, never asserts.
//
//   node perf/clients.js [--rounds 3] [--rtt-count 20000] [--mib 512] [--inflight 16]
//                        [--threads-inflight 10000] [--only ts,go,py]
'use strict';

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { sidecarBin, startPerfSidecar } = require('./lib/sidecar');

const root = path.resolve(__dirname, '..');
const { values: opt } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'rtt-count': { type: 'string', default: '20000' },
    mib: { type: 'string', default: '512' },
    inflight: { type: 'string', default: '16' },
    'threads-inflight': { type: 'string', default: '10000' },
    only: { type: 'string', default: 'ts,go,py' },
  },
});

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: root });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}`));
      const last = out.trim().split('\n').pop();
      try {
        resolve(JSON.parse(last));
      } catch (e) {
        reject(new Error(`${cmd}: no JSON line: ${out}`));
      }
    });
  });
}

async function main() {
  for (const f of [sidecarBin, path.join(root, 'ts-lib', 'dist', 'index.js')]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: npm run build`);
  }
  const outDir = path.join(root, 'perf', 'out');
  fs.mkdirSync(outDir, { recursive: true });
  const goBench = path.join(outDir, 'shmpipe-bench');
  execFileSync('go', ['build', '-o', goBench, './cmd/shmpipe-bench'], { cwd: path.join(root, 'go-lib'), stdio: 'inherit' });
  const venvPy = path.join(root, '.venv-py', 'bin', 'python');
  const python = fs.existsSync(venvPy) ? venvPy : 'python3';

  const sc = await startPerfSidecar('shmpipe-perf-clients-', () => ({ SHMPIPE_STORE: 'memory://' }));
  const common = ['--sidecar', sc.socketPath, '--baseline', sc.baselinePath, '--rtt-count', opt['rtt-count'], '--mib', opt.mib,
    '--inflight', opt.inflight, '--threads-inflight', opt['threads-inflight']];
  const parts = {
    ts: () => run(process.execPath, [path.join(__dirname, 'lib', 'clients-ts.js'), ...common]),
    go: () => run(goBench, common),
    py: () => run(python, [path.join(__dirname, 'lib', 'clients-py.py'), ...common]),
  };
  const names = opt.only.split(',');
  const runs = Object.fromEntries(names.map((n) => [n, []]));
  try {
    for (let round = 1; round <= Number(opt.rounds); round++) {
      for (const n of names) {
        const r = await parts[n]();
        runs[n].push(r);
        console.error(`round ${round} ${n}: ${JSON.stringify(r)}`);
      }
    }
  } finally {
    await sc.stop();
  }

  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const metrics = ['shm_rtt_p50_us', 'shm_rtt_p99_us', 'uds_rtt_p50_us', 'uds_rtt_p99_us', 'shm_put_gbps', 'uds_put_gbps', 'shm_get_gbps', 'uds_get_gbps',
    'threads_before', 'threads_during', 'threads_after'];
  const summary = { rounds: Number(opt.rounds), inflight: Number(opt.inflight), threads_inflight: Number(opt['threads-inflight']), mib: Number(opt.mib) };
  const fix = (x, d) => Number(x.toFixed(d));
  const rows = [];
  for (const n of names) {
    const m = {};
    for (const k of metrics) m[k] = median(runs[n].map((r) => r[k]));
    const s = {
      rtt_p50_us: fix(m.shm_rtt_p50_us, 2), rtt_p99_us: fix(m.shm_rtt_p99_us, 2),
      uds_rtt_p50_us: fix(m.uds_rtt_p50_us, 2), uds_rtt_p99_us: fix(m.uds_rtt_p99_us, 2),
      put_gbps: fix(m.shm_put_gbps, 2), uds_put_gbps: fix(m.uds_put_gbps, 2),
      get_gbps: fix(m.shm_get_gbps, 2), uds_get_gbps: fix(m.uds_get_gbps, 2),
      rtt_uds_over_shm: fix(m.uds_rtt_p50_us / m.shm_rtt_p50_us, 2),
      put_shm_over_uds: fix(m.shm_put_gbps / m.uds_put_gbps, 2),
      get_shm_over_uds: fix(m.shm_get_gbps / m.uds_get_gbps, 2),
      threads_before: m.threads_before, threads_during: m.threads_during, threads_after: m.threads_after,
    };
    summary[n] = s;
    rows.push([n, `${s.rtt_p50_us} / ${s.rtt_p99_us}`, `${s.uds_rtt_p50_us} / ${s.uds_rtt_p99_us}`, `${s.put_gbps} | ${s.uds_put_gbps} (${s.put_shm_over_uds}x)`,
      `${s.get_gbps} | ${s.uds_get_gbps} (${s.get_shm_over_uds}x)`, `${s.threads_before} → ${s.threads_during} → ${s.threads_after}`]);
  }
  summary.load_avg_1m = fix(os.loadavg()[0], 2);
  const head = ['client', 'echo RTT p50/p99 µs shm', 'UDS', `1 MiB put GB/s shm | UDS`, `1 MiB get GB/s shm | UDS`, `threads (${opt['threads-inflight']} in flight)`];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (r) => r.map((c, i) => String(c).padEnd(w[i])).join(' | ');
  console.log(line(head));
  console.log(w.map((x) => '-'.repeat(x)).join('-+-'));
  for (const r of rows) console.log(line(r));
  console.log(`median of ${opt.rounds} rounds; ${opt.inflight} in flight for put/get; memory:// store; load average ${summary.load_avg_1m}`);
  console.log(JSON.stringify(summary));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
