#!/usr/bin/env node
// perf:native-cost — the measurement behind keeping the rings in JS (ts-lib/src/ring.ts) rather
// than in the addon: what one Node-API call costs against what the JS ring does per request
// (16 plain u32 stores for an entry, plus one Atomics store/load of a u64 position per batch),
// on a real shared mapping. Loads the addon directly: measuring its call cost is the point.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const addon = require(path.join(__dirname, '..', 'ts-lib', 'build', 'shmpipe_addon.node'));

function bench(name, n, f) {
  for (let i = 0; i < n / 10; i++) f(i); // warm
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f(i);
  const ns = Number(process.hrtime.bigint() - t0) / n;
  return [name, ns];
}

const file = path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), `shmpipe-perf-${process.pid}`);
const fd = fs.openSync(file, 'w+', 0o600);
fs.ftruncateSync(fd, 1 << 20);
const ab = addon.map(fd, 1 << 20);
fs.closeSync(fd);
fs.unlinkSync(file);
const u32 = new Uint32Array(ab);
const b64 = new BigUint64Array(ab);
const i32 = new Int32Array(ab);
const N = 5_000_000;
let pos = 0;
let sink = 0;

const rows = [
  bench('empty Node-API call (addon.noop)', N, () => addon.noop()),
  bench('Node-API call with 4 number args', N, (i) => addon.noop(i, 1, 2, 3)),
  bench('Atomics.store u64 position (BigInt)', N, (i) => Atomics.store(b64, 16, BigInt(i))),
  bench('Atomics.load u64 position (to Number)', N, () => (sink += Number(Atomics.load(b64, 16)))),
  bench('Atomics.load i32 flag', N, () => (sink += Atomics.load(i32, 96))),
  bench('write one 64-byte entry (16 u32 stores)', N, (i) => {
    const w = 1024 + ((i & 1023) << 4);
    u32[w] = i;
    u32[w + 1] = 0;
    u32[w + 2] = 1;
    u32[w + 3] = 7;
    u32[w + 4] = 3;
    u32[w + 5] = 0;
    u32[w + 6] = 4096;
    for (let k = 7; k < 16; k++) u32[w + k] = 0;
  }),
  bench('JS ring: entry + publish per 64-entry batch', N, (i) => {
    const w = 1024 + ((i & 1023) << 4);
    u32[w] = i;
    u32[w + 2] = 1;
    u32[w + 6] = 4096;
    if ((++pos & 63) === 0) {
      Atomics.store(b64, 16, BigInt(pos));
      sink += Atomics.load(i32, 96);
    }
  }),
];
const w = Math.max(...rows.map((r) => r[0].length));
for (const [name, ns] of rows) console.log(`${name.padEnd(w)}  ${ns.toFixed(1).padStart(6)} ns`);
console.log(JSON.stringify(Object.fromEntries(rows.map(([k, v]) => [k, +v.toFixed(1)]))));
if (sink === 0.5) console.log(sink);
