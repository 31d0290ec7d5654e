// A fake sidecar for client tests: test/helpers/fake-sidecar.py does the handshake (it can pass
// fds, Node cannot), and the test plays the sidecar's side of the rings itself through the
// client's own mapping (`client.raw.segment`): it reads the SQ, writes completions, grants and
// the heartbeat, and asks the fake to ring the cq doorbell. So a test can send exactly the
// entries a buggy or hostile sidecar would, in any order, and nothing else happens by itself.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { bundle } = require('./paths');

const p = require(bundle).protocol;
const SCRIPT = path.join(__dirname, 'fake-sidecar.py');

/**
 * Starts the fake on a fresh socket. The segment gets `grants` slots granted up front (ids
 * 0..grants-1, generation 1), as a real sidecar grants before READY.
 * @returns {Promise<{socketPath, layout, command(cmd), next(line), lines, stop()}>}
 */
async function startFakeSidecar(o = {}) {
  const params = { sq_capacity: o.sqCapacity ?? 8, cq_capacity: o.cqCapacity ?? 8, slot_count: o.slotCount ?? 4, slot_size: o.slotSize ?? 4096 };
  const layout = p.computeLayout(params);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-fake-'));
  const socketPath = path.join(dir, 'fake.sock');
  const segmentPath = path.join(dir, 'segment');
  const generation = 0x1234_5678_9abcn;
  const seg = Buffer.alloc(layout.segment_size);
  p.encodeHeader(layout, generation, seg);
  const grants = o.grants ?? 0;
  for (let i = 0; i < grants; i++) p.encodeGrant({ slot_id: i, slot_gen: 1 }, seg, layout.gq_offset + p.RING.entries + i * p.GRANT_ENTRY_SIZE);
  seg.writeBigUInt64LE(BigInt(grants), layout.gq_offset + p.RING.tail);
  seg.writeUInt32LE(p.STATE.READY, p.HEADER.state);
  fs.writeFileSync(segmentPath, seg);
  const welcome = {
    type: 'welcome',
    version: p.VERSION,
    session: 1,
    segment: segmentPath,
    segment_size: layout.segment_size,
    generation: generation.toString(),
    layout: {
      sq_offset: layout.sq_offset,
      sq_capacity: layout.sq_capacity,
      cq_offset: layout.cq_offset,
      cq_capacity: layout.cq_capacity,
      gq_offset: layout.gq_offset,
      gq_capacity: layout.gq_capacity,
      slot_offset: layout.slot_offset,
      slot_count: layout.slot_count,
      slot_size: layout.slot_size,
    },
    limits: { max_in_flight: o.maxInFlight ?? 8, read_reserve: 0, part_size: 1 << 20 },
  };
  const proc = spawn('python3', [SCRIPT, socketPath, segmentPath, JSON.stringify(welcome)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  let waiter = null;
  let exited = false;
  readline.createInterface({ input: proc.stdout }).on('line', (l) => {
    lines.push(l);
    waiter?.();
  });
  proc.once('exit', () => {
    exited = true;
    waiter?.();
  });
  /** Resolves with the first line not taken yet that starts with `prefix` (rejects after `ms`). */
  const taken = new Set();
  const next = (prefix, ms = 10_000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => ((waiter = null), reject(new Error(`fake sidecar: no "${prefix}" line within ${ms} ms; got ${JSON.stringify(lines)}`))), ms);
      const check = () => {
        const i = lines.findIndex((l, k) => !taken.has(k) && l.startsWith(prefix));
        if (i >= 0) {
          taken.add(i);
          clearTimeout(timer);
          waiter = null;
          resolve(lines[i]);
        } else if (exited) {
          clearTimeout(timer);
          waiter = null;
          reject(new Error(`fake sidecar exited; lines: ${JSON.stringify(lines)}`));
        }
      };
      waiter = check;
      check();
    });
  await next('listening');
  return {
    socketPath,
    layout,
    lines,
    next,
    async command(cmd) {
      proc.stdin.write(`${cmd}\n`);
      await next(`done ${cmd.split(' ')[0]}`);
    },
    async stop() {
      proc.kill('SIGKILL');
      if (!exited) await new Promise((r) => proc.once('exit', r));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The sidecar's halves of the rings over a client's mapping (the test is the producer of CQ/GQ). */
class PeerRings {
  constructor(client) {
    const seg = client.raw.segment;
    this.seg = seg;
    this.pos = new BigUint64Array(seg.buffer, seg.byteOffset, seg.byteLength / 8);
    this.l = client.layout;
    this.sqHead = Number(Atomics.load(this.pos, (this.l.sqOffset + p.RING.head) / 8));
  }

  /** Every submission published so far (decoded), consumed (SQ head moves). */
  submissions() {
    const tail = Number(Atomics.load(this.pos, (this.l.sqOffset + p.RING.tail) / 8));
    const out = [];
    for (; this.sqHead < tail; this.sqHead++) {
      const at = this.l.sqOffset + p.RING.entries + (this.sqHead % this.l.sqCapacity) * p.ENTRY_SIZE;
      out.push(p.decodeSubmission(this.seg, at));
    }
    Atomics.store(this.pos, (this.l.sqOffset + p.RING.head) / 8, BigInt(this.sqHead));
    return out;
  }

  /** Writes a completion (fields as protocol.encodeCompletion takes them, defaults filled) and publishes it. */
  complete(c) {
    const full = { status: 0, flags: 0, slot_id: p.NO_SLOT, slot_gen: 0, result: 0n, aux: [0n, 0n, 0n], reserved: 0n, ...c };
    const tailIndex = (this.l.cqOffset + p.RING.tail) / 8;
    const tail = Atomics.load(this.pos, tailIndex);
    p.encodeCompletion(full, this.seg, this.l.cqOffset + p.RING.entries + Number(tail % BigInt(this.l.cqCapacity)) * p.ENTRY_SIZE);
    Atomics.store(this.pos, tailIndex, tail + 1n);
  }

  /** Writes and publishes a grant. */
  grant(slot_id, slot_gen) {
    const tailIndex = (this.l.gqOffset + p.RING.tail) / 8;
    const tail = Atomics.load(this.pos, tailIndex);
    p.encodeGrant({ slot_id, slot_gen }, this.seg, this.l.gqOffset + p.RING.entries + Number(tail % BigInt(this.l.gqCapacity)) * p.GRANT_ENTRY_SIZE);
    Atomics.store(this.pos, tailIndex, tail + 1n);
  }

  /** Stores `value` as a ring position ('cq'/'gq' tail or 'sq' head) as a broken sidecar might. */
  setPosition(ring, field, value) {
    const offset = { sq: this.l.sqOffset, cq: this.l.cqOffset, gq: this.l.gqOffset }[ring];
    Atomics.store(this.pos, (offset + p.RING[field]) / 8, BigInt(value));
  }

  /** Advances sidecar_heartbeat by one. */
  beat() {
    Atomics.add(this.pos, p.HEADER.sidecar_heartbeat / 8, 1n);
  }
}

/** Lets the client's microtask flush publish what it submitted. */
const tick = () => new Promise((r) => setImmediate(r));

module.exports = { startFakeSidecar, PeerRings, tick };
