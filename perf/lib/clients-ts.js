// The TypeScript client's part of `npm run perf:clients` (perf/clients.js): the same measures as
// the Go and Python parts, each against the same work over the sidecar's UDS baseline transport
// written with node's net module, in the same run:
//   - await round trip of a 64-byte ECHO, one in flight: p50/p99;
//   - 1 MiB PUTs and whole-object GETs with --inflight requests in flight (shm: lanes sharing one
//     client; UDS: one connection per lane, since a baseline connection runs its requests in
//     order), the payload copied from process memory into the slot (or the socket);
//   - OS threads of this process before and with --threads-inflight DELAYs outstanding.
// Prints one JSON object. Needs `npm run build`.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { connect, protocol: p } = require(path.join(__dirname, '..', '..', 'ts-lib', 'dist', 'index.js'));

const { values: o } = parseArgs({
  options: {
    sidecar: { type: 'string' },
    baseline: { type: 'string' },
    'rtt-count': { type: 'string', default: '20000' },
    mib: { type: 'string', default: '512' },
    inflight: { type: 'string', default: '16' },
    'threads-inflight': { type: 'string', default: '10000' },
  },
});
const MiB = 1 << 20;
const RTT = Number(o['rtt-count']);
const TOTAL = Number(o.mib);
const K = Number(o.inflight);
const threads = () => fs.readdirSync('/proc/self/task').length;
const now = () => process.hrtime.bigint();
const pct = (xs) => {
  const s = Float64Array.from(xs).sort();
  return [s[Math.floor(s.length / 2)], s[Math.floor((s.length * 99) / 100)]];
};

/** One baseline connection: requests go out in order, replies come back in order. */
class Uds {
  static open() {
    return new Promise((resolve, reject) => {
      const s = net.connect(o.baseline);
      s.once('connect', () => resolve(new Uds(s))).once('error', reject);
    });
  }
  constructor(sock) {
    this.sock = sock;
    this.chunks = []; // received, not yet parsed (no reassembly copy of payloads)
    this.avail = 0;
    this.skip = 0; // payload bytes of the current reply still to drop
    this.waiters = [];
    sock.on('data', (d) => {
      this.chunks.push(d);
      this.avail += d.length;
      for (;;) {
        while (this.skip > 0 && this.chunks.length > 0) {
          const c = this.chunks[0];
          const n = Math.min(c.length, this.skip);
          this.skip -= n;
          this.avail -= n;
          if (n === c.length) this.chunks.shift();
          else this.chunks[0] = c.subarray(n);
        }
        if (this.skip > 0 || this.avail < 68) return;
        const head = this.chunks[0].length >= 68 ? this.chunks[0] : Buffer.concat(this.chunks);
        const n = head.readUInt32LE(0);
        const c = p.decodeCompletion(head, 4);
        this.skip = 68; // the header itself, then the payload
        this.skip += n - 64;
        if (c.status !== 0) throw new Error(`baseline op failed: ${c.status}`);
        this.waiters[0](c);
      }
    });
  }
  send(opcode, args, ...parts) {
    const n = 64 + parts.reduce((a, b) => a + b.length, 0);
    const head = Buffer.alloc(68);
    head.writeUInt32LE(n, 0);
    p.encodeSubmission({ request_id: 1n, opcode, flags: 0, reserved0: 0, slot_id: p.NO_SLOT, slot_gen: 0, offset: 0, length: 0, reserved1: 0, args: args.map(BigInt) }, head, 4);
    this.sock.write(head);
    for (const part of parts) this.sock.write(part);
  }
  /** Replies until one without MORE; resolves with the bytes the MORE replies carried. */
  replies() {
    return new Promise((resolve) => {
      let bytes = 0;
      this.waiters.push((c) => {
        if ((c.flags & p.CQ_MORE) !== 0) {
          bytes += Number(c.result);
          return;
        }
        this.waiters.shift();
        resolve(bytes);
      });
    });
  }
}

async function lanes(n, total, f) {
  let next = 0;
  const t0 = now();
  await Promise.all(Array.from({ length: n }, async (_, l) => {
    while (next < total) {
      next++;
      await f(l);
    }
  }));
  return Number(now() - t0) / 1e9;
}

async function main() {
  const out = { client: 'typescript', node: process.version };
  const c = await connect({ socketPath: o.sidecar, slotCount: 64, slotSize: 2 * MiB, clientName: 'perf-clients-ts' });
  const src = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i++) src[i] = (i * 7) & 0xff;
  const slot = await c.alloc();
  src.copy(slot.buffer, 0, 0, 64);
  const rtt = async (n) => {
    const xs = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const t0 = now();
      await c.echo(slot, 64);
      xs[i] = Number(now() - t0) / 1000;
    }
    return xs;
  };
  await rtt(20000); // warm: the JIT, and the dispatcher's spin adapts to a busy session
  [out.shm_rtt_p50_us, out.shm_rtt_p99_us] = pct(await rtt(RTT));
  slot.release();
  const u = await Uds.open();
  const small = src.subarray(0, 64);
  const urtt = async (n) => {
    const xs = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const t0 = now();
      const r = u.replies();
      u.send(p.OP_ECHO, [0, 0, 0, 0], small);
      await r;
      xs[i] = Number(now() - t0) / 1000;
    }
    return xs;
  };
  await urtt(5000);
  [out.uds_rtt_p50_us, out.uds_rtt_p99_us] = pct(await urtt(Math.floor(RTT / 2)));
  u.sock.destroy();

  const put = async (l) => {
    const s = await c.alloc();
    src.copy(s.buffer);
    await c.put(`perf/ts/${l}`, s, MiB);
  };
  const get = async (l) => {
    let n = 0;
    for await (const ch of c.openRead(`perf/ts/${l}`)) n += ch.length;
    if (n !== MiB) throw new Error(`got ${n} bytes`);
  };
  await lanes(K, 2 * K, put);
  await lanes(K, 2 * K, get);
  out.shm_put_gbps = (TOTAL * MiB) / (await lanes(K, TOTAL, put)) / 1e9;
  out.shm_get_gbps = (TOTAL * MiB) / (await lanes(K, TOTAL, get)) / 1e9;

  const conns = await Promise.all(Array.from({ length: K }, () => Uds.open()));
  const keys = conns.map((_, l) => Buffer.from(`perf/ts-uds/${l}`));
  const uput = async (l) => {
    const r = conns[l].replies();
    conns[l].send(p.OP_PUT, [keys[l].length, 0, 0, 0], keys[l], src);
    await r;
  };
  const uget = async (l) => {
    const r = conns[l].replies();
    conns[l].send(p.OP_OPEN_READ, [0, p.RANGE_TO_END, 0, 0], keys[l]);
    if ((await r) !== MiB) throw new Error('uds get: short');
  };
  await lanes(K, 2 * K, uput);
  await lanes(K, 2 * K, uget);
  out.uds_put_gbps = (TOTAL * MiB) / (await lanes(K, TOTAL, uput)) / 1e9;
  out.uds_get_gbps = (TOTAL * MiB) / (await lanes(K, TOTAL, uget)) / 1e9;
  for (const x of conns) x.sock.destroy();

  out.threads_before = threads();
  const calls = Array.from({ length: Number(o['threads-inflight']) }, () => c.delay(300_000));
  await new Promise((r) => setTimeout(r, 50));
  out.threads_during = threads();
  await Promise.all(calls);
  out.threads_after = threads();
  await c.close();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
