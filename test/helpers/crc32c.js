// CRC-32C (Castagnoli) for checking the sidecar's ECHO checksums, as an unsigned 32-bit number.
// Backed by SheetJS crc-32's crc32c; test/vectors.test.js checks it against the SPEC vectors.
'use strict';

const crc32c = require('crc-32/crc32c');

/** CRC-32C of `buf` (a Buffer or Uint8Array), unsigned. */
function crc32cOf(buf) {
  return crc32c.buf(buf) >>> 0;
}

module.exports = { crc32c: crc32cOf };
