// The object store through the sidecar, file:// backend in the test's temp directory (the
// shared suite in helpers/store-suite.js), plus what only a local store shows: staging files.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { storeSuite, MiB, filesUnder } = require('./helpers/store-suite');

let root = null;

storeSuite('object store: file://', {
  async env() {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-store-'));
    return { SHMPIPE_STORE: `file://${root}`, SHMPIPE_STORE_FSYNC: 'false' };
  },
  async corrupt(key) {
    const file = path.join(root, key);
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, 1000);
    b[0] ^= 0x40;
    fs.writeSync(fd, b, 0, 1, 1000); // a data byte; the trailer (last 32 bytes) is intact
    fs.closeSync(fd);
  },
  // object_store stages a multipart upload in `<key>#<n>` next to the key.
  async inProgress(key) {
    return filesUnder(root).filter((f) => f.startsWith(`${key}#`));
  },
  bigFile: 1024 * MiB,
});

after(() => {
  if (root !== null) fs.rmSync(root, { recursive: true, force: true });
});
