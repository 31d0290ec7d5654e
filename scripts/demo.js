#!/usr/bin/env node
// `npm run demo`: the main job on the embedded default store, with no server to set up.
// Generates a sample directory (mixed sizes, compressible and random data, duplicates), starts a
// private sidecar on the default local store (file://$XDG_DATA_HOME/shmpipe/store, else
// ~/.local/share/shmpipe/store; SHMPIPE_STORE overrides), uploads every file with putFile (read
// straight into shared-memory slots, many in flight), downloads them again with getFile into a
// second directory, verifies every byte, and prints a summary.
//
// The backup/restore CLI (issue 5: snapshots, dedup, encryption) will replace this job here.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { connect, startSidecar } = require('../ts-lib/dist/index.js');

const MiB = 1 << 20;
const SIZES = [0, 1, 4096, 100_000, MiB, 3 * MiB + 17, 32 * MiB, 96 * MiB];

function makeSample(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const files = [];
  let n = 0;
  for (const size of SIZES) {
    for (const kind of ['random', 'text']) {
      const name = `${String(n++).padStart(2, '0')}-${kind}-${size}.bin`;
      const buf = kind === 'random' ? crypto.randomBytes(size) : Buffer.alloc(size, 'shmpipe moves bytes without copying them. ');
      fs.writeFileSync(path.join(dir, name), buf);
      files.push(name);
    }
  }
  fs.copyFileSync(path.join(dir, files[files.length - 2]), path.join(dir, 'duplicate.bin'));
  files.push('duplicate.bin');
  return files;
}

const sha = (p) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
const fmt = (bytes, s) => `${(bytes / MiB).toFixed(1)} MiB in ${s.toFixed(2)} s = ${(bytes / MiB / s).toFixed(0)} MiB/s`;

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-demo-'));
  const src = path.join(work, 'sample');
  const back = path.join(work, 'restored');
  fs.mkdirSync(back);
  const files = makeSample(src);
  const total = files.reduce((a, f) => a + fs.statSync(path.join(src, f)).size, 0);
  const run = `demo-${Date.now()}`;
  console.log(`sample: ${files.length} files, ${(total / MiB).toFixed(1)} MiB in ${src}`);

  const sidecar = await startSidecar();
  const client = await connect({ socketPath: sidecar.socketPath });
  try {
    let t = process.hrtime.bigint();
    const put = await Promise.all(files.map((f) => client.putFile(path.join(src, f), `${run}/${f}`)));
    const putS = Number(process.hrtime.bigint() - t) / 1e9;
    console.log(`upload:   ${fmt(total, putS)} (sidecar CRC-32C per object: ${put.length} objects)`);

    t = process.hrtime.bigint();
    const got = await Promise.all(files.map((f) => client.getFile(`${run}/${f}`, path.join(back, f))));
    const getS = Number(process.hrtime.bigint() - t) / 1e9;
    console.log(`download: ${fmt(total, getS)} (every object verified against its checksum: ${got.every((g) => g.verified)})`);

    const bad = files.filter((f) => sha(path.join(src, f)) !== sha(path.join(back, f)));
    if (bad.length) throw new Error(`restored files differ: ${bad.join(', ')}`);
    console.log(`verified: all ${files.length} files restored bit-exact`);

    let listed = 0;
    for await (const _ of client.list(`${run}/`)) listed++;
    for (const f of files) await client.delete(`${run}/${f}`);
    const st = await client.stats();
    console.log(`store: listed ${listed} objects under ${run}/, then deleted them`);
    console.log(`sidecar: ${st.global.requests_total} requests, errors: ${JSON.stringify(Object.fromEntries(Object.entries(st.global.errors_by_code).filter(([, v]) => v > 0)))}`);
  } finally {
    await client.close();
    await sidecar.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`demo failed: ${e.code ?? ''} ${e.message}`);
  process.exit(1);
});
