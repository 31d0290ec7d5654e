#!/usr/bin/env node
// perf:rtt — the TS client against the real sidecar, shared memory vs the UDS baseline transport
// (the same sidecar, the same requests and payload bytes over a Unix stream socket):
//   (a) `await client.echo()` round trip with one request in flight (64-byte payload), p50/p99;
//   (b) pipelined NOP requests/s with many in flight;
//   (c) GB/s of 1 MiB payloads through to the sidecar's CRC-32C (shm: the payload is produced in
//       the slot, zero copy; also reported: copying it in from another buffer first);
// Fair to the baseline (issue #15, item 3): both sides run the same number of samples and the same
// number of requests in flight. A baseline connection answers its requests in order, one at a
// time, so the UDS side spreads its in-flight requests over several connections (each pipelined)
// and is measured with 1, 4 and 16 of them (16 only for 1 MiB payloads: one per request in
// flight); the best is compared, and all are printed.
//   (d) the sidecar's CPU over 5 s with one connected idle client (and the client's own).
// Prints a table, then one JSON object as the last line. Needs `npm run build` first.
// Measures, never asserts: speed is not checked in timed tests.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const { connect, protocol: p } = require(path.join(root, 'ts-lib', 'dist', 'index.js'));
const { startPerfSidecar } = require('./lib/sidecar');

const MiB = 1 << 20;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => process.hrtime.bigint();
const secs = (t0) => Number(now() - t0) / 1e9;

// ---- sidecar ---------------------------------------------------------------------------------

const startSidecar = () => startPerfSidecar('shmpipe-perf-');

/** CPU time of a process in seconds: the sum over its threads of /proc schedstat (ns precision). */
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

// ---- UDS baseline client ---------------------------------------------------------------------

/** A pipelining client of the baseline transport: replies come back in order. */
class Baseline {
  static async open(socketPath) {
    const sock = net.connect(socketPath);
    await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.setNoDelay?.(true);
    return new Baseline(sock);
  }

  constructor(sock) {
    this.sock = sock;
    this.waiting = []; // resolvers, in request order
    this.head = 0;
    this.buf = Buffer.alloc(0);
    sock.on('data', (chunk) => this.onData(chunk));
  }

  /** A ready-to-send request frame: length, entry, payload. */
  static frame(opcode, payload) {
    const n = 64 + payload.length;
    const f = Buffer.alloc(4 + n);
    f.writeUInt32LE(n, 0);
    p.encodeSubmission(
      { request_id: 1n, opcode, flags: 0, reserved0: 0, slot_id: p.NO_SLOT, slot_gen: 0, offset: 0, length: 0, reserved1: 0, args: [0n, 0n, 0n, 0n] },
      f,
      4,
    );
    payload.copy(f, 68);
    return f;
  }

  /** Sends a prepared frame; resolves with the completion's status word once its reply is in. */
  send(frame) {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.sock.write(frame);
    });
  }

  onData(chunk) {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let off = 0;
    while (this.buf.length - off >= 68) {
      const status = this.buf.readInt32LE(off + 4 + 8);
      const crc = this.buf.readUInt32LE(off + 4 + 32);
      off += 68;
      const r = this.waiting[this.head];
      this.waiting[this.head++] = undefined;
      r({ status, crc });
    }
    if (this.head > 4096 && this.head * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }

  close() {
    this.sock.destroy();
  }
}

// ---- measurements ----------------------------------------------------------------------------

function percentiles(samplesUs) {
  const s = Float64Array.from(samplesUs).sort();
  return { p50: s[Math.floor(s.length * 0.5)], p99: s[Math.floor(s.length * 0.99)] };
}

/** (a) one request in flight: time `count` sequential calls of `call`. */
async function roundTrips(call, count) {
  const samples = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const t0 = now();
    await call();
    samples[i] = Number(now() - t0) / 1000;
  }
  return percentiles(samples);
}

/** Round-robin over `n` baseline connections: caller `w` of a closed loop uses connection w % n. */
async function openPool(socketPath, n) {
  const conns = [];
  for (let i = 0; i < n; i++) conns.push(await Baseline.open(socketPath));
  return { send: (w, frame) => conns[w % n].send(frame), close: () => conns.forEach((c) => c.close()) };
}

/** (b)/(c) `window` callers in a closed loop, `total` calls; returns calls per second. */
async function closedLoop(call, window, total) {
  let issued = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: window }, async (_, w) => {
      while (issued < total) {
        issued++;
        await call(w);
      }
    }),
  );
  return total / secs(t0);
}

async function main() {
  const sidecar = await startSidecar();
  const out = {};
  const rows = [];
  try {
    const client = await connect({ socketPath: sidecar.socketPath, slotCount: 64, slotSize: MiB, sqCapacity: 1024, cqCapacity: 1024 });
    const uds = await Baseline.open(sidecar.baselinePath);
    const pools = { 1: { send: (w, f) => uds.send(f), close() {} }, 4: await openPool(sidecar.baselinePath, 4), 16: await openPool(sidecar.baselinePath, 16) };
    const slots = [];
    for (let i = 0; i < 16; i++) slots.push(await client.alloc());
    for (const s of slots) s.buffer.fill(0x5a);
    const small = slots[0];
    const payload64 = Buffer.alloc(64, 0x5a);
    const udsEcho64 = Baseline.frame(p.OP_ECHO, payload64);
    const udsNop = Baseline.frame(p.OP_NOP, Buffer.alloc(0));
    const udsEcho1M = Baseline.frame(p.OP_ECHO, Buffer.alloc(MiB, 0x5a));
    const source = Buffer.alloc(MiB, 0x5a);

    // Warm every path first (JIT, FIFO/ring-full and wrap-around paths: LIMITS.md).
    await closedLoop(() => client.nop(), 4096, 400_000);
    for (const pool of Object.values(pools)) await closedLoop((w) => pool.send(w, udsNop), 1024, 100_000);
    await roundTrips(() => client.echo(small, 64), 20_000);
    await roundTrips(() => uds.send(udsEcho64), 20_000);
    await closedLoop((w) => client.echo(slots[w], MiB), 16, 512);
    for (const pool of Object.values(pools)) await closedLoop((w) => pool.send(w, udsEcho1M), 16, 512);

    // (a) round trip, one in flight, the same number of samples each
    const RTT_SAMPLES = 100_000;
    const shmRtt = await roundTrips(() => client.echo(small, 64), RTT_SAMPLES);
    const udsRtt = await roundTrips(() => uds.send(udsEcho64), RTT_SAMPLES);
    out.shm_rtt_p50_us = +shmRtt.p50.toFixed(2);
    out.shm_rtt_p99_us = +shmRtt.p99.toFixed(2);
    out.uds_rtt_p50_us = +udsRtt.p50.toFixed(2);
    out.uds_rtt_p99_us = +udsRtt.p99.toFixed(2);
    out.rtt_samples = RTT_SAMPLES;
    out.rtt_p50_ratio = +(udsRtt.p50 / shmRtt.p50).toFixed(2);
    rows.push(['echo 64 B round trip p50 / p99 (µs)', `${out.shm_rtt_p50_us} / ${out.shm_rtt_p99_us}`, `${out.uds_rtt_p50_us} / ${out.uds_rtt_p99_us}`, `${out.rtt_p50_ratio}x`]);

    // (b) pipelined NOPs, 1024 in flight on both sides, the same count
    const NOPS = 2_000_000;
    out.shm_rps = Math.round(await closedLoop(() => client.nop(), 1024, NOPS));
    out.uds_rps_by_conns = {};
    for (const [n, pool] of Object.entries(pools)) out.uds_rps_by_conns[n] = Math.round(await closedLoop((w) => pool.send(w, udsNop), 1024, NOPS));
    out.uds_rps = Math.max(...Object.values(out.uds_rps_by_conns));
    out.nop_count = NOPS;
    out.rps_ratio = +(out.shm_rps / out.uds_rps).toFixed(2);
    rows.push([
      'pipelined NOP requests/s (1024 in flight)',
      out.shm_rps.toLocaleString('en'),
      `${out.uds_rps.toLocaleString('en')} (conns ${Object.entries(out.uds_rps_by_conns).map(([n, v]) => `${n}: ${(v / 1e6).toFixed(2)}M`).join(', ')})`,
      `${out.rps_ratio}x`,
    ]);

    // (c) 1 MiB payloads through to the sidecar's checksum, 16 in flight
    const n1m = 8192;
    out.shm_gbps = +((await closedLoop((w) => client.echo(slots[w], MiB), 16, n1m)) * MiB / 1e9).toFixed(2);
    out.shm_copyin_gbps = +(
      ((await closedLoop(async (w) => {
        source.copy(slots[w].buffer);
        await client.echo(slots[w], MiB);
      }, 16, n1m / 2)) *
        MiB) /
      1e9
    ).toFixed(2);
    out.uds_gbps_by_conns = {};
    for (const [n, pool] of Object.entries(pools)) out.uds_gbps_by_conns[n] = +(((await closedLoop((w) => pool.send(w, udsEcho1M), 16, n1m)) * MiB) / 1e9).toFixed(2);
    out.uds_gbps = Math.max(...Object.values(out.uds_gbps_by_conns));
    out.mib_count = n1m;
    out.gbps_ratio = +(out.shm_gbps / out.uds_gbps).toFixed(2);
    rows.push(['1 MiB echo GB/s (16 in flight), zero copy', out.shm_gbps, `${out.uds_gbps} (conns ${Object.entries(out.uds_gbps_by_conns).map(([n, v]) => `${n}: ${v}`).join(', ')})`, `${out.gbps_ratio}x`]);
    rows.push(['  shm with the payload copied into the slot first', out.shm_copyin_gbps, '', `${(out.shm_copyin_gbps / out.uds_gbps).toFixed(2)}x`]);
    uds.close();
    for (const pool of Object.values(pools)) pool.close();

    // (d) idle: one connected client, nothing in flight, 5 s
    await sleep(500); // let the dispatcher's adaptive spin decay
    const c0 = cpuSeconds(sidecar.pid);
    const self0 = process.cpuUsage();
    const t0 = now();
    await sleep(5000);
    const wall = secs(t0);
    out.idle_cpu_pct = +(((cpuSeconds(sidecar.pid) - c0) / wall) * 100).toFixed(3);
    const self1 = process.cpuUsage(self0);
    out.idle_client_cpu_pct = +((((self1.user + self1.system) / 1e6) / wall) * 100).toFixed(2);
    rows.push(['idle CPU over 5 s, one client: sidecar % (client %)', `${out.idle_cpu_pct} (${out.idle_client_cpu_pct})`, '']);
    await client.close();
  } finally {
    await sidecar.stop();
  }

  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w2 = Math.max(16, ...rows.map((r) => String(r[2]).length));
  console.log(`${'measure'.padEnd(w0)} | ${'shmpipe'.padStart(16)} | ${'UDS baseline (best)'.padStart(w2)} | shm/UDS`);
  console.log(`${'-'.repeat(w0)}-+-${'-'.repeat(16)}-+-${'-'.repeat(w2)}-+--------`);
  for (const [k, a, b, r = ''] of rows) console.log(`${k.padEnd(w0)} | ${String(a).padStart(16)} | ${String(b).padStart(w2)} | ${r}`);
  console.log(`targets: echo p50 ≤ 4 µs and ≥ 5x the UDS baseline's, ≥ 2 M req/s pipelined, ≥ 5 GB/s of 1 MiB payloads, idle CPU < 2 %`);
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
