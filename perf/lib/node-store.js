// The pure-Node implementation of perf:transfer's job: the same objects on disk as the
// sidecar's file:// store writes (data ‖ the store crate's 32-byte trailer with the CRC-32C,
// written to a temporary file and renamed into place), with fs streams and a native CRC-32C.
// getFile verifies the checksum before it renames the download into place, like the sidecar.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { Transform } = require('node:stream');
const { pipeline } = require('node:stream/promises');
const { crc32c } = require('./crc32c');

const TRAILER = 32;
const MAGIC = Buffer.from('SHMPSTOR');

/** The store crate's trailer (sidecar/store/src/trailer.rs). */
function trailer(dataLen, checksum) {
  const b = Buffer.alloc(TRAILER);
  b.writeBigUInt64LE(BigInt(dataLen), 0);
  b.writeUInt32LE(checksum, 8);
  b[16] = 1; // CRC-32C
  b[17] = 1; // version
  b.writeUInt16LE(TRAILER, 18);
  b.writeUInt32LE(crc32c(b.subarray(0, 20)), 20);
  MAGIC.copy(b, 24);
  return b;
}

function parseTrailer(b, objectLen) {
  if (!b.subarray(24, 32).equals(MAGIC)) throw new Error('no shmpipe trailer');
  if (crc32c(b.subarray(0, 20)) !== b.readUInt32LE(20)) throw new Error('trailer checksum mismatch');
  const dataLen = Number(b.readBigUInt64LE(0));
  if (dataLen + TRAILER !== objectLen) throw new Error('object length disagrees with its trailer');
  return { dataLen, checksum: b.readUInt32LE(8) };
}

class NodeStore {
  /** `highWaterMark`: the stream chunk size (perf:transfer uses the shm slot size). */
  constructor(root, { highWaterMark = 1 << 20 } = {}) {
    this.root = root;
    this.hwm = highWaterMark;
  }

  async putFile(file, key) {
    const dst = path.join(this.root, key);
    await fs.promises.mkdir(path.dirname(dst), { recursive: true });
    const tmp = `${dst}.${crypto.randomBytes(6).toString('hex')}.tmp`;
    let crc = 0;
    let len = 0;
    const sum = new Transform({
      transform(chunk, _enc, cb) {
        crc = crc32c(chunk, crc);
        len += chunk.length;
        cb(null, chunk);
      },
      flush(cb) {
        cb(null, trailer(len, crc));
      },
    });
    try {
      await pipeline(fs.createReadStream(file, { highWaterMark: this.hwm }), sum, fs.createWriteStream(tmp, { highWaterMark: this.hwm }));
      await fs.promises.rename(tmp, dst);
    } catch (e) {
      await fs.promises.rm(tmp, { force: true });
      throw e;
    }
    return { size: len, checksum: crc };
  }

  async getFile(key, file) {
    const src = path.join(this.root, key);
    const fh = await fs.promises.open(src, 'r');
    let t;
    try {
      const { size } = await fh.stat();
      const tb = Buffer.alloc(TRAILER);
      await fh.read(tb, 0, TRAILER, size - TRAILER);
      t = parseTrailer(tb, size);
    } finally {
      await fh.close();
    }
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.tmp`);
    let crc = 0;
    const check = new Transform({
      transform(chunk, _enc, cb) {
        crc = crc32c(chunk, crc);
        cb(null, chunk);
      },
      flush(cb) {
        cb(crc === t.checksum ? null : new Error(`integrity: stored ${t.checksum}, data has ${crc}`));
      },
    });
    try {
      const rs = t.dataLen > 0 ? fs.createReadStream(src, { highWaterMark: this.hwm, start: 0, end: t.dataLen - 1 }) : fs.createReadStream('/dev/null');
      await pipeline(rs, check, fs.createWriteStream(tmp, { highWaterMark: this.hwm }));
      await fs.promises.rename(tmp, file);
    } catch (e) {
      await fs.promises.rm(tmp, { force: true });
      throw e;
    }
    return { size: t.dataLen, verified: true };
  }
}

module.exports = { NodeStore, trailer, parseTrailer };
