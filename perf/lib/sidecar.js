// The sidecar as the perf scripts run it: the built release binary on a socket in a fresh temp
// directory, with the UDS baseline transport on a second socket (the comparison every script
// makes), quiet logs, and the caller's extra SHMPIPE_* settings.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const sidecarBin = path.resolve(__dirname, '..', '..', 'target', 'release', 'shmpipe-sidecar');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** @param {string} prefix temp dir prefix; @param {(dir: string) => Record<string,string>} env */
async function startPerfSidecar(prefix, env = () => ({})) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const socketPath = path.join(dir, 'sidecar.sock');
  const baselinePath = path.join(dir, 'baseline.sock');
  const proc = spawn(sidecarBin, [], {
    env: {
      PATH: process.env.PATH,
      SHMPIPE_SOCKET: socketPath,
      SHMPIPE_BASELINE_SOCKET: baselinePath,
      SHMPIPE_STORE: `file://${dir}/store`,
      SHMPIPE_ADMIN_ADDR: 'off',
      SHMPIPE_LOG: 'warn',
      ...env(dir),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let i = 0; i < 500 && !(fs.existsSync(socketPath) && fs.existsSync(baselinePath)); i++) await sleep(20);
  if (!fs.existsSync(baselinePath)) throw new Error('the sidecar did not start');
  return {
    pid: proc.pid,
    socketPath,
    baselinePath,
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = { sidecarBin, startPerfSidecar };
