// The data set of perf:backup: a deterministic (seeded), mixed tree like the one LIMITS.md's
// restic baseline was measured on, generated once into a cache directory and reused by later runs
// (a manifest written last marks it complete). Every entry's type, size, mode, mtime, symlink
// target and a SHA-256 of every file are kept in the manifest, so a restored tree can be checked
// against it without the source (`verifyTree`).
//
// Composition for a total of T bytes (all counts and sizes scale with T / 2 GiB):
//   random/   incompressible: a few large files (64..256 MiB) and ~24 of 1..16 MiB
//   logs/     compressible text: realistic log lines (access logs, app logs, JSON lines, the odd
//             stack trace), 8..48 MiB per file, ~3-5x with zstd -3; fills T up to the total
//   small/    ~8000 files of 1..64 KiB (log-uniform), half text, half random, 5 % duplicates of
//             other small files, in nested directories 2..4 deep; some 0600 / 0755 modes
//   dup/      byte-identical copies of one large random file, three log files and a medium file
//   links/    symlinks (relative to files and a directory, absolute, one dangling), empty dirs
//
// The second data set (`kind` 'small', issue #15): N files (100,000 by default) of 0..16 KiB
// (uniform), half text, half random, ~100 to a directory two levels deep — where the per-file
// costs (walk, metadata, parent lookup, one request per file) decide the speed.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { prng } = require('./prng');

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
/** Bump when the generator changes: a cached set of another version is regenerated. */
const VERSION = 4;
const SMALL_VERSION = 1;


/** Deterministic incompressible bytes: the AES-256-CTR keystream of a key derived from `name`. */
function randomStream(seed, name) {
  const key = crypto.createHash('sha256').update(`shmpipe-perf-backup:${seed}:${name}`).digest();
  const cipher = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(4 * MiB);
  return (n) => cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n));
}

// ---- log text ----------------------------------------------------------------------------------

const SERVICES = ['api-gateway', 'billing', 'auth', 'search', 'catalog', 'orders', 'notifier', 'scheduler', 'inventory', 'media-proxy'];
const LEVELS = ['INFO', 'INFO', 'INFO', 'INFO', 'INFO', 'DEBUG', 'DEBUG', 'WARN', 'ERROR'];
const METHODS = ['GET', 'GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH'];
const ROUTES = ['/api/v2/users/{id}', '/api/v2/users/{id}/orders', '/api/v1/catalog/items/{id}', '/api/v2/search', '/healthz', '/api/v2/cart/{id}/items', '/static/js/app.{hex}.js', '/api/v1/invoices/{id}/pdf', '/metrics', '/api/v2/sessions'];
const STATUSES = [200, 200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 404, 500, 502, 503];
const AGENTS = [
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0',
  'curl/8.5.0',
  'okhttp/4.12.0',
  'kube-probe/1.30',
  'python-requests/2.32.3',
];
const MESSAGES = [
  'cache miss for key {key}, loading from backend',
  'connection pool exhausted, waiting {n} ms for a free connection',
  'user {id} logged in from {ip}',
  'retrying request to {svc} (attempt {small} of 5) after {n} ms',
  'scheduled job {key} finished in {n} ms, {small} items processed',
  'invalid token for user {id}: signature expired',
  'slow query on table orders took {n} ms: SELECT * FROM orders WHERE user_id = {id} AND status = $1',
  'published event order.created id={hex} partition={small}',
  'rate limit exceeded for client {ip}, {n} requests in the last minute',
  'config reloaded, {small} keys changed',
  'GC pause {n} us, heap {n} KiB',
];
const FRAMES = [
  'at com.example.orders.OrderService.place(OrderService.java:{small})',
  'at com.example.orders.api.OrderController.create(OrderController.java:{small})',
  'at org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:{small})',
  'at java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:{small})',
  'at java.base/java.lang.Thread.run(Thread.java:{small})',
];

/** A generator of log text: `next(bytes)` returns at least `bytes` of whole lines. */
function logText(seed, startMs) {
  const r = prng(seed);
  const pick = (a) => a[Math.floor(r() * a.length)];
  const int = (n) => Math.floor(r() * n);
  const hex8 = () => ((r() * 4294967296) >>> 0).toString(16).padStart(8, '0');
  const hex = (n) => (n <= 8 ? hex8().slice(0, n) : n <= 16 ? (hex8() + hex8()).slice(0, n) : hex8() + hex8() + hex(n - 16));
  const ip = () => `10.${int(4) + 40}.${int(256)}.${int(256)}`;
  const fill = (t) =>
    t.replace(/\{(\w+)\}/g, (_, k) =>
      k === 'id' ? String(10000 + int(90000)) : k === 'hex' ? hex(8) : k === 'ip' ? ip() : k === 'key' ? `${pick(SERVICES)}:${int(5000)}` : k === 'svc' ? pick(SERVICES) : k === 'small' ? String(1 + int(400)) : String(1 + int(5000)),
    );
  // Timestamps: the date-and-minute prefix is cached (it changes rarely), seconds and the
  // fraction are formatted per line.
  let t = startMs;
  let minute = -1;
  let prefix = '';
  const stamp = () => {
    t += int(40);
    const m = Math.floor(t / 60000);
    if (m !== minute) {
      minute = m;
      prefix = new Date(m * 60000).toISOString().slice(0, 17);
    }
    const ms = t % 60000;
    return `${prefix}${String(Math.floor(ms / 1000)).padStart(2, '0')}.${String(ms % 1000).padStart(3, '0')}${String(int(1000)).padStart(3, '0')}Z`;
  };
  const line = () => {
    const kind = r();
    const svc = pick(SERVICES);
    if (kind < 0.45) {
      const route = fill(pick(ROUTES));
      return `${ip()} - - [${stamp()}] "${pick(METHODS)} ${route} HTTP/1.1" ${pick(STATUSES)} ${int(60000)} "-" "${pick(AGENTS)}" rt=${(r() * 2).toFixed(3)} req=${hex(16)}\n`;
    }
    if (kind < 0.75) {
      return `${stamp()} ${pick(LEVELS).padEnd(5)} ${svc}[${1000 + int(50)}]: ${fill(pick(MESSAGES))} trace=${hex(16)}\n`;
    }
    if (kind < 0.98) {
      return `{"ts":"${stamp()}","level":"${pick(LEVELS).toLowerCase()}","service":"${svc}","msg":"${fill(pick(MESSAGES))}","request_id":"${hex(12)}","duration_ms":${(r() * 900).toFixed(1)},"user":${10000 + int(90000)}}\n`;
    }
    let s = `${stamp()} ERROR ${svc}[${1000 + int(50)}]: unhandled exception in request ${hex(16)}\njava.lang.IllegalStateException: order ${10000 + int(90000)} is not in state PENDING\n`;
    for (const f of FRAMES) s += `\t${fill(f)}\n`;
    return s;
  };
  return (bytes) => {
    const parts = [];
    let n = 0;
    while (n < bytes) {
      const l = line();
      parts.push(l);
      n += l.length;
    }
    return parts.join('');
  };
}

// ---- the plan ----------------------------------------------------------------------------------

/**
 * The entries to create, in order: { rel, kind: 'dir'|'file'|'copy'|'link', ... }. Files carry
 * `content: 'random'|'text'`, `size`, `name` (the content's seed name); copies carry `of`.
 */
function plan(total, seed) {
  const r = prng(seed);
  const s = total / (2 * GiB);
  const logUniform = (lo, hi) => Math.round(Math.exp(Math.log(lo) + r() * (Math.log(hi) - Math.log(lo))));
  const entries = [];
  const dirs = new Set();
  const dir = (rel, mode = 0o755) => {
    if (rel === '' || dirs.has(rel)) return;
    dir(path.dirname(rel) === '.' ? '' : path.dirname(rel));
    dirs.add(rel);
    entries.push({ rel, kind: 'dir', mode });
  };
  const file = (rel, content, size, mode = 0o644) => {
    dir(path.dirname(rel));
    const e = { rel, kind: 'file', content, size, mode, name: rel };
    entries.push(e);
    return e;
  };
  let used = 0;

  // Large and medium incompressible files.
  const large = [];
  for (const [i, mib] of [256, 192, 128, 64, 64].entries()) {
    const size = Math.max(MiB, Math.round(mib * MiB * Math.min(1, s)));
    large.push(file(`random/large-${i}.bin`, 'random', size));
    used += size;
  }
  if (s > 1) {
    // Bigger sets: more large files rather than larger ones (64..256 MiB stays the range).
    for (let i = 5; used < 704 * MiB * s; i++) {
      const size = logUniform(64 * MiB, 256 * MiB);
      large.push(file(`random/large-${i}.bin`, 'random', size));
      used += size;
    }
  }
  const medium = [];
  for (let i = 0, n = Math.max(2, Math.round(24 * s)); i < n; i++) {
    const size = logUniform(MiB, 16 * MiB);
    medium.push(file(`random/medium/m${String(i).padStart(3, '0')}.dat`, 'random', size));
    used += size;
  }

  // Thousands of small files in nested directories.
  const small = [];
  const nSmall = Math.max(100, Math.round(8000 * s));
  const topDirs = Math.max(4, Math.round(40 * Math.sqrt(s)));
  for (let i = 0; i < nSmall; i++) {
    // Depth 2..4 (half of the files at 2); fewer choices deeper down: ~10 files a directory.
    const u0 = r();
    const depth = u0 < 0.5 ? 2 : u0 < 0.85 ? 3 : 4;
    let d = `small/p${String(Math.floor(r() * topDirs)).padStart(2, '0')}`;
    const names = [['src', 'lib', 'docs', 'cache', 'assets', 'conf'], ['core', 'util', 'gen'], ['a', 'b']];
    for (let k = 1; k < depth; k++) d += `/${names[k - 1][Math.floor(r() * names[k - 1].length)]}`;
    const u = r();
    const mode = u < 0.05 ? 0o755 : u < 0.1 ? 0o600 : 0o644;
    if (small.length > 20 && r() < 0.05) {
      const of = small[Math.floor(r() * small.length)];
      dir(d);
      const e = { rel: `${d}/copy-${i}${path.extname(of.rel)}`, kind: 'copy', of: of.rel, size: of.size, mode };
      entries.push(e);
      used += of.size;
      continue;
    }
    const text = r() < 0.5;
    const e = file(`${d}/${text ? `f${i}.log` : `f${i}.bin`}`, text ? 'text' : 'random', logUniform(KiB, 64 * KiB), mode);
    small.push(e);
    used += e.size;
  }

  // Duplicates of some of the above (whole files: the dedup a backup tool must find).
  const copy = (of, rel) => {
    dir(path.dirname(rel));
    entries.push({ rel, kind: 'copy', of: of.rel, size: of.size, mode: 0o644 });
    used += of.size;
  };
  copy(large[1], 'dup/large-1-copy.bin');
  copy(medium[0], 'dup/medium-0-copy.dat');

  // Logs fill the rest; the first three are also copied (the copies count towards the total).
  const logs = [];
  let left = total - used;
  while (left > 0 && logs.length < 10000) {
    const k = logs.length < 3 ? 2 : 1;
    let size = logUniform(8 * MiB, 48 * MiB);
    if (size * k > left) size = Math.floor(left / k);
    if (size < 4 * KiB) break;
    const e = file(`logs/${SERVICES[logs.length % SERVICES.length]}/app-${String(logs.length).padStart(3, '0')}.log`, 'text', size);
    if (k === 2) copy(e, `dup/logs/app-${logs.length}.log`);
    logs.push(e);
    left -= size * k;
  }

  // Symlinks and empty directories (metadata a restore must bring back).
  dir('links');
  const link = (rel, target) => entries.push({ rel, kind: 'link', target });
  link('links/to-large-0', '../random/large-0.bin');
  link('links/to-logs', '../logs');
  link('links/absolute-etc-hostname', '/etc/hostname');
  link('links/dangling', 'no/such/file');
  for (let i = 0; i < 16; i++) link(`links/small-${i}`, `../${small[Math.floor(r() * small.length)].rel}`);
  for (const e of ['empty/a', 'empty/b/c', 'empty/private']) dir(e, e.endsWith('private') ? 0o700 : 0o755);
  return entries;
}

/** The 'small' set: `count` files of 0..16 KiB, ~100 a directory (d00..d39/s00..s24). */
function planSmall(count, seed) {
  const r = prng(seed ^ 0x51a11);
  const entries = [];
  const dirs = new Set();
  const dir = (rel) => {
    if (rel === '' || dirs.has(rel)) return;
    dir(path.dirname(rel) === '.' ? '' : path.dirname(rel));
    dirs.add(rel);
    entries.push({ rel, kind: 'dir', mode: 0o755 });
  };
  const perDir = 100;
  const nDirs = Math.max(1, Math.ceil(count / perDir));
  const top = Math.max(1, Math.round(Math.sqrt(nDirs * 1.6)));
  for (let i = 0; i < count; i++) {
    const k = Math.floor(i / perDir);
    const d = `d${String(k % top).padStart(2, '0')}/s${String(Math.floor(k / top)).padStart(3, '0')}`;
    dir(d);
    const text = r() < 0.5;
    const size = Math.floor(r() * (16 * KiB + 1));
    const u = r();
    const mode = u < 0.03 ? 0o755 : u < 0.06 ? 0o600 : 0o644;
    entries.push({ rel: `${d}/${text ? `f${i}.txt` : `f${i}.bin`}`, kind: 'file', content: text ? 'text' : 'random', size, mode, name: `small-${i}` });
  }
  return entries;
}

// ---- generating and checking ------------------------------------------------------------------

function sha256File(file, buf) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(n === buf.length ? buf : buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** mtime for entry `i`: deterministic, with a sub-second part (restores must keep it). */
function mtimeOf(i) {
  return 1767225600 + i * 37 + ((i * 7919) % 1000000) / 1e6;
}

/** Generates `entries` under `dir`; returns the manifest entries (with hashes and exact stat). */
function generate(dir, entries, seed, log) {
  fs.mkdirSync(dir, { recursive: true });
  const byRel = new Map();
  const textGen = logText(seed ^ 0x5eed, Date.UTC(2026, 10, 1));
  let done = 0;
  let lastLog = Date.now();
  const total = entries.reduce((a, e) => a + (e.size ?? 0), 0);
  for (const [i, e] of entries.entries()) {
    const abs = path.join(dir, e.rel);
    if (e.kind === 'dir') {
      fs.mkdirSync(abs, { recursive: true });
    } else if (e.kind === 'link') {
      fs.symlinkSync(e.target, abs);
    } else if (e.kind === 'copy') {
      fs.copyFileSync(path.join(dir, e.of), abs);
      e.sha256 = byRel.get(e.of).sha256;
    } else {
      const h = crypto.createHash('sha256');
      const fd = fs.openSync(abs, 'w');
      const rnd = e.content === 'random' ? randomStream(seed, e.name) : null;
      let pending = '';
      for (let off = 0; off < e.size; ) {
        const n = Math.min(4 * MiB, e.size - off);
        let chunk;
        if (rnd) chunk = rnd(n);
        else {
          if (pending.length < n) pending += textGen(n - pending.length + 4096);
          chunk = Buffer.from(pending.slice(0, n), 'latin1');
          pending = pending.slice(n);
        }
        fs.writeSync(fd, chunk, 0, n, off);
        h.update(chunk.subarray(0, n));
        off += n;
      }
      fs.closeSync(fd);
      e.sha256 = h.digest('hex');
    }
    if (e.kind !== 'link') {
      fs.chmodSync(abs, e.mode);
      if (e.kind !== 'dir') fs.utimesSync(abs, mtimeOf(i), mtimeOf(i));
    }
    byRel.set(e.rel, e);
    done += e.size ?? 0;
    if (log && Date.now() - lastLog > 5000) {
      log(`  generating: ${(done / GiB).toFixed(2)} of ${(total / GiB).toFixed(2)} GiB`);
      lastLog = Date.now();
    }
  }
  // Directory mtimes last (creating entries changes them), deepest first.
  const dirsDeepFirst = entries.map((e, i) => [e, i]).filter(([e]) => e.kind === 'dir').sort((a, b) => b[0].rel.split('/').length - a[0].rel.split('/').length);
  for (const [e, i] of dirsDeepFirst) fs.utimesSync(path.join(dir, e.rel), mtimeOf(i), mtimeOf(i));
  return entries.map((e) => describe(dir, e.rel, e.sha256));
}

/** The manifest record of one entry, from lstat (exact ns mtime). */
function describe(dir, rel, sha256) {
  const abs = path.join(dir, rel);
  const st = fs.lstatSync(abs, { bigint: true });
  const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : st.isFile() ? 'file' : 'other';
  const rec = { rel, kind, mode: Number(st.mode & 0o7777n), mtimeNs: String(st.mtimeNs) };
  if (kind === 'file') {
    rec.size = Number(st.size);
    rec.sha256 = sha256;
  }
  if (kind === 'link') rec.target = fs.readlinkSync(abs);
  return rec;
}

/**
 * The data set under `cacheDir` for (`total`, `seed`): reused when its manifest exists and every
 * entry still has its recorded size and mtime, else (re)generated. Returns { dir, manifest, reused }.
 */
function ensureDataset(cacheDir, total, seed, log = () => {}, kind = 'mixed') {
  // For kind 'small', `total` is the number of files.
  const dir = path.join(cacheDir, kind === 'small' ? `dataset-small-v${SMALL_VERSION}-${total}-${seed}` : `dataset-v${VERSION}-${total}-${seed}`);
  const manifestFile = path.join(dir, '..', `${path.basename(dir)}.manifest.json`);
  const src = path.join(dir, 'src');
  if (fs.existsSync(manifestFile)) {
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
    const stale = manifest.entries.find((e) => {
      try {
        const st = fs.lstatSync(path.join(src, e.rel), { bigint: true });
        return String(st.mtimeNs) !== e.mtimeNs || (e.kind === 'file' && Number(st.size) !== e.size) || Number(st.mode & 0o7777n) !== e.mode;
      } catch {
        return true;
      }
    });
    if (!stale && countEntries(src) === manifest.entries.length) return { dir: src, manifest, reused: true };
    log(`  cached data set under ${dir} is stale (${stale ? stale.rel : 'extra entries'}): regenerating`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(manifestFile, { force: true });
  const entries = kind === 'small' ? planSmall(total, seed) : plan(total, seed);
  const recs = generate(src, entries, seed, log);
  const files = recs.filter((e) => e.kind === 'file');
  const manifest = {
    kind,
    version: kind === 'small' ? SMALL_VERSION : VERSION,
    total,
    seed,
    bytes: files.reduce((a, e) => a + e.size, 0),
    files: files.length,
    entries: recs,
  };
  fs.writeFileSync(manifestFile, JSON.stringify(manifest));
  return { dir: src, manifest, reused: false };
}

function countEntries(dir) {
  let n = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop();
    for (const de of fs.readdirSync(d, { withFileTypes: true })) {
      n++;
      if (de.isDirectory()) stack.push(path.join(d, de.name));
    }
  }
  return n;
}

/** A summary of the data set for the table: bytes by class and counts. */
function describeDataset(manifest) {
  const cls = { random: [0, 0], logs: [0, 0], small: [0, 0], dup: [0, 0] };
  for (const e of manifest.entries) {
    if (e.kind !== 'file') continue;
    const top = e.rel.split('/')[0];
    const k = top === 'random' ? 'random' : top === 'logs' ? 'logs' : top === 'dup' ? 'dup' : 'small';
    cls[k][0]++;
    cls[k][1] += e.size;
  }
  const dirs = manifest.entries.filter((e) => e.kind === 'dir').length;
  const links = manifest.entries.filter((e) => e.kind === 'link').length;
  return { cls, dirs, links };
}

/** Reads every file of the set once (the warm-up: both tools then read from the page cache). */
function readAll(dir, manifest) {
  const buf = Buffer.allocUnsafe(4 * MiB);
  let bytes = 0;
  for (const e of manifest.entries) {
    if (e.kind !== 'file') continue;
    const fd = fs.openSync(path.join(dir, e.rel), 'r');
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      bytes += n;
    }
    fs.closeSync(fd);
  }
  return bytes;
}

/**
 * Compares the restored tree at `root` with the manifest: the same entries, types, sizes, SHA-256
 * of every file, symlink targets, modes, and mtimes (files and directories, within `mtimeTolNs`).
 * Returns { ok, checked, problems: [string] (the first 20), counts by kind of problem }.
 */
function verifyTree(root, manifest, { mtimeTolNs = 2000n } = {}) {
  const problems = [];
  const counts = { missing: 0, extra: 0, type: 0, size: 0, content: 0, link: 0, mode: 0, mtime: 0 };
  const note = (kind, msg) => {
    counts[kind]++;
    if (problems.length < 20) problems.push(`${kind}: ${msg}`);
  };
  const want = new Map(manifest.entries.map((e) => [e.rel, e]));
  // Everything present in the restore.
  const seen = new Set();
  const stack = [''];
  while (stack.length) {
    const d = stack.pop();
    for (const de of fs.readdirSync(path.join(root, d), { withFileTypes: true })) {
      const rel = d === '' ? de.name : `${d}/${de.name}`;
      seen.add(rel);
      if (!want.has(rel)) note('extra', rel);
      if (de.isDirectory()) stack.push(rel);
    }
  }
  const buf = Buffer.allocUnsafe(8 * MiB);
  let checked = 0;
  for (const e of manifest.entries) {
    if (!seen.has(e.rel)) {
      note('missing', e.rel);
      continue;
    }
    const got = describe(root, e.rel, undefined);
    if (got.kind !== e.kind) {
      note('type', `${e.rel}: ${got.kind}, want ${e.kind}`);
      continue;
    }
    if (e.kind === 'link') {
      if (got.target !== e.target) note('link', `${e.rel} -> ${got.target}, want ${e.target}`);
    } else if (got.mode !== e.mode) note('mode', `${e.rel}: ${got.mode.toString(8)}, want ${e.mode.toString(8)}`);
    if (e.kind !== 'link') {
      const dt = BigInt(got.mtimeNs) - BigInt(e.mtimeNs);
      if (dt > mtimeTolNs || dt < -mtimeTolNs) note('mtime', `${e.rel}: off by ${dt} ns`);
    }
    if (e.kind === 'file') {
      if (got.size !== e.size) note('size', `${e.rel}: ${got.size} B, want ${e.size}`);
      else if (sha256File(path.join(root, e.rel), buf) !== e.sha256) note('content', `${e.rel}: SHA-256 differs`);
    }
    checked++;
  }
  return { ok: problems.length === 0, checked, problems, counts };
}

module.exports = { ensureDataset, describeDataset, readAll, verifyTree, logText, MiB, GiB };
