// Forks test/helpers/child.js in a given mode and exchanges messages with it.
'use strict';

const { execFileSync, fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { child, root } = require('./paths');

/**
 * @returns {{proc, pid, next(type?): Promise<object>, send(msg), exited: Promise}}
 * next(type) resolves with the next message (of that type); rejects if the child reports an
 * error or exits first.
 */
function forkChild(params, options = {}) {
  const { script = child, ...forkOptions } = options;
  const proc = fork(script, [JSON.stringify(params)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...forkOptions });
  const inbox = [];
  let waiter = null;
  let exit = null;
  const exited = new Promise((resolve) =>
    proc.once('exit', (code, signal) => {
      exit = { code, signal };
      if (waiter) waiter.fail(new Error(`child exited (${JSON.stringify(exit)}) while waiting for a message`));
      resolve(exit);
    }),
  );
  proc.on('message', (m) => {
    inbox.push(m);
    if (waiter) waiter.poke();
  });
  function next(type) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = inbox.findIndex((m) => m.type === 'error' || type === undefined || m.type === type);
        if (i >= 0) {
          const [m] = inbox.splice(i, 1);
          waiter = null;
          if (m.type === 'error') reject(new Error(`child failed: ${m.message}`));
          else resolve(m);
          return true;
        }
        return false;
      };
      if (check()) return;
      if (exit) return reject(new Error(`child already exited (${JSON.stringify(exit)})`));
      waiter = { poke: check, fail: (e) => ((waiter = null), reject(e)) };
    });
  }
  return { proc, pid: proc.pid, next, send: (m) => proc.send(m), exited };
}

/**
 * A copy of the child script and what it loads (the client bundle, the addon, crc-32) in a
 * fresh world-readable temp directory, for a child run under another uid that cannot reach
 * this checkout (a clone under a 0700 directory). Returns {script, remove()}.
 */
function reachableChild() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-child-'));
  fs.chmodSync(dir, 0o755);
  const copy = (from, to) => fs.cpSync(path.join(root, from), path.join(dir, to ?? from), { recursive: true });
  for (const f of ['child.js', 'paths.js', 'crc32c.js']) copy(path.join('test', 'helpers', f));
  copy(path.join('ts-lib', 'dist', 'index.js'));
  copy(path.join('ts-lib', 'build', 'shmpipe_addon.node'));
  copy(path.join('node_modules', 'crc-32'));
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  return { script: path.join(dir, 'test', 'helpers', 'child.js'), remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

module.exports = { forkChild, reachableChild };
