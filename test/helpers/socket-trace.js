// Counts the bytes processes move through socket syscalls of the send/recv family (sendmsg,
// sendto, recvmsg, recvfrom), which /proc/PID/io's rchar/wchar do not count: strace attached
// to every thread of each process between start and stop. Needs strace and the right to trace
// the processes (our own children, or root); `unavailable()` says why not, when it cannot.
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** null when strace can trace here, else why not. */
function unavailable() {
  const r = spawnSync('strace', ['-qq', '-e', 'trace=none', 'true'], { encoding: 'utf8' });
  if (r.error) return `strace is not installed (${r.error.code})`;
  if (r.status !== 0) return `strace cannot trace here: ${r.stderr.trim().split('\n')[0]}`;
  return null;
}

/**
 * Attaches to every thread of each of `pids`; resolves once all are attached, with `stop()`,
 * which detaches and resolves with the bytes each pid passed through those calls ({pid: bytes}).
 */
async function traceSocketBytes(pids) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-strace-'));
  const tracers = pids.map((pid) => {
    const out = path.join(dir, String(pid));
    const proc = spawn('strace', ['-f', '-e', 'trace=sendmsg,sendto,recvmsg,recvfrom', '-e', 'signal=none', '-o', out, '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    const attached = new Promise((resolve, reject) => {
      proc.stderr.on('data', (d) => {
        err += d;
        // "Process N attached with K threads": strace attached to every thread before it says so.
        if (/attached/.test(err)) resolve();
      });
      exited.then((code) => reject(new Error(`strace -p ${pid} exited (${code}): ${err.trim()}`)));
    });
    return { pid, out, proc, attached, exited };
  });
  await Promise.all(tracers.map((t) => t.attached));
  return {
    async stop() {
      for (const t of tracers) t.proc.kill('SIGINT');
      await Promise.all(tracers.map((t) => t.exited));
      const bytes = {};
      for (const t of tracers) {
        const text = fs.existsSync(t.out) ? fs.readFileSync(t.out, 'utf8') : '';
        let n = 0;
        for (const m of text.matchAll(/^(?:\d+\s+)?(?:sendmsg|sendto|recvmsg|recvfrom)\(.*\)\s+=\s+(\d+)/gm)) n += Number(m[1]);
        bytes[t.pid] = n;
      }
      fs.rmSync(dir, { recursive: true, force: true });
      return bytes;
    },
  };
}

module.exports = { traceSocketBytes, unavailable };
