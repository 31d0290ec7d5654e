// CRC-32C (Castagnoli, reflected, init/xorout 0xFFFFFFFF) in plain JS, slice-by-16, for the
// pure-Node side of perf:transfer: the same checksum the sidecar computes (with SSE4.2). The npm
// package crc-32's crc32c is correct but was ~1.5x slower here, so the Node baseline uses this.
// `crc32c(buf, previous)` continues a running checksum. `node perf/lib/crc32c.js` checks it
// against crc-32 and the SPEC check value, then prints its speed.
'use strict';
const P = 0x82f63b78;
const T = [];
for (let k = 0; k < 16; k++) T.push(new Int32Array(256));
for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ P : c >>> 1; T[0][n] = c; }
for (let n = 0; n < 256; n++) { let c = T[0][n]; for (let k = 1; k < 16; k++) { c = T[0][c & 0xff] ^ (c >>> 8); T[k][n] = c; } }
const [T0,T1,T2,T3,T4,T5,T6,T7,T8,T9,T10,T11,T12,T13,T14,T15] = T;
function crc32c(buf, crc = 0) {
  let c = ~crc | 0;
  let i = 0;
  const n = buf.length;
  while (i < n && ((buf.byteOffset + i) & 3) !== 0) c = T0[(c ^ buf[i++]) & 0xff] ^ (c >>> 8);
  const blocks = (n - i) >>> 4;
  if (blocks > 0) {
    const u = new Int32Array(buf.buffer, buf.byteOffset + i, blocks * 4);
    const len = blocks * 4;
    for (let w = 0; w < len; w += 4) {
      const a = u[w] ^ c, b = u[w + 1], d = u[w + 2], e = u[w + 3];
      c = T15[a & 0xff] ^ T14[(a >>> 8) & 0xff] ^ T13[(a >>> 16) & 0xff] ^ T12[a >>> 24] ^
          T11[b & 0xff] ^ T10[(b >>> 8) & 0xff] ^ T9[(b >>> 16) & 0xff] ^ T8[b >>> 24] ^
          T7[d & 0xff] ^ T6[(d >>> 8) & 0xff] ^ T5[(d >>> 16) & 0xff] ^ T4[d >>> 24] ^
          T3[e & 0xff] ^ T2[(e >>> 8) & 0xff] ^ T1[(e >>> 16) & 0xff] ^ T0[e >>> 24];
    }
    i += blocks * 16;
  }
  while (i < n) c = T0[(c ^ buf[i++]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
module.exports = { crc32c };
if (require.main === module) {
  const ref = require('crc-32/crc32c');
  const b = require('crypto').randomBytes(64 << 20);
  for (const len of [0,1,7,8,9,15,16,17,100,1000,12345]) for (const off of [0,1,2,3]) { const s = b.subarray(off, off+len); if (crc32c(s) !== (ref.buf(s)>>>0)) throw new Error('mismatch '+len); }
  if (crc32c(Buffer.from('123456789')) !== 0xe3069283) throw new Error('check');
  let x = crc32c(b.subarray(0, 1000), 0); x = crc32c(b.subarray(1000, 5000), x); if (x !== (ref.buf(b.subarray(0,5000))>>>0)) throw new Error('incremental');
  for (let r = 0; r < 3; r++) { let t = process.hrtime.bigint(); let x = 0; for (let i = 0; i < 4; i++) x = crc32c(b, x); console.log('slice16 GB/s', (4 * 64 * 1048576) / Number(process.hrtime.bigint() - t)); }
}
