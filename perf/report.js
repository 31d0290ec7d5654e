#!/usr/bin/env node
// perf:report — runs every perf script in turn (each prints its own table and, as its last line,
// one JSON object) and writes perf/RESULTS.md: the machine and the load it ran under, then one
// section per script with its table as printed, the peers' figures from the same run (they run
// inside each script, beside shmpipe), the script's JSON, and an SVG chart of throughput per data
// set and tool (perf/results-throughput.svg). Nothing is asserted: a script that fails is
// recorded as failed (its stderr tail in the report) and the others still run; the exit code is
// then 1.
//
//   npm run perf:report                      # = npm run build && node perf/report.js
//   node perf/report.js [--only ring,rtt,...] [--skip soak] [--soak-minutes 1] [--out perf/RESULTS.md]
//                       [--backup-args "--repeat 1"] [--from-json DIR]
//
// Scripts, in this order: ring, rtt, native-cost, transfer, clients, backup, soak. `--from-json
// DIR` rebuilds the report from the stdout files a previous run saved (DIR/<script>.out) without
// running anything: the report and the chart are a pure function of those outputs.
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { chartSvg } = require('./lib/chart');

const root = path.resolve(__dirname, '..');
const { values: opt } = parseArgs({
  options: {
    only: { type: 'string' },
    skip: { type: 'string', default: '' },
    'soak-minutes': { type: 'string', default: '1' },
    out: { type: 'string', default: path.join(root, 'perf', 'RESULTS.md') },
    'backup-args': { type: 'string', default: '' },
    'from-json': { type: 'string' },
  },
});

const SCRIPTS = [
  { name: 'ring', cmd: 'perf/ring.js', what: 'the shm-protocol ring alone against a C reference of the same shape' },
  { name: 'rtt', cmd: 'perf/rtt.js', what: 'the TS client against the sidecar, shared memory vs the UDS baseline transport (same requests in flight, same sample counts)' },
  { name: 'native-cost', cmd: 'perf/native-cost.js', what: 'a Node-API call vs the JS ring per request' },
  { name: 'transfer', cmd: 'perf/transfer.js', what: 'files to and from a file:// store: shmpipe vs pure Node (native CRC-32C) vs the UDS baseline' },
  { name: 'clients', cmd: 'perf/clients.js', what: 'the TypeScript, Go and Python clients, each beside its own UDS baseline client' },
  { name: 'backup', cmd: 'perf/backup.js', what: 'the shmpipe CLI against restic 0.18.1 and rustic (pinned) on a 2 GiB mixed set and 100,000 small files' },
  { name: 'soak', cmd: 'perf/soak.js', what: 'stability under churn and restarts (no peer)' },
];

const argsOf = (name) => {
  if (name === 'soak') return ['--minutes', opt['soak-minutes']];
  if (name === 'backup') return opt['backup-args'].split(' ').filter(Boolean);
  return [];
};

function lastJson(stdout) {
  const lines = stdout.trim().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i].trim();
    if (!l.startsWith('{')) continue;
    try {
      return JSON.parse(l);
    } catch {
      // not the JSON line
    }
  }
  return null;
}

function run(script, outDir) {
  return new Promise((resolve) => {
    const args = [script.cmd, ...argsOf(script.name)];
    const t0 = Date.now();
    const load = os.loadavg()[0];
    console.log(`\n=== ${script.name}: node ${args.join(' ')} (load ${load.toFixed(2)})`);
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    child.stdout.on('data', (d) => {
      out.push(d);
      process.stdout.write(d);
    });
    child.stderr.on('data', (d) => {
      err.push(d);
      process.stderr.write(d);
    });
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      const rec = { name: script.name, command: `node ${args.join(' ')}`, code, signal, seconds: (Date.now() - t0) / 1000, loadStart: load, loadEnd: os.loadavg()[0], stdout, stderr };
      fs.writeFileSync(path.join(outDir, `${script.name}.out`), JSON.stringify(rec));
      resolve(rec);
    });
  });
}

function sh(cmd, args) {
  try {
    const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: root });
    return r.status === 0 ? r.stdout.trim().split('\n')[0] : null;
  } catch {
    return null;
  }
}

function machine() {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    host: `${cpus.length} × ${cpus[0]?.model ?? '?'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${os.release()}`,
    node: process.version,
    rustc: sh('rustc', ['--version']),
    go: sh('go', ['version']),
    commit: sh('git', ['rev-parse', '--short', 'HEAD']),
    dirty: (sh('git', ['status', '--porcelain', '--untracked-files=no']) ?? '') !== '',
    disk: (spawnSync('df', ['-h', '--output=source,fstype,size', os.tmpdir()], { encoding: 'utf8' }).stdout || '').trim().split('\n').pop()?.trim().replace(/\s+/g, ' ') || null,
    load: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

// ---- the report --------------------------------------------------------------------------------

const f = (x, d = 2) => (x === null || x === undefined || !Number.isFinite(Number(x)) ? '—' : Number(x).toFixed(d));
const md = (rows) => rows.map((r) => `| ${r.join(' | ')} |`).join('\n');
const mdTable = (head, rows) => `${md([head])}\n|${head.map(() => '---').join('|')}|\n${md(rows)}`;

/** perf:backup's JSON → one table per data set: each tool's figures and the ratios to restic. */
function backupTables(j) {
  const parts = [];
  const names = { shm: 'shmpipe', restic: j.versions?.restic?.split(' ').slice(0, 2).join(' ') ?? 'restic', rustic: j.versions?.rustic?.split(' ').slice(0, 2).join(' ') ?? 'rustic', restic014: 'restic (Debian)' };
  const targets = { mixed: { backup: '≥ 2x', restore: '≥ 1.5x', no_change_backup_speedup: '≥ 2x faster', peak_pss: '≤ 1x', repo_size: '≤ 1.05x' }, small: { backup: '≥ 2x', restore: '≥ 1.5x', no_change_backup_speedup: '≥ 2x faster' } };
  const rows = [
    ['backup MB/s', 'backup_mbps', 0, 'backup'],
    ['backup CPU-s/GB', 'backup_cpu_s_per_gb', 2],
    ['no-change backup s', 'rebackup_s', 2, 'no_change_backup_speedup'],
    ['restore MB/s', 'restore_mbps', 0, 'restore'],
    ['restore CPU-s/GB', 'restore_cpu_s_per_gb', 2],
    ['peak memory MB (summed PSS)', 'peak_pss_mb', 0, 'peak_pss'],
    ['repository MB', 'repo_mb', 1, 'repo_size'],
  ];
  for (const [set, s] of Object.entries(j.sets ?? {})) {
    const tools = Object.keys(s.tools);
    const peers = tools.filter((t) => t !== 'shm');
    const head = ['', ...tools.map((t) => names[t] ?? t), ...peers.map((p) => `shm vs ${names[p] ?? p}`), 'target (vs restic 0.18.1)'];
    const body = rows.map(([label, key, dp, rkey]) => [
      label,
      ...tools.map((t) => f(s.tools[t][key], dp)),
      ...peers.map((p) => (rkey && s.ratios?.[rkey]?.[p] != null ? `${f(s.ratios[rkey][p], 2)}x` : '')),
      rkey && targets[set]?.[rkey] ? `${targets[set][rkey]}${s.targets_met?.[rkey] === undefined ? '' : s.targets_met[rkey] ? ' ✅' : ' ❌'}` : '',
    ]);
    parts.push(`**${set === 'mixed' ? 'Mixed set' : 'Small files'}**: ${(s.dataset_bytes / 1e6).toFixed(0)} MB in ${s.dataset_files} files\n\n${mdTable(head, body)}`);
  }
  return parts.join('\n\n');
}

/** The bars of the chart: MB/s per data set, phase and tool, from perf:backup and perf:transfer. */
function chartGroups(results) {
  const groups = [];
  const b = results.backup?.json;
  if (b?.sets) {
    const label = (t) => (t === 'shm' ? 'shmpipe' : (b.versions?.[t] ?? t).split(' ').slice(0, 2).join(' ') + (t === 'restic014' ? ' (Debian)' : ''));
    for (const [set, s] of Object.entries(b.sets)) {
      const name = set === 'mixed' ? '2 GiB mixed' : `${(s.dataset_files / 1000).toFixed(0)}k small files`;
      const mbps = (t, k) => s.tools[t]?.[k] ?? null;
      // The no-change backup as MB/s of the set's logical bytes, so every bar reads "higher is better".
      const nochange = (t) => (s.tools[t]?.rebackup_s ? s.dataset_bytes / s.tools[t].rebackup_s / 1e6 : null);
      for (const [phase, get] of [['backup', (t) => mbps(t, 'backup_mbps')], ['restore', (t) => mbps(t, 'restore_mbps')], ['no-change backup', nochange]]) {
        groups.push({ title: `${name}: ${phase}`, bars: Object.keys(s.tools).map((t) => ({ tool: label(t), value: get(t) })) });
      }
    }
  }
  const tr = results.transfer?.json;
  if (tr) {
    for (const phase of ['put', 'get']) {
      groups.push({
        title: `file:// ${phase} (${(tr.bytes / 1e9).toFixed(1)} GB)`,
        bars: ['shm', 'node', 'uds'].map((w) => ({ tool: w === 'shm' ? 'shmpipe' : w === 'node' ? 'pure Node' : 'UDS baseline', value: tr[`${w}_${phase}_gbps`] != null ? tr[`${w}_${phase}_gbps`] * 1000 : null })),
      });
    }
  }
  return groups;
}

function report(results, m, chartFile) {
  const out = [];
  out.push('# Performance results');
  out.push('');
  out.push(
    `Written by \`npm run perf:report\` (perf/report.js) on ${m.date}, commit ${m.commit}${m.dirty ? ' (with uncommitted changes)' : ''}. ` +
      'Every figure below comes from this one run; each script runs its peers and baselines beside shmpipe, in the same invocation. ' +
      'Measurements, not assertions: see perf/README.md for what each script does and how to read it.',
  );
  out.push('');
  out.push(mdTable(['machine', ''], [
    ['host', m.host],
    ['work disk', m.disk ?? '—'],
    ['load average at start (1/5/15 min)', m.load],
    ['load average at end', m.loadEnd ?? '—'],
    ['node / rustc / go', `${m.node} / ${m.rustc ?? '—'} / ${m.go ?? '—'}`],
  ]));
  out.push('');
  const busy = Number(String(m.load).split(' ')[0]) > 1 || Number(String(m.loadEnd ?? '0').split(' ')[0]) > 1.5;
  if (busy) out.push('**Under load**: the machine was running other work (load average above), so wall-clock figures are pessimistic and vary; CPU-s/GB varies far less.\n');
  if (chartFile) out.push(`![throughput per data set and tool](${path.basename(chartFile)})\n`);
  for (const s of SCRIPTS) {
    const r = results[s.name];
    if (!r) continue;
    out.push(`## ${s.name}`);
    out.push('');
    out.push(`${s.what}. \`${r.command}\`, ${r.seconds.toFixed(0)} s, load ${f(r.loadStart)} → ${f(r.loadEnd)}${r.code === 0 ? '' : ` — **failed** (exit ${r.code ?? r.signal})`}.`);
    out.push('');
    if (s.name === 'backup' && r.json?.sets) {
      out.push(backupTables(r.json));
      out.push('');
      if (r.json.left_out) out.push(`Left out: ${Object.entries(r.json.left_out).map(([k, v]) => `${k} — ${v}`).join('; ')}.\n`);
      if (r.json.versions) out.push(`Versions: ${Object.values(r.json.versions).join('; ')}.\n`);
    }
    // The script's own table, as printed (its progress lines dropped).
    const lines = r.stdout.trim().split('\n');
    const body = lines.slice(0, -1).filter((l) => !/^\s*generating:|^=== /.test(l));
    out.push('```');
    out.push(body.slice(-80).join('\n'));
    out.push('```');
    if (r.code !== 0 && r.stderr.trim()) {
      out.push('');
      out.push('stderr (last lines):');
      out.push('```');
      out.push(r.stderr.trim().split('\n').slice(-15).join('\n'));
      out.push('```');
    }
    if (r.json) {
      out.push('');
      out.push('<details><summary>JSON</summary>');
      out.push('');
      out.push('```json');
      out.push(JSON.stringify(r.json));
      out.push('```');
      out.push('</details>');
    }
    out.push('');
  }
  return out.join('\n');
}

async function main() {
  const only = opt.only ? opt.only.split(',') : SCRIPTS.map((s) => s.name);
  const skip = opt.skip.split(',').filter(Boolean);
  const chosen = SCRIPTS.filter((s) => only.includes(s.name) && !skip.includes(s.name));
  const outDir = opt['from-json'] ? path.resolve(opt['from-json']) : fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-perf-report-'));
  // The machine as it was when the scripts ran (kept with their outputs for --from-json).
  const machineFile = path.join(outDir, 'machine.json');
  const m = opt['from-json'] && fs.existsSync(machineFile) ? JSON.parse(fs.readFileSync(machineFile, 'utf8')) : machine();
  if (!opt['from-json']) fs.writeFileSync(machineFile, JSON.stringify(m));
  const results = {};
  for (const s of chosen) {
    let r;
    if (opt['from-json']) {
      const file = path.join(outDir, `${s.name}.out`);
      if (!fs.existsSync(file)) continue;
      r = JSON.parse(fs.readFileSync(file, 'utf8'));
    } else r = await run(s, outDir);
    r.json = lastJson(r.stdout);
    results[s.name] = r;
  }
  if (!opt['from-json'] || m.loadEnd === undefined) {
    m.loadEnd = os.loadavg().map((x) => x.toFixed(2)).join(' ');
    if (!opt['from-json']) fs.writeFileSync(machineFile, JSON.stringify(m));
  }
  const groups = chartGroups(results);
  const chartFile = groups.length ? path.join(path.dirname(opt.out), 'results-throughput.svg') : null;
  if (chartFile) fs.writeFileSync(chartFile, chartSvg(groups, { title: `Throughput, MB/s (higher is better) — ${m.date}, ${m.host.split(',')[0]}`, unit: 'MB/s' }));
  fs.writeFileSync(opt.out, `${report(results, m, chartFile)}\n`);
  const failed = Object.values(results).filter((r) => r.code !== 0).map((r) => r.name);
  console.log(`\nwrote ${path.relative(root, opt.out)}${chartFile ? ` and ${path.relative(root, chartFile)}` : ''}; outputs kept in ${outDir}${failed.length ? `; FAILED: ${failed.join(', ')}` : ''}`);
  console.log(JSON.stringify({ report: path.relative(root, opt.out), chart: chartFile ? path.relative(root, chartFile) : null, outputs: outDir, scripts: Object.keys(results), failed }));
  if (failed.length) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
