// A client process for the end-to-end tests, driven over the IPC channel of child_process.fork.
// argv[2] is a JSON object {mode, ...params}; results go back with process.send(). Running the
// client in its own process lets the tests count its threads, measure its memory, kill it, or
// run it under another uid. Loads only the public bundle.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { bundle } = require('./paths');
const { crc32c } = require('./crc32c');

const shmpipe = require(bundle);
const params = JSON.parse(process.argv[2]);

const send = (msg) => new Promise((resolve) => process.send(msg, () => resolve()));
const nextMessage = () => new Promise((resolve) => process.once('message', resolve));
const threads = () => fs.readdirSync('/proc/self/task').length;
const randInt = (lo, hi) => lo + Math.floor(Math.random() * (hi - lo + 1));

const modes = {
  /** N echoes with random sizes and contents, `window` in flight; verifies every checksum. */
  async echoLoad({ socketPath, count, window, slotCount, slotSize, maxSize }) {
    const client = await shmpipe.connect({ socketPath, slotCount, slotSize, clientName: `echo-load-${process.pid}` });
    const pool = crypto.randomBytes(1 << 20);
    let issued = 0;
    let settled = 0;
    let mismatches = 0;
    const errors = {};
    const worker = async () => {
      let slot = await client.alloc();
      let uses = 0;
      while (issued < count) {
        issued++;
        const len = randInt(0, maxSize);
        const src = randInt(0, pool.length - len);
        const at = randInt(0, slot.capacity - len);
        pool.copy(slot.buffer, at, src, src + len);
        const expected = crc32c(pool.subarray(src, src + len));
        try {
          const r = await client.echo(slot, len, at);
          if (r.length !== len || r.checksum !== expected) mismatches++;
        } catch (e) {
          errors[e.code] = (errors[e.code] ?? 0) + 1;
        }
        settled++;
        // Now and then hand the slot back and take a fresh grant (exercises SLOT_RELEASE + GQ).
        if (++uses % 64 === 0) {
          slot.release();
          slot = await client.alloc();
        }
      }
      slot.release();
    };
    await Promise.all(Array.from({ length: window }, worker));
    const stats = await client.stats();
    // End holding every slot the sidecar grants (all but its read reserve, SPEC §9), so the
    // parent knows exactly how many it must reclaim when this session closes.
    const held = [];
    while (held.length < client.layout.grantWindow) held.push(await client.alloc());
    await client.close();
    const closedValue = await client.closed;
    await send({ type: 'result', issued, settled, mismatches, errors, stats, held: held.length, grantWindow: client.layout.grantWindow, closedValue: closedValue === undefined ? null : closedValue.code });
  },

  /** Echoes `totalBytes` through `slotCount` 1 MiB slots; reports memory before and after. */
  async zeroCopy({ socketPath, totalBytes, slotCount, slotSize }) {
    const client = await shmpipe.connect({ socketPath, slotCount, slotSize, clientName: 'zero-copy' });
    const slots = [];
    for (let i = 0; i < client.layout.grantWindow; i++) slots.push(await client.alloc());
    const expected = slots.map((s) => {
      crypto.randomFillSync(s.buffer);
      return crc32c(s.buffer);
    });

    // Bytes written through slot.buffer are what the sidecar checksums, and a second write to the
    // same slot after an echo is seen by the next echo (nothing was copied or cached).
    const s0 = slots[0];
    const first = await client.echo(s0, s0.capacity);
    s0.buffer.fill(0xa5, 1000, 5000);
    s0.buffer[s0.capacity - 1] ^= 0xff;
    const rewritten = crc32c(s0.buffer);
    const second = await client.echo(s0, s0.capacity);
    const partial = await client.echo(s0, 4096, 12288);
    const checks = {
      first: first.checksum === expected[0] && first.length === s0.capacity,
      second: second.checksum === rewritten && rewritten !== expected[0],
      partial: partial.checksum === crc32c(s0.buffer.subarray(12288, 12288 + 4096)),
    };
    expected[0] = rewritten;

    let bad = 0;
    const pump = async (bytes) => {
      const per = Math.ceil(bytes / slotSize / slots.length);
      await Promise.all(
        slots.map(async (s, i) => {
          for (let k = 0; k < per; k++) {
            const r = await client.echo(s, s.capacity);
            if (r.checksum !== expected[i]) bad++;
          }
        }),
      );
      return per * slots.length * slotSize;
    };
    await pump(256 << 20); // warm up: JIT, first-use allocations
    global.gc?.();
    const before = { ...process.memoryUsage() };
    await send({ type: 'warm' });
    await nextMessage();
    const echoed = await pump(totalBytes);
    global.gc?.();
    const after = { ...process.memoryUsage() };
    await send({ type: 'result', checks, bad, echoed, before, after });
    await nextMessage();
    await client.close();
  },

  /**
   * The syscall-bytes proof of zero copy: streams `totalBytes` into `key` (OPEN_WRITE, a WRITE
   * per slot, COMMIT) and reads it back (OPEN_READ), each phase bracketed by this process's
   * /proc/self/io. Slots are filled in memory (a pattern stamped with the chunk number), so the
   * agent has no file I/O of its own: every byte it moves through read/write-family syscalls is
   * overhead. Before each phase: 'ready-<phase>', then waits for {cmd: 'go'} (so the IPC
   * message itself is outside the bracket), then 'done-<phase>' with the counters.
   */
  async ioProof({ socketPath, totalBytes, slotSize, key }) {
    const client = await shmpipe.connect({ socketPath, slotCount: 16, slotSize, clientName: 'io-proof' });
    const io = () => Object.fromEntries(fs.readFileSync('/proc/self/io', 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
    const chunks = Math.ceil(totalBytes / slotSize);
    const stamp = (buf, i, len) => {
      buf.fill(i & 0xff, 0, len);
      buf.writeUInt32LE(i, 0);
      buf.writeUInt32LE(0x5eed ^ i, len - 4);
    };
    const bracket = async (name, work) => {
      await send({ type: `ready-${name}` });
      await nextMessage();
      const before = io();
      const out = await work();
      const after = io();
      await send({ type: `done-${name}`, before, after, ...out });
    };

    await bracket('put', async () => {
      const w = await client.openWrite(key);
      let requests = 1;
      for (let i = 0; i < chunks; i++) {
        const len = Math.min(slotSize, totalBytes - i * slotSize);
        const s = await client.alloc();
        stamp(s.buffer, i, len);
        await w.write(s, len);
        requests++;
      }
      const r = await w.commit();
      return { requests: requests + 1, size: r.size };
    });

    await bracket('get', async () => {
      const stream = client.openRead(key);
      let requests = 1;
      let size = 0;
      let bad = 0;
      for await (const c of stream) {
        // A chunk fills its slot from 0; `offset` is where it lies in the object.
        const i = c.offset / slotSize;
        const b = c.slot.buffer;
        if (c.offset !== size || b.readUInt32LE(0) !== i || b.readUInt32LE(c.length - 4) !== (0x5eed ^ i) || b[4] !== (i & 0xff)) bad++;
        size += c.length;
        requests++;
      }
      const r = await stream.result;
      return { requests, size, bad, verified: r.verified };
    });
    await client.close();
  },

  /**
   * The threads proof: on {kind, n}, puts n requests of one kind in flight at once (every
   * request holding its own slot, submitted before any is awaited), reports 'submitted', waits
   * for all, reports 'settled' with how many succeeded. Kinds: delay, echo, put, get, list,
   * stat, delete, backup (FILE_PUT into an open backup), restore (CONTENT_READ of a file the
   * backup stored). Objects for get/stat/delete are the ones `put` made (keys t/<i>); the
   * repository is made at connect with a cheap KDF. {cmd: 'exit'} ends it.
   */
  async opsInFlight({ socketPath, slotCount, ringCapacity }) {
    // The backup ops check their slots against their own bundle's classes: a client from it.
    const B = require(path.join(path.dirname(bundle), 'backup.js'));
    const client = await B.connect({ socketPath, slotCount, slotSize: 4096, sqCapacity: ringCapacity, cqCapacity: ringCapacity, clientName: 'ops-in-flight' });
    const repo = await B.ops.repoInit(client, 'threads proof', { kdf_m_kib: 64, kdf_t: 1 });
    const backup = await B.ops.backupBegin(client, repo, { paths: ['/threads-proof'] });
    const contents = [];
    // Two small objects for LIST to find under its own prefix.
    for (const k of ['l/a', 'l/b']) {
      const s = await client.alloc();
      await client.put(k, s, 10);
    }
    const data = async (i, len = 1024) => {
      const s = await client.alloc();
      s.buffer.fill(i & 0xff, 0, len);
      s.buffer.writeUInt32LE(i, 0);
      return s;
    };
    const drain = async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      return n;
    };
    const one = {
      delay: async () => client.delay(20_000),
      echo: async (i) => {
        const s = await data(i);
        try {
          return await client.echo(s, 1024);
        } finally {
          s.release();
        }
      },
      put: async (i) => client.put(`t/${i}`, await data(i), 1024),
      get: async (i) => drain(client.openRead(`t/${i}`)),
      list: async () => {
        const keys = [];
        for await (const e of client.list('l')) keys.push(e.key);
        if (keys.length !== 2) throw new Error(`LIST found ${keys}`);
      },
      stat: async (i) => client.stat(`t/${i}`),
      delete: async (i) => client.delete(`t/${i}`),
      backup: async (i) => {
        const s = await data(i, 2048);
        try {
          const c = await B.ops.filePut(client, backup, s, 2048);
          contents.push(c.content);
        } finally {
          s.release();
        }
      },
      restore: async (i) => drain(B.ops.contentRead(client, repo, contents[i % contents.length])),
    };
    await send({ type: 'connected', threads: threads(), layout: client.layout });
    for (;;) {
      const msg = await nextMessage();
      if (msg.cmd === 'exit') break;
      if (msg.cmd === 'commit') {
        await B.ops.backupCommit(client, backup);
        await send({ type: 'committed' });
        continue;
      }
      const ps = [];
      for (let i = 0; i < msg.n; i++) ps.push(one[msg.kind](msg.base + i));
      await send({ type: 'submitted', threads: threads() });
      const results = await Promise.allSettled(ps);
      const failed = results.filter((r) => r.status === 'rejected');
      await send({ type: 'settled', ok: results.length - failed.length, threads: threads(), errors: [...new Set(failed.map((r) => `${r.reason.code}: ${r.reason.message}`))].slice(0, 5) });
    }
    await client.close();
  },

  /** Holds every slot and requests in flight, then waits to be killed. */
  async hold({ socketPath, slotCount, slotSize, delays }) {
    const client = await shmpipe.connect({ socketPath, slotCount, slotSize, clientName: 'hold' });
    for (let i = 0; i < delays; i++) client.delay(30_000_000).catch(() => {});
    const stats = await client.stats();
    const held = [];
    while (held.length < client.layout.grantWindow) held.push(await client.alloc());
    // Echoes on some slots (they finish quickly; the slots stay held).
    await Promise.all(held.slice(0, 2).map((s) => client.echo(s, s.capacity)));
    await send({ type: 'ready', stats, held: held.length });
    await new Promise(() => {}); // wait for SIGKILL
  },

  /**
   * Starts a streaming upload of `key`, writes `slots` full slots of random bytes (several parts'
   * worth, so a multipart upload exists), reports 'uploading', then waits to be killed.
   */
  async uploadAndHang({ socketPath, key, slots }) {
    const client = await shmpipe.connect({ socketPath, clientName: 'upload-and-hang' });
    const w = await client.openWrite(key);
    for (let i = 0; i < slots; i++) {
      const s = await client.alloc();
      crypto.randomFillSync(s.buffer);
      await w.write(s, s.capacity);
    }
    await send({ type: 'uploading' });
    await new Promise(() => {}); // until SIGKILL
  },

  /** Tries to connect and reports the outcome. */
  async connect({ socketPath }) {
    try {
      const client = await shmpipe.connect({ socketPath, slotCount: 2, slotSize: 4096, connectTimeoutMs: 5000 });
      await client.nop();
      await client.close();
      await send({ type: 'result', ok: true, uid: process.getuid() });
    } catch (e) {
      await send({ type: 'result', ok: false, code: e.code, message: e.message, uid: process.getuid() });
    }
  },
};

if (!(params.mode in modes)) {
  console.error(`child.js: unknown mode ${JSON.stringify(params.mode)}`);
  process.exit(2);
}
modes[params.mode](params)
  .then(() => process.exit(0))
  .catch(async (e) => {
    await send({ type: 'error', message: String(e && e.stack ? e.stack : e), code: e && e.code });
    process.exit(1);
  });
