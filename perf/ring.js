#!/usr/bin/env node
// perf:ring — the shm-protocol ring between two pinned, busy-polling threads, against a C
// reference of the same shape (perf/baseline/ring_c.c), both built and run here in one go.
// Prints a table with ratios, then one JSON line.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const samples = process.env.RING_BENCH_SAMPLES || '200000';
const lastJson = (out) => JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('{')).pop());

const cBin = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-ring-')), 'ring_c');
execFileSync('gcc', ['-O2', '-pthread', '-o', cBin, path.join(__dirname, 'baseline', 'ring_c.c')], { stdio: 'inherit' });
execFileSync('cargo', ['build', '--release', '--locked', '-p', 'shm-protocol', '--bench', 'ring'], { cwd: root, stdio: 'inherit' });
const c = lastJson(execFileSync(cBin, [samples], { encoding: 'utf8' }));
const rust = lastJson(execFileSync('cargo', ['bench', '--locked', '-q', '-p', 'shm-protocol', '--bench', 'ring'],
  { cwd: root, encoding: 'utf8', env: { ...process.env, RING_BENCH_SAMPLES: samples } }));

const rows = [
  ['round trip p50 (ns)', 'rtt_p50_ns', false],
  ['round trip p99 (ns)', 'rtt_p99_ns', false],
  ['batch 1 (M req/s)', 'mrps_batch1', true],
  ['batch 16 (M req/s)', 'mrps_batch16', true],
  ['batch 256 (M req/s)', 'mrps_batch256', true],
];
console.log('metric                   rust ring   C reference   rust/C (>1 = rust better)');
const out = {};
for (const [label, key, higherBetter] of rows) {
  const ratio = higherBetter ? rust[key] / c[key] : c[key] / rust[key];
  console.log(`${label.padEnd(24)} ${String(rust[key]).padStart(9)}   ${String(c[key]).padStart(11)}   ${ratio.toFixed(2)}`);
  out[`rust_${key}`] = rust[key];
  out[`c_${key}`] = c[key];
}
out.rtt_ratio_c_over_rust = +(c.rtt_p50_ns / rust.rtt_p50_ns).toFixed(3);
out.batch256_ratio_rust_over_c = +(rust.mrps_batch256 / c.mrps_batch256).toFixed(3);
console.log(JSON.stringify(out));
