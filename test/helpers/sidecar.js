// Starts the real sidecar binary on a socket in a fresh temp directory with chosen environment,
// waits until it accepts connections, and stops (or kills) it afterwards.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { sidecarBin } = require('./paths');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function canConnect(socketPath) {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * @param {object} [opts]
 * @param {Record<string,string>} [opts.env] extra SHMPIPE_* variables
 * @param {number} [opts.dirMode] mode of the temp directory (e.g. 0o755 for other uids)
 * @param {string} [opts.dir] use this directory (socket, store) instead of a fresh temp one, and
 *   leave it in place on stop: a restarted sidecar then listens on the same socket path
 */
async function startSidecar(opts = {}) {
  if (!fs.existsSync(sidecarBin)) throw new Error(`${sidecarBin} is missing: run cargo build --release -p shmpipe-sidecar`);
  const ownDir = opts.dir === undefined;
  const dir = ownDir ? fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-test-')) : opts.dir;
  fs.mkdirSync(dir, { recursive: true });
  if (opts.dirMode !== undefined) fs.chmodSync(dir, opts.dirMode);
  const socketPath = path.join(dir, 'sidecar.sock');
  const env = {
    PATH: process.env.PATH,
    SHMPIPE_SOCKET: socketPath,
    SHMPIPE_LOG: 'warn',
    SHMPIPE_SHUTDOWN_GRACE: '2',
    // A free port per sidecar: tests run several at once, and 9464 may be taken.
    SHMPIPE_ADMIN_ADDR: '127.0.0.1:0',
    // A store of its own in the temp directory (the default lives under $HOME).
    SHMPIPE_STORE: `file://${dir}/store`,
    ...opts.env,
  };
  const proc = spawn(sidecarBin, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
  });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  let exit = null;
  exited.then((e) => {
    exit = e;
  });

  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exit !== null) throw new Error(`sidecar exited early (${JSON.stringify(exit)}): ${stderr}`);
    if (fs.existsSync(socketPath) && (await canConnect(socketPath))) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`sidecar did not listen on ${socketPath} within 15 s: ${stderr}`);
    }
    await sleep(20);
  }

  return {
    pid: proc.pid,
    proc,
    dir,
    socketPath,
    exited,
    get stderr() {
      return stderr;
    },
    get alive() {
      return exit === null;
    },
    /** SIGTERM, then SIGKILL after `graceMs`; removes the temp directory. */
    async stop(graceMs = 5000) {
      if (exit === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(t);
      }
      if (ownDir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Threads of a process: the entries of /proc/<pid>/task. */
function threadCount(pid) {
  return fs.readdirSync(`/proc/${pid}/task`).length;
}

/** VmRSS of a process in bytes, from /proc/<pid>/status. */
function vmRss(pid) {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/** Names left in /dev/shm by sidecar `pid` (SPEC §10: shmpipe-<pid>-*). */
function leftoverSegments(pid) {
  return fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`shmpipe-${pid}-`));
}

/** Polls `f` (sync or async) until it returns a truthy value or `ms` pass; returns the last value. */
async function waitFor(f, ms = 5000, every = 20) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v || Date.now() > deadline) return v;
    await sleep(every);
  }
}

module.exports = { startSidecar, threadCount, vmRss, leftoverSegments, waitFor, sleep };
