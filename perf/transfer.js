#!/usr/bin/env node
// perf:transfer — uploads then downloads a generated ~2 GiB set of files (4 KiB .. 256 MiB) to a
// file:// store on tmpfs, three ways, in one run:
//   shm   the TS client through shared memory: client.putFile / client.getFile (files read
//         straight into slots; the sidecar checksums in place and writes the store);
//   node  pure Node: fs streams and a native CRC-32C (@node-rs/crc32), writing the very same objects (data + the
//         store's 32-byte trailer, temp file + rename; downloads verified before the rename);
//   uds   the same sidecar store ops over the UDS baseline transport (frames on a Unix socket).
// Every download is compared with its source afterwards (not timed). Prints GB/s, CPU-seconds
// per GB (this process + the sidecar) and ratios, then one JSON object as the last line.
// Needs `npm run build` first. Measures, never asserts.
//
// Each way runs `--repeat` times (default 3), interleaved with the others (shm, node, uds, shm,
// …), and the median run is reported: this 2-core machine is shared, and single runs vary by
// ±30 %.
//
//   node perf/transfer.js [--dir /dev/shm] [--total-mib 2048] [--concurrency 16] [--repeat 3]
//                         [--slot-mib 4] [--slots 64] [--node-chunk-kib 1024] [--only shm,node,uds]
//                         [--keep] [--no-verify]
// (SHMPIPE_PERF_MARK=file: the shm run writes "get" there when its get phase starts, for
// attaching a profiler to that phase only.)
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const root = path.resolve(__dirname, '..');
const { connect } = require(path.join(root, 'ts-lib', 'dist', 'index.js'));
const { NodeStore } = require('./lib/node-store');
const { UdsStore } = require('./lib/uds-store');

const { sidecarBin, startPerfSidecar } = require('./lib/sidecar');
const { prng } = require('./lib/prng');
const MiB = 1 << 20;
const GB = 1e9;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => process.hrtime.bigint();
const secs = (t0) => Number(now() - t0) / 1e9;

const { values: opt } = parseArgs({
  options: {
    dir: { type: 'string', default: '/dev/shm' },
    'total-mib': { type: 'string', default: '2048' },
    concurrency: { type: 'string', default: '16' },
    'slot-mib': { type: 'string', default: '4' },
    slots: { type: 'string', default: '64' },
    repeat: { type: 'string', default: '3' },
    'node-chunk-kib': { type: 'string', default: '1024' },
    only: { type: 'string', default: 'shm,node,uds' },
    keep: { type: 'boolean', default: false },
    'no-verify': { type: 'boolean', default: false },
  },
});
const TOTAL = Number(opt['total-mib']) * MiB;
const CONCURRENCY = Number(opt.concurrency);
const SLOT = Number(opt['slot-mib']) * MiB;
const SLOTS = Number(opt.slots);
const REPEAT = Math.max(1, Number(opt.repeat));
/** The pure-Node streams' chunk size: their best here (4 MiB chunks measured 2x slower than 1 MiB). */
const NODE_CHUNK = Number(opt['node-chunk-kib']) * 1024;

// ---- the data set ----------------------------------------------------------------------------


/**
 * File sizes, 4 KiB .. 256 MiB: by count mostly small files, by bytes mostly large ones, like a
 * home or project directory (≈3000 files, ≈2 GiB at the default total). Nominal sizes per class
 * with ±25 % jitter; the counts scale with `total`.
 */
function sizes(total) {
  const rnd = prng(42);
  // [nominal size, files per 2 GiB]
  const classes = [
    [256 * MiB, 3],
    [64 * MiB, 6],
    [16 * MiB, 20],
    [4 * MiB, 60],
    [1 * MiB, 150],
    [256 << 10, 400],
    [64 << 10, 600],
    [16 << 10, 800],
    [4 << 10, 1000],
  ];
  const scale = total / (2048 * MiB);
  const out = [];
  for (const [nominal, count] of classes) {
    const n = Math.max(1, Math.round(count * scale));
    for (let i = 0; i < n; i++) out.push(Math.min(256 * MiB, Math.max(4096, Math.round(nominal * (0.75 + 0.5 * rnd())))));
  }
  // Interleave sizes, as a real tree would.
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function generate(dir, list) {
  const files = [];
  const buf = Buffer.allocUnsafe(16 * MiB);
  list.forEach((size, i) => {
    const rel = path.join(`d${String(Math.floor(i / 100)).padStart(3, '0')}`, `f${i}.bin`);
    const file = path.join(dir, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const fd = fs.openSync(file, 'w');
    for (let done = 0; done < size; ) {
      const n = Math.min(buf.length, size - done);
      crypto.randomFillSync(buf, 0, n);
      fs.writeSync(fd, buf, 0, n, done);
      done += n;
    }
    fs.closeSync(fd);
    files.push({ rel, file, size, key: `transfer/${rel}` });
  });
  return files;
}

// ---- measuring -------------------------------------------------------------------------------

/** CPU seconds of a process: the sum over its threads of /proc schedstat (ns precision). */
function cpuSeconds(pid) {
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns / 1e9;
}

/** Runs `job` for every file, `CONCURRENCY` at a time; returns wall and CPU seconds. */
async function timed(files, sidecarPid, job) {
  const cpu0 = process.cpuUsage();
  const side0 = sidecarPid ? cpuSeconds(sidecarPid) : 0;
  const t0 = now();
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const f = files[next++];
      await job(f);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const wall = secs(t0);
  const c = process.cpuUsage(cpu0);
  const own = (c.user + c.system) / 1e6;
  const side = sidecarPid ? cpuSeconds(sidecarPid) - side0 : 0;
  return { wall, cpuAgent: own, cpuSidecar: side };
}

async function verify(files, outDir) {
  let bad = 0;
  for (const f of files) {
    const a = fs.readFileSync(f.file);
    const b = fs.readFileSync(path.join(outDir, f.rel));
    if (!a.equals(b)) bad++;
  }
  return bad;
}

// ---- the sidecar -----------------------------------------------------------------------------

async function startSidecar(base, store) {
  return startPerfSidecar('shmpipe-transfer-', () => ({
    SHMPIPE_STORE: `file://${store}`,
    // tmpfs: fsync does nothing useful, and the Node side does not fsync either.
    SHMPIPE_STORE_FSYNC: 'false',
    SHMPIPE_MAX_SLOTS: String(Math.max(1024, SLOTS)),
    SHMPIPE_MAX_SLOT_SIZE: String(Math.max(16 * MiB, SLOT)),
  }));
}

// ---- the three ways --------------------------------------------------------------------------

const ways = {
  async shm(files, store, out) {
    const sc = await startSidecar(out, store);
    const client = await connect({ socketPath: sc.socketPath, slotCount: SLOTS, slotSize: SLOT, clientName: 'perf-transfer' });
    try {
      const put = await timed(files, sc.pid, (f) => client.putFile(f.file, f.key));
      if (process.env.SHMPIPE_PERF_MARK) fs.writeFileSync(process.env.SHMPIPE_PERF_MARK, 'get');
      const get = await timed(files, sc.pid, (f) => {
        const dst = path.join(out, f.rel);
        return client.getFile(f.key, dst);
      });
      return { put, get };
    } finally {
      await client.close();
      await sc.stop();
    }
  },

  async node(files, store, out) {
    const s = new NodeStore(store, { highWaterMark: NODE_CHUNK });
    const put = await timed(files, 0, (f) => s.putFile(f.file, f.key));
    const get = await timed(files, 0, (f) => s.getFile(f.key, path.join(out, f.rel)));
    return { put, get };
  },

  async uds(files, store, out) {
    const sc = await startSidecar(out, store);
    const s = new UdsStore(sc.baselinePath, { chunk: SLOT });
    try {
      const put = await timed(files, sc.pid, (f) => s.putFile(f.file, f.key));
      const get = await timed(files, sc.pid, (f) => s.getFile(f.key, path.join(out, f.rel)));
      return { put, get };
    } finally {
      s.close();
      await sc.stop();
    }
  },
};

// ---- main ------------------------------------------------------------------------------------

async function main() {
  if (!fs.existsSync(sidecarBin)) throw new Error(`${sidecarBin} is missing: npm run build`);
  const base = fs.mkdtempSync(path.join(opt.dir, 'shmpipe-transfer-'));
  const cleanup = () => opt.keep || fs.rmSync(base, { recursive: true, force: true });
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    const src = path.join(base, 'src');
    const list = sizes(TOTAL);
    const t0 = now();
    const files = generate(src, list);
    const bytes = list.reduce((a, b) => a + b, 0);
    const hist = {};
    for (const s of list) {
      const k = s >= 64 * MiB ? '>=64MiB' : s >= MiB ? '1-64MiB' : s >= 64 << 10 ? '64KiB-1MiB' : '<64KiB';
      hist[k] = (hist[k] ?? 0) + 1;
    }
    console.log(
      `data set: ${files.length} files, ${(bytes / MiB).toFixed(0)} MiB (${Object.entries(hist).map(([k, v]) => `${v} ${k}`).join(', ')}), ` +
        `largest ${(Math.max(...list) / MiB).toFixed(1)} MiB, smallest ${Math.min(...list)} B; generated in ${secs(t0).toFixed(1)} s under ${base}`,
    );
    console.log(`concurrency ${CONCURRENCY} files; shm: ${SLOTS} slots of ${SLOT / MiB} MiB; uds: ${SLOT / MiB} MiB frames; file:// store on ${opt.dir}, no fsync`);

    const runs = {};
    const names = opt.only.split(',');
    const line = (name, phase, m, note = '') => {
      const cpu = m.cpuAgent + m.cpuSidecar;
      return `${name.padEnd(5)} ${phase}  ${(bytes / m.wall / GB).toFixed(2).padStart(6)} GB/s  ${m.wall.toFixed(2).padStart(6)} s   CPU ${(cpu / (bytes / GB)).toFixed(2)} s/GB (agent ${m.cpuAgent.toFixed(1)} s, sidecar ${m.cpuSidecar.toFixed(1)} s)${note}`;
    };
    for (let round = 1; round <= REPEAT; round++) {
      for (const name of names) {
        const store = path.join(base, `store-${name}`);
        const out = path.join(base, `out-${name}`);
        for (const f of files) fs.mkdirSync(path.join(out, path.dirname(f.rel)), { recursive: true });
        const r = await ways[name](files, store, out);
        r.bad = opt['no-verify'] ? 0 : await verify(files, out);
        (runs[name] ??= []).push(r);
        if (REPEAT > 1) {
          console.log(line(name, 'put', r.put, `  [run ${round}]`));
          console.log(line(name, 'get', r.get, `  [run ${round}]`));
        }
        if (r.bad > 0) console.log(`${name}: ${r.bad} downloads differ from their source!`);
        fs.rmSync(store, { recursive: true, force: true });
        fs.rmSync(out, { recursive: true, force: true });
      }
    }
    // The median run per way and phase (by wall time).
    const median = (list) => [...list].sort((a, b) => a.wall - b.wall)[Math.floor(list.length / 2)];
    const results = {};
    if (REPEAT > 1) console.log(`median of ${REPEAT} runs:`);
    for (const name of names) {
      results[name] = { put: median(runs[name].map((r) => r.put)), get: median(runs[name].map((r) => r.get)), bad: runs[name].reduce((a, r) => a + r.bad, 0) };
      console.log(line(name, 'put', results[name].put));
      console.log(line(name, 'get', results[name].get));
    }

    const gbps = (name, phase) => (results[name] ? bytes / results[name][phase].wall / GB : null);
    const cpuPerGb = (name, phase) => (results[name] ? (results[name][phase].cpuAgent + results[name][phase].cpuSidecar) / (bytes / GB) : null);
    const ratio = (a, b) => (a !== null && b !== null ? a / b : null);
    const fix = (x, d = 3) => (x === null ? null : Number(x.toFixed(d)));
    const summary = {
      bytes,
      files: files.length,
      concurrency: CONCURRENCY,
      slot_size: SLOT,
      slots: SLOTS,
      repeat: REPEAT,
      shm_put_gbps: fix(gbps('shm', 'put')),
      node_put_gbps: fix(gbps('node', 'put')),
      uds_put_gbps: fix(gbps('uds', 'put')),
      shm_get_gbps: fix(gbps('shm', 'get')),
      node_get_gbps: fix(gbps('node', 'get')),
      uds_get_gbps: fix(gbps('uds', 'get')),
      shm_put_cpu_s_per_gb: fix(cpuPerGb('shm', 'put')),
      node_put_cpu_s_per_gb: fix(cpuPerGb('node', 'put')),
      uds_put_cpu_s_per_gb: fix(cpuPerGb('uds', 'put')),
      shm_get_cpu_s_per_gb: fix(cpuPerGb('shm', 'get')),
      node_get_cpu_s_per_gb: fix(cpuPerGb('node', 'get')),
      uds_get_cpu_s_per_gb: fix(cpuPerGb('uds', 'get')),
      put_shm_over_node: fix(ratio(gbps('shm', 'put'), gbps('node', 'put')), 2),
      get_shm_over_node: fix(ratio(gbps('shm', 'get'), gbps('node', 'get')), 2),
      put_shm_over_uds: fix(ratio(gbps('shm', 'put'), gbps('uds', 'put')), 2),
      get_shm_over_uds: fix(ratio(gbps('shm', 'get'), gbps('uds', 'get')), 2),
      mismatches: Object.values(results).reduce((a, r) => a + r.bad, 0),
      load_avg_1m: fix(os.loadavg()[0], 2),
    };
    console.log(
      `ratios: put shm/node ${summary.put_shm_over_node}x, shm/uds ${summary.put_shm_over_uds}x; get shm/node ${summary.get_shm_over_node}x, shm/uds ${summary.get_shm_over_uds}x (load average ${summary.load_avg_1m})`,
    );
    console.log(JSON.stringify(summary));
  } finally {
    cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
