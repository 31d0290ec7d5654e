// Files for the store tests: random content of a given size written in chunks (with its
// SHA-256 computed on the way), hashing a file, and listing what a directory tree holds.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const CHUNK = 16 << 20;

/** Writes `size` random bytes to `file`; resolves with their SHA-256 (hex). */
async function makeFile(file, size) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w');
  try {
    for (let done = 0; done < size; ) {
      const n = Math.min(CHUNK, size - done);
      const b = crypto.randomBytes(n);
      h.update(b);
      fs.writeSync(fd, b, 0, n, done);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** SHA-256 (hex) of a file's contents. */
function sha256File(file) {
  return new Promise((resolve, reject) => {
    const h = crypto.createHash('sha256');
    fs.createReadStream(file, { highWaterMark: 4 << 20 })
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** Every regular file under `dir`, as paths relative to it. */
function filesUnder(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out.sort();
}

module.exports = { makeFile, sha256File, filesUnder };
