// Starts the real sidecar binary on a socket in a fresh temp directory with chosen environment,
// waits until it accepts connections, and stops (or kills) it afterwards.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
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
    // The tests' repositories use a cheap KDF (kdf_m_kib 64), below the floor a real init enforces.
    SHMPIPE_TEST_ALLOW_WEAK_KDF: '1',
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

/** A session segment's path as /proc shows it: shmpipe-<pid>-<hex> (POSIX shm or
 * SHMPIPE_SEGMENT_DIR), or a memfd named shmpipe…, possibly "(deleted)". */
const SEGMENT_NAME = /(\/shmpipe-\d+-[0-9a-f]+|\/memfd:shmpipe[^/]*)( \(deleted\))?$/;

/**
 * The session segments process `pid` holds, whatever their backend: the shared memory objects
 * (POSIX shm, SHMPIPE_SEGMENT_DIR files, memfds — all named `shmpipe-*`) it has mapped
 * (/proc/PID/maps) or open as fds (/proc/PID/fd), by inode. A segment's name is unlinked as
 * soon as the agent mapped it, so /dev/shm cannot show a leak; this can.
 * @returns {{mapped: string[], fds: string[]}} inode numbers, sorted
 */
function segmentsHeld(pid) {
  const mapped = new Set();
  for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    // address perms offset dev inode path
    const f = line.trim().split(/\s+/);
    if (f.length >= 6 && SEGMENT_NAME.test(f.slice(5).join(' '))) mapped.add(f[4]);
  }
  const fds = new Set();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed while we looked
    }
    if (!SEGMENT_NAME.test(target)) continue;
    try {
      fds.add(String(fs.statSync(`/proc/${pid}/fd/${fd}`).ino));
    } catch {
      continue;
    }
  }
  return { mapped: [...mapped].sort(), fds: [...fds].sort() };
}

/**
 * The TCP port process `pid` listens on, from its socket inodes and /proc/net/tcp (the
 * sidecar's admin endpoint, started on 127.0.0.1:0); null when it has none.
 */
function listeningPort(pid) {
  const inodes = new Set();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed while we looked
    }
  }
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!fs.existsSync(table)) continue;
    for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st ... inode (field 9)
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9])) return parseInt(f[1].split(':')[1], 16);
    }
  }
  return null;
}

/** GET `path` from the sidecar's admin endpoint; resolves with the body text. */
function adminGet(pid, urlPath) {
  const port = listeningPort(pid);
  if (port === null) return Promise.reject(new Error(`sidecar ${pid} has no admin listener`));
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${urlPath}: HTTP ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}

/** One sample of the sidecar's Prometheus metrics (`name{labels}` exactly), as a number. */
async function metric(pid, series) {
  const text = await adminGet(pid, '/metrics');
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no ${series} in /metrics`);
  return Number(line.slice(series.length + 1));
}

/**
 * /proc/PID/io as numbers: rchar/wchar count every byte passed through read/write-family
 * syscalls (files, pipes, sockets, eventfds), syscr/syscw the calls.
 */
function procIo(pid) {
  const text = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
  return Object.fromEntries(text.trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
}

/** Open fds of a process (entries of /proc/PID/fd). */
function fdCount(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
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

module.exports = { startSidecar, threadCount, vmRss, leftoverSegments, segmentsHeld, fdCount, listeningPort, adminGet, metric, procIo, waitFor, sleep };
