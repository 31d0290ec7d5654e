// Runs a command and measures its whole process tree (the command and every descendant, e.g. the
// shmpipe CLI and the private sidecar it starts), for perf:backup:
//   - wall time, spawn to exit;
//   - CPU (user + sys) of the tree: the growth of this process's cutime + cstime (/proc/self/stat)
//     across the run. The kernel adds a child's own time and that of the descendants it waited
//     for when the child is reaped, so a sidecar reaped by the CLI counts, as does the CLI itself.
//     The per-process /proc/<pid>/stat figures sampled along the way give the split by process
//     (and a floor, should a grandchild not be waited for: the larger of the two is reported);
//   - peak memory of the tree as summed PSS (lib/pss.js, every ~50 ms): the figure compared between
//     tools, since it counts shared memory (the slot segment) once and at all;
//   - peak RSS of the tree (kept beside it as a check): every ~`intervalMs` the RssAnon + RssFile of every process in the tree
//     (/proc/<pid>/status, so shared memory, RssShmem, is excluded) summed at that instant; the
//     peak of those sums. The per-process peaks, the peak RssShmem and the last VmHWM seen (which
//     does include shared memory) are kept beside it.
// The tree is found from /proc/<pid>/task/<tid>/children on every sample.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');

const { PssSampler, children } = require('./pss');

const TICK = 100; // USER_HZ (getconf CLK_TCK) on Linux

function selfChildTicks() {
  const s = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": state is f[0]; utime 14 → f[11], stime f[12], cutime f[13], cstime f[14].
  return Number(f[13]) + Number(f[14]);
}

function readStat(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { comm, state: f[0], ticks: Number(f[11]) + Number(f[12]), childTicks: Number(f[13]) + Number(f[14]) };
}

function readStatus(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => {
    const i = s.indexOf(`\n${k}:`);
    return i < 0 ? 0 : parseInt(s.slice(i + k.length + 2), 10) * 1024;
  };
  return { anon: kb('RssAnon'), file: kb('RssFile'), shmem: kb('RssShmem'), hwm: kb('VmHWM') };
}

/**
 * Runs `cmd args` with `opts` (spawn options; stdout and stderr are collected) and measures it.
 * Resolves { code, signal, stdout, stderr, wall, cpu, procs, peakPss, pssByLabel, pssSamples,
 * peakRss, peakShmem, samples }.
 * `label(comm, depth)` names a process for the per-process split (default: its comm).
 */
function measure(cmd, args, opts = {}, { intervalMs = 20, pssIntervalMs = 50, label = (comm) => comm } = {}) {
  return new Promise((resolve, reject) => {
    const cpu0 = selfChildTicks();
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    /** pid → { name, ticks, peak, hwm } */
    const procs = new Map();
    let peakRss = 0;
    let peakShmem = 0;
    let samples = 0;
    let timer = null;
    let done = false;
    const sample = () => {
      let sum = 0;
      let shm = 0;
      const walk = (pid, depth) => {
        try {
          const st = readStat(pid);
          if (st.state === 'Z') return; // exited, not yet reaped: its memory is gone
          const m = readStatus(pid);
          let p = procs.get(pid);
          if (!p) procs.set(pid, (p = { pid, name: '', depth, ticks: 0, peak: 0, hwm: 0 }));
          p.name = label(st.comm, depth); // the latest: a fresh child is still its parent's comm until it execs
          p.ticks = Math.max(p.ticks, st.ticks);
          p.peak = Math.max(p.peak, m.anon + m.file);
          p.hwm = Math.max(p.hwm, m.hwm);
          sum += m.anon + m.file;
          shm += m.shmem;
        } catch {
          return; // gone meanwhile
        }
        for (const c of children(pid)) walk(c, depth + 1);
      };
      walk(child.pid, 0);
      samples++;
      peakRss = Math.max(peakRss, sum);
      peakShmem = Math.max(peakShmem, shm);
    };
    const loop = () => {
      if (done) return;
      sample();
      timer = setTimeout(loop, intervalMs);
    };
    let pss = null;
    child.once('spawn', () => {
      pss = new PssSampler(child.pid, { intervalMs: pssIntervalMs, label }).start();
      loop();
    });
    child.once('error', (e) => {
      done = true;
      clearTimeout(timer);
      pss?.stop();
      reject(e);
    });
    let pssResult = { peak: 0, perProcPeak: new Map(), samples: 0 };
    child.once('exit', () => {
      done = true;
      clearTimeout(timer);
      if (pss) pssResult = pss.stop();
    });
    child.once('close', (code, signal) => {
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const reaped = (selfChildTicks() - cpu0) / TICK;
      const list = [...procs.values()].map((p) => ({ ...p, cpu: p.ticks / TICK }));
      const sampled = list.reduce((a, p) => a + p.cpu, 0);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        wall,
        cpu: Math.max(reaped, sampled),
        cpuReaped: reaped,
        cpuSampled: sampled,
        procs: list,
        peakPss: pssResult.peak,
        pssByLabel: Object.fromEntries(pssResult.perProcPeak),
        pssSamples: pssResult.samples,
        peakRss,
        peakShmem,
        samples,
      });
    });
  });
}

module.exports = { measure };
