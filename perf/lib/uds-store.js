// perf:transfer's UDS baseline: the same uploads and downloads through the sidecar's baseline
// transport (sidecar/src/service/baseline.rs) — each request a frame on a Unix stream socket (u32 length,
// 64-byte entry, payload), each reply likewise — instead of shared memory. Files are read
// straight into the outgoing frame (no extra copy in JS); download chunks are written to the
// file from the socket's own buffers with one writev per chunk (no reassembly copy). One
// connection per file in flight; a file's requests are pipelined.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const NO_SLOT = 0xffffffff;
const OP = { PUT: 16, OPEN_WRITE: 17, WRITE: 18, COMMIT: 19, ABORT: 20, OPEN_READ: 21 };
const MORE = 1;
const TWO_32 = 2 ** 32;

const fsRead = (fd, buf, off, len, pos) => new Promise((res, rej) => fs.read(fd, buf, off, len, pos, (e, n) => (e ? rej(e) : res(n))));
const fsWritev = (fd, bufs, pos) => new Promise((res, rej) => fs.writev(fd, bufs, pos, (e, n) => (e ? rej(e) : res(n))));

function writeEntry(b, at, id, opcode, args) {
  b.writeUInt32LE(id >>> 0, at);
  b.writeUInt32LE(Math.floor(id / TWO_32), at + 4);
  b[at + 8] = opcode;
  b.fill(0, at + 9, at + 12);
  b.writeUInt32LE(NO_SLOT, at + 12);
  b.fill(0, at + 16, at + 32);
  for (let i = 0; i < 4; i++) {
    const a = BigInt(args[i] ?? 0);
    b.writeBigUInt64LE(a, at + 32 + 8 * i);
  }
}

function decodeCompletion(b) {
  return {
    requestId: b.readUInt32LE(0) + b.readUInt32LE(4) * TWO_32,
    status: b.readInt32LE(8),
    flags: b.readUInt32LE(12),
    result: b.readUInt32LE(24) + b.readUInt32LE(28) * TWO_32,
    aux0: b.readUInt32LE(32) + b.readUInt32LE(36) * TWO_32,
  };
}

/** One baseline connection: frames out, replies in order to per-request handlers. */
class UdsConn {
  static async open(socketPath) {
    const sock = net.connect(socketPath);
    await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    return new UdsConn(sock);
  }

  constructor(sock) {
    this.sock = sock;
    this.nextId = 1;
    this.handlers = []; // FIFO: (completion, pieces) => boolean done
    this.chunks = [];
    this.avail = 0;
    this.need = 4;
    this.state = 0; // 0 length, 1 entry, 2 payload
    this.frameLen = 0;
    this.completion = null;
    this.failure = null;
    sock.on('data', (d) => this.onData(d));
    const fail = (e) => {
      this.failure = e ?? new Error('baseline connection closed');
      for (const h of this.handlers.splice(0)) h(null, null, this.failure);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(null));
  }

  /** Takes `n` bytes off the input as a list of Buffer slices (no copy). */
  take(n) {
    const out = [];
    while (n > 0) {
      const c = this.chunks[0];
      if (c.length <= n) {
        out.push(c);
        this.chunks.shift();
        n -= c.length;
      } else {
        out.push(c.subarray(0, n));
        this.chunks[0] = c.subarray(n);
        n = 0;
      }
    }
    return out;
  }

  onData(d) {
    this.chunks.push(d);
    this.avail += d.length;
    while (this.avail >= this.need) {
      const pieces = this.take(this.need);
      this.avail -= this.need;
      if (this.state === 0) {
        const b = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
        this.frameLen = b.readUInt32LE(0);
        this.state = 1;
        this.need = 64;
      } else if (this.state === 1) {
        this.completion = decodeCompletion(pieces.length === 1 ? pieces[0] : Buffer.concat(pieces));
        if (this.frameLen > 64) {
          this.state = 2;
          this.need = this.frameLen - 64;
        } else {
          this.deliver(this.completion, []);
        }
      } else {
        this.deliver(this.completion, pieces);
      }
    }
  }

  deliver(c, pieces) {
    this.state = 0;
    this.need = 4;
    const h = this.handlers[0];
    if (h(c, pieces, null)) this.handlers.shift();
  }

  /** Sends one request frame whose payload the caller has written at `frame[68..]`. */
  send(frame, opcode, args, handler, onWritten) {
    if (this.failure) throw this.failure;
    const id = this.nextId++;
    frame.writeUInt32LE(frame.length - 4, 0);
    writeEntry(frame, 4, id, opcode, args);
    this.handlers.push(handler);
    this.sock.write(frame, onWritten);
  }

  /** A request with one reply; resolves with the completion (rejects on an error status). */
  call(frame, opcode, args, onWritten) {
    return new Promise((resolve, reject) => {
      this.send(frame, opcode, args, (c, _p, err) => {
        if (err) reject(err);
        else if (c.status !== 0) reject(new Error(`baseline op ${opcode} failed with status ${c.status}`));
        else resolve(c);
        return true;
      }, onWritten);
    });
  }

  close() {
    this.sock.destroy();
  }
}

class UdsStore {
  /** `chunk`: payload bytes per WRITE / file read; `window`: WRITEs in flight per file. */
  constructor(socketPath, { chunk = 1 << 20, window = 8 } = {}) {
    this.socketPath = socketPath;
    this.chunk = chunk;
    this.window = window;
    this.idle = [];
  }

  async conn() {
    const c = this.idle.pop();
    if (c) return c;
    const n = await UdsConn.open(this.socketPath);
    n.pool = [];
    return n;
  }

  release(c) {
    if (!c.failure) this.idle.push(c);
  }

  /**
   * A frame buffer of `n` bytes. Large ones come from the connection's pool (reused, so their
   * pages fault in only once) and go back with `giveBack` once the socket has taken them.
   */
  frame(c, n) {
    if (n <= 4096) return Buffer.alloc(n);
    const b = c.pool.pop() ?? Buffer.allocUnsafeSlow(68 + this.chunk + 1024);
    return b.subarray(0, n);
  }

  giveBack(c, f) {
    return f.length <= 4096 ? undefined : () => c.pool.push(Buffer.from(f.buffer));
  }

  async putFile(file, key) {
    const k = Buffer.from(key);
    const c = await this.conn();
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const giveBack = (b) => this.giveBack(c, b);
      if (size + k.length <= this.chunk) {
        const f = this.frame(c, 68 + k.length + size);
        k.copy(f, 68);
        await readFully(fd, f, 68 + k.length, size, 0);
        const r = await c.call(f, OP.PUT, [k.length], giveBack(f));
        return { size: r.result, checksum: r.aux0 };
      }
      const kf = this.frame(c, 68 + k.length);
      k.copy(kf, 68);
      const handle = (await c.call(kf, OP.OPEN_WRITE, [], giveBack(kf))).result;
      const pending = [];
      for (let pos = 0; pos < size; pos += this.chunk) {
        const n = Math.min(this.chunk, size - pos);
        if (pending.length >= this.window) await pending.shift();
        const f = this.frame(c, 68 + n);
        await readFully(fd, f, 68, n, pos);
        pending.push(c.call(f, OP.WRITE, [handle], giveBack(f)));
      }
      await Promise.all(pending);
      const r = await c.call(this.frame(c, 68), OP.COMMIT, [handle]);
      return { size: r.result, checksum: r.aux0 };
    } finally {
      fs.closeSync(fd);
      this.release(c);
    }
  }

  async getFile(key, file) {
    const k = Buffer.from(key);
    const c = await this.conn();
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.tmp`);
    const fd = fs.openSync(tmp, 'wx');
    let ok = false;
    try {
      let tail = Promise.resolve();
      const f = this.frame(c, 68 + k.length);
      k.copy(f, 68);
      const done = new Promise((resolve, reject) => {
        c.send(f, OP.OPEN_READ, [0, 0xffffffffffffffffn], (cpl, pieces, err) => {
          if (err) {
            reject(err);
            return true;
          }
          if (cpl.status !== 0) {
            reject(new Error(`baseline OPEN_READ failed with status ${cpl.status}`));
            return true;
          }
          if ((cpl.flags & MORE) !== 0) {
            // One write at a time per file, as the shm client does (concurrent writes to one
            // tmpfs file contend for its inode lock).
            tail = tail.then(() => fsWritev(fd, pieces, cpl.aux0));
            return false;
          }
          resolve({ size: cpl.result, verified: cpl.aux0 === 1 });
          return true;
        });
      });
      const r = await done;
      await tail;
      fs.closeSync(fd);
      fs.renameSync(tmp, file);
      ok = true;
      return r;
    } finally {
      if (!ok) {
        try {
          fs.closeSync(fd);
        } catch {
          // closed already
        }
        fs.rmSync(tmp, { force: true });
      }
      this.release(c);
    }
  }

  close() {
    for (const c of this.idle.splice(0)) c.close();
  }
}

async function readFully(fd, buf, off, len, pos) {
  let got = 0;
  while (got < len) {
    const n = await fsRead(fd, buf, off + got, len - got, pos + got);
    if (n === 0) throw new Error('file shrank while read');
    got += n;
  }
}

module.exports = { UdsStore };
