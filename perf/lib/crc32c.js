// CRC-32C (Castagnoli) for the pure-Node side of perf:transfer, native: @node-rs/crc32 (napi-rs,
// SSE4.2 / hardware CRC, a prebuilt binary per platform from the npm registry), so that the
// transfer baseline measures the transport and not a checksum in JavaScript (issue #15, item 3:
// the slice-by-16 JS version used before cost ~2 s/GB). Node has no CRC-32C of its own
// (zlib.crc32 is CRC-32/IEEE). `crc32c(buf, previous)` continues a running checksum.
// `node perf/lib/crc32c.js` checks it against crc-32 and the SPEC check value, then prints its speed.
'use strict';
const native = require('@node-rs/crc32');

/** @param {Buffer} buf @param {number} [crc] a running checksum to continue */
function crc32c(buf, crc = 0) {
  return native.crc32c(buf, crc) >>> 0;
}
module.exports = { crc32c };

if (require.main === module) {
  const ref = require('crc-32/crc32c');
  const b = require('node:crypto').randomBytes(64 << 20);
  for (const len of [0, 1, 7, 8, 9, 15, 16, 17, 100, 1000, 12345]) {
    for (const off of [0, 1, 2, 3]) {
      const s = b.subarray(off, off + len);
      if (crc32c(s) !== ref.buf(s) >>> 0) throw new Error(`mismatch at length ${len}`);
    }
  }
  if (crc32c(Buffer.from('123456789')) !== 0xe3069283) throw new Error('check value');
  let x = crc32c(b.subarray(0, 1000), 0);
  x = crc32c(b.subarray(1000, 5000), x);
  if (x !== ref.buf(b.subarray(0, 5000)) >>> 0) throw new Error('incremental');
  for (let r = 0; r < 3; r++) {
    const t = process.hrtime.bigint();
    let y = 0;
    for (let i = 0; i < 4; i++) y = crc32c(b, y);
    console.log('native crc32c GB/s', (4 * 64 * 1048576) / Number(process.hrtime.bigint() - t));
  }
}
