// Runs the real `shmpipe` CLI (ts-lib/dist/cli.js) as a user would, for the backup end-to-end
// tests: a clean environment (no SHMPIPE_* from outside, HOME and XDG_DATA_HOME in the test's
// temp dir so the default repository never lands in the real home), stdin closed (no TTY, so
// never a password prompt), and the output collected, with `--json` lines parsed.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { root } = require('./paths');

const CLI = path.join(root, 'ts-lib', 'dist', 'cli.js');

/** The environment for CLI runs under `work`: no outside SHMPIPE_*, HOME/XDG inside `work`. */
function cliEnv(work, extra = {}) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SHMPIPE_') && !k.startsWith('AWS_')));
  const home = path.join(work, 'home');
  fs.mkdirSync(home, { recursive: true });
  return { ...env, HOME: home, XDG_DATA_HOME: path.join(home, 'xdg'), ...extra };
}

/** Parses JSON lines; a line that is not JSON fails with the whole output in the message. */
function jsonLines(stdout) {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        throw new Error(`not a JSON line: ${JSON.stringify(l)}\nwhole stdout:\n${stdout}`);
      }
    });
}

/**
 * Runs `shmpipe ...args`. Resolves with {status, signal, stdout, stderr, lines (parsed JSON
 * lines when `--json` was given), summary (the last line, if its type is summary), ms}.
 *
 * @param {string[]} args
 * @param {object} o
 * @param {Record<string,string>} o.env the whole environment (see cliEnv)
 * @param {number} [o.timeoutMs]
 * @param {(line: string, proc: import('node:child_process').ChildProcess) => void} [o.onLine] each stdout line as it comes
 * @param {string|Buffer} [o.input] written to the CLI's stdin (else stdin is closed)
 * @param {number} [o.uid] run as this uid (and o.gid)
 * @param {number} [o.gid]
 */
function runCli(args, o) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const opts = { env: o.env, stdio: [o.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'] };
    if (o.uid !== undefined) Object.assign(opts, { uid: o.uid, gid: o.gid ?? o.uid });
    if (o.cwd !== undefined) opts.cwd = o.cwd;
    const proc = spawn(process.execPath, [CLI, ...args], opts);
    if (o.input !== undefined) proc.stdin.end(o.input);
    let stdout = '';
    let stderr = '';
    let pending = '';
    proc.stdout.on('data', (d) => {
      stdout += d;
      if (o.onLine) {
        pending += d;
        let i;
        while ((i = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, i);
          pending = pending.slice(i + 1);
          o.onLine(line, proc);
        }
      }
    });
    proc.stderr.on('data', (d) => {
      stderr += d;
    });
    const timeoutMs = o.timeoutMs ?? 180_000;
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`shmpipe ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout:\n${stdout.slice(-4000)}\nstderr:\n${stderr.slice(-4000)}`));
    }, timeoutMs);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('close', (status, signal) => {
      clearTimeout(timer);
      let lines = null;
      if (args.includes('--json')) {
        try {
          lines = jsonLines(stdout);
        } catch (e) {
          lines = e;
        }
      }
      const last = Array.isArray(lines) ? lines[lines.length - 1] : undefined;
      resolve({
        args,
        status,
        signal,
        stdout,
        stderr,
        lines,
        summary: last && last.type === 'summary' ? last : undefined,
        ms: Date.now() - started,
        /** For assertion messages. */
        get why() {
          return `shmpipe ${args.join(' ')} → status ${status}${signal ? ` signal ${signal}` : ''}\nstdout:\n${stdout.slice(-3000)}\nstderr:\n${stderr.slice(-3000)}`;
        },
      });
    });
  });
}

/** Asserts status 0 and parseable JSON lines ending in a summary; returns the summary. */
function okSummary(r) {
  if (r.status !== 0) throw new Error(`expected exit 0: ${r.why}`);
  if (r.lines instanceof Error) throw r.lines;
  if (r.summary === undefined) throw new Error(`no summary line: ${r.why}`);
  return r.summary;
}

module.exports = { CLI, cliEnv, jsonLines, runCli, okSummary };
