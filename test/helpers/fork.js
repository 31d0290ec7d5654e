// Forks test/helpers/child.js in a given mode and exchanges messages with it.
'use strict';

const { fork } = require('node:child_process');
const { child } = require('./paths');

/**
 * @returns {{proc, pid, next(type?): Promise<object>, send(msg), exited: Promise}}
 * next(type) resolves with the next message (of that type); rejects if the child reports an
 * error or exits first.
 */
function forkChild(params, options = {}) {
  const proc = fork(child, [JSON.stringify(params)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...options });
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

module.exports = { forkChild };
