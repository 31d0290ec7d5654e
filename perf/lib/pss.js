// Memory of a whole process tree as summed PSS (proportional set size), sampled during a run: the
// one memory figure the perf scripts compare between shmpipe and its peers (issue #15, item 2).
//
// Why PSS: RSS counts a page once in every process that maps it, so summing RSS over the agent
// and the sidecar counts the shared segment twice, and leaving shared memory out (as RssAnon +
// RssFile does) does not count it at all. PSS divides each page by the number of processes that
// map it, so summed over the tree the shared segment counts once, libraries shared with processes
// outside the tree count in part, and a single-process peer (restic, rustic) is measured the same
// way. Source: /proc/PID/smaps_rollup (Linux ≥ 4.14), whose read walks the process's page tables:
// a few hundred µs for a process of a few hundred MB, so sample every ~50 ms, not faster.
//
// The tree is the root and every descendant, found from /proc/PID/task/TID/children on every
// sample (children started and gone between two samples are missed; zombies hold no memory).
//
//   const { PssSampler, treePss } = require('./pss');
//   const s = new PssSampler(child.pid, { intervalMs: 50 }); s.start(); ... const r = s.stop();
//   r.peak            // bytes: the largest tree sum seen at one sampling instant
//   r.peakProcs       // [{ pid, comm, pss, anon, file, shmem }] at that instant
//   r.perProcPeak     // Map label → largest PSS a process of that label had at any sample
//   r.samples
//   treePss(pid)      // one sample now: { total, procs }
//
// `node perf/lib/pss.js PID` prints one sample of PID's tree.
'use strict';

const fs = require('node:fs');

const KB = 1024;

/** One process's smaps_rollup figures in bytes, or null when it is gone (or a zombie). */
function readPss(pid) {
  let s;
  try {
    s = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    return null;
  }
  const kb = (k) => {
    const i = s.indexOf(`\n${k}:`);
    return i < 0 ? 0 : parseInt(s.slice(i + k.length + 2), 10) * KB;
  };
  // A zombie's smaps_rollup is empty: no Pss line at all.
  if (!s.includes('\nPss:')) return null;
  return { pss: kb('Pss'), anon: kb('Pss_Anon'), file: kb('Pss_File'), shmem: kb('Pss_Shmem'), rss: kb('Rss') };
}

function comm(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** The direct children of `pid` (over all its threads). */
function children(pid) {
  const out = [];
  let tids;
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const c = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (c) for (const p of c.split(' ')) out.push(Number(p));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** `pid` and all its descendants, depth first, with their depth (root 0). */
function treePids(pid) {
  const out = [];
  const walk = (p, depth) => {
    out.push({ pid: p, depth });
    for (const c of children(p)) walk(c, depth + 1);
  };
  walk(pid, 0);
  return out;
}

/** One sample: the PSS of every live process in `pid`'s tree and their sum (bytes). */
function treePss(pid) {
  const procs = [];
  let total = 0;
  for (const { pid: p, depth } of treePids(pid)) {
    const m = readPss(p);
    if (!m) continue;
    procs.push({ pid: p, depth, comm: comm(p), ...m });
    total += m.pss;
  }
  return { total, procs };
}

/** Samples a tree's summed PSS every `intervalMs` from start() to stop(); keeps the peak. */
class PssSampler {
  /** `label(comm, depth)` names a process for perProcPeak (default: its comm). */
  constructor(rootPid, { intervalMs = 50, label = (c) => c } = {}) {
    this.rootPid = rootPid;
    this.intervalMs = intervalMs;
    this.label = label;
    this.peak = 0;
    this.peakProcs = [];
    this.perProcPeak = new Map();
    this.samples = 0;
    this.timer = null;
  }

  /** Takes one sample now (also callable by hand, e.g. right before the root exits). */
  sample() {
    const s = treePss(this.rootPid);
    if (!s.procs.length) return s;
    this.samples++;
    if (s.total > this.peak) {
      this.peak = s.total;
      this.peakProcs = s.procs;
    }
    for (const p of s.procs) {
      const name = this.label(p.comm, p.depth);
      this.perProcPeak.set(name, Math.max(this.perProcPeak.get(name) ?? 0, p.pss));
    }
    return s;
  }

  start() {
    const loop = () => {
      this.sample();
      this.timer = setTimeout(loop, this.intervalMs);
    };
    loop();
    return this;
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    return { peak: this.peak, peakProcs: this.peakProcs, perProcPeak: this.perProcPeak, samples: this.samples };
  }
}

module.exports = { readPss, treePids, treePss, PssSampler, children };

if (require.main === module) {
  const pid = Number(process.argv[2] || process.pid);
  const s = treePss(pid);
  for (const p of s.procs) console.log(`${String(p.pid).padStart(7)} ${'  '.repeat(p.depth)}${p.comm.padEnd(20)} PSS ${(p.pss / 1e6).toFixed(1)} MB (anon ${(p.anon / 1e6).toFixed(1)}, file ${(p.file / 1e6).toFixed(1)}, shmem ${(p.shmem / 1e6).toFixed(1)}); RSS ${(p.rss / 1e6).toFixed(1)} MB`);
  console.log(`tree PSS ${(s.total / 1e6).toFixed(1)} MB`);
}
