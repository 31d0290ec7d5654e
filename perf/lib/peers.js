// The peers perf:backup runs beside shmpipe, pinned, and how to get them (issue #15, item 1):
//   - restic v0.18.1, built from the Go module proxy into the perf cache when it is not there
//     (`GOBIN=… go install github.com/restic/restic/cmd/restic@v0.18.1`; the version is pinned:
//     `@latest` resolves to an old release there);
//   - rustic (rustic-rs) 0.11.4, `cargo install rustic-rs --locked --version 0.11.4
//     --no-default-features` into the perf cache when cargo can build it (the default features add
//     a TUI, WebDAV and metrics exporters, none of which a backup or restore runs); labelled
//     "where built": a failed build leaves it out of the run with the reason printed;
//   - Debian's restic (0.14), only as an extra column when it is already installed (never
//     installed here: it is years behind upstream).
// The perf cache is $SHMPIPE_PERF_CACHE, default ~/.cache/shmpipe-perf (bin/ holds the binaries).
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const RESTIC_VERSION = '0.18.1';
const RUSTIC_VERSION = '0.11.4';
const cacheDir = () => process.env.SHMPIPE_PERF_CACHE || path.join(os.homedir(), '.cache', 'shmpipe-perf');
const binDir = () => path.join(cacheDir(), 'bin');

function which(cmd) {
  if (cmd.includes('/')) return fs.existsSync(cmd) ? cmd : null;
  for (const d of (process.env.PATH || '').split(':')) if (d && fs.existsSync(path.join(d, cmd))) return path.join(d, cmd);
  return null;
}

function versionOf(bin) {
  try {
    return execFileSync(bin, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0];
  } catch {
    try {
      return execFileSync(bin, ['version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0];
    } catch {
      return null;
    }
  }
}

/** restic v0.18.1: `explicit` (a path) if given, else the perf cache's, built when missing. */
function ensureRestic(log, explicit) {
  if (explicit) {
    const bin = which(explicit);
    if (!bin) throw new Error(`restic not found: ${explicit}`);
    return { bin, version: versionOf(bin) };
  }
  const bin = path.join(binDir(), 'restic');
  if (!fs.existsSync(bin)) {
    if (!which('go')) throw new Error(`restic ${RESTIC_VERSION} is not at ${bin} and there is no go to build it (pass --restic BIN)`);
    log(`building restic v${RESTIC_VERSION} into ${binDir()} (go install; a few minutes, once)`);
    fs.mkdirSync(binDir(), { recursive: true });
    const r = spawnSync('go', ['install', `github.com/restic/restic/cmd/restic@v${RESTIC_VERSION}`], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, GOBIN: binDir() },
    });
    if (r.status !== 0 || !fs.existsSync(bin)) throw new Error(`go install restic@v${RESTIC_VERSION} failed (exit ${r.status})`);
  }
  const version = versionOf(bin);
  if (!version || !version.includes(RESTIC_VERSION)) log(`warning: ${bin} says "${version}", not ${RESTIC_VERSION}`);
  return { bin, version };
}

/** rustic 0.11.4 from the perf cache, built when missing and `build`; null (with why) otherwise. */
function ensureRustic(log, { build = true, explicit = null } = {}) {
  if (explicit) {
    const bin = which(explicit);
    return bin ? { bin, version: versionOf(bin) } : { bin: null, why: `not found: ${explicit}` };
  }
  const bin = path.join(binDir(), 'rustic');
  if (!fs.existsSync(bin)) {
    if (!build) return { bin: null, why: 'not built (--no-rustic-build)' };
    if (!which('cargo')) return { bin: null, why: 'not built: no cargo' };
    log(`building rustic-rs ${RUSTIC_VERSION} into ${binDir()} (cargo install --locked; long, once)`);
    const r = spawnSync(
      'cargo',
      ['install', 'rustic-rs', '--locked', '--version', RUSTIC_VERSION, '--no-default-features', '--root', cacheDir()],
      { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, CARGO_TARGET_DIR: path.join(cacheDir(), 'rustic-target') } },
    );
    if (r.status !== 0 || !fs.existsSync(bin)) return { bin: null, why: `not built: cargo install rustic-rs@${RUSTIC_VERSION} failed (exit ${r.status})` };
  }
  return { bin, version: versionOf(bin) };
}

/** Debian's restic when installed (never installed here). */
function debianRestic() {
  const bin = '/usr/bin/restic';
  if (!fs.existsSync(bin)) return null;
  return { bin, version: versionOf(bin) };
}

module.exports = { ensureRestic, ensureRustic, debianRestic, RESTIC_VERSION, RUSTIC_VERSION, cacheDir };
