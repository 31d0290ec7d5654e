// A generated source tree for the backup end-to-end tests, and a byte-level manifest of a tree
// to compare a restore against.
//
// makeTree(root) builds, under `root` (created; must not exist):
// - files/   sizes 0, 1, 4095, 4096, 256 KiB ± 1 (the agent's sync-read limit), 1 MiB ± 1,
//            4 MiB ± 1 (the CLI's slot size: FILE_PUT vs FILE_OPEN/WRITE/FINISH), 8 MiB + 3,
//            a compressible text file, a duplicate of another file, and (opts.bigBytes) one
//            big random file (100 MiB in the round-trip test);
// - modes/   0600, 0644, 0444, 0755, 04755 files; a 0700 directory; (as root) a file owned by
//            1234:5678;
// - names/   spaces, a newline, a tab, `#`, leading dashes, unicode (NFC and NFD), a 255-byte
//            name, a backslash, escapes-looking text (`\x41`), and names that are not UTF-8
//            (a file and a directory, made through Buffer paths);
// - links/   relative, absolute, dangling (relative and absolute), to a directory, to itself,
//            and with a non-UTF-8 target;
// - empty/, empty-0700/ and deep/a/b/c/d/e/leaf/: empty directories;
// - explicit mtimes with sub-second parts on files, symlinks and every directory (set last,
//   deepest first, so creating children does not move them).
//
// manifest(root) walks a tree with Buffer paths (names need not be UTF-8) and records, per
// entry: type, full st_mode, uid, gid, mtime (ns), and for files size + SHA-256, for symlinks
// the target bytes. assertSameManifest() compares two manifests; mtimes exactly by default
// (restore sets them with nanoseconds, through utimensat).
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const KiB = 1024;
const MiB = 1024 * 1024;

/** Deterministic pseudo-random bytes (fast: AES-CTR of zeros under a key from `seed`). */
function prng(seed) {
  const key = crypto.createHash('sha256').update(String(seed)).digest();
  const c = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return (n) => c.update(Buffer.alloc(n));
}

/** Writes `size` bytes from `gen` (n → Buffer) to `file`; returns their SHA-256 (hex). */
function writeGenerated(file, size, gen) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w');
  try {
    for (let done = 0; done < size; ) {
      const n = Math.min(8 * MiB, size - done);
      const b = gen(n);
      h.update(b);
      fs.writeSync(fd, b, 0, n, done);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

function writeRandom(file, size, seed) {
  return writeGenerated(file, size, prng(seed));
}

function writeText(file, size) {
  const line = Buffer.from('2026-11-22T05:00:00Z INFO shmpipe backup: the quick brown fox jumps over the lazy dog\n');
  let off = 0;
  return writeGenerated(file, size, (n) => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = line[(off + i) % line.length];
    off += n;
    return b;
  });
}

/** SHA-256 (hex) of a file, read synchronously in 4 MiB pieces (paths may be Buffers). */
function sha256File(file) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(4 * MiB);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** The name as text for messages and manifest keys: UTF-8 if it is, else `\xNN` for every byte that is not. */
function show(buf) {
  const s = buf.toString('utf8');
  if (Buffer.from(s, 'utf8').equals(buf) && !s.includes('\\')) return s;
  let out = '';
  for (const b of buf) out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out;
}

const B = (s) => (Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8'));
/** Joins path parts (strings or Buffers) into a Buffer path. */
function join(...parts) {
  const out = [];
  for (const [i, p] of parts.entries()) {
    if (i > 0) out.push(Buffer.from('/'));
    out.push(B(p));
  }
  return Buffer.concat(out);
}

/** The non-UTF-8 names the tree uses (exported for tests that name them). */
const NON_UTF8_FILE = Buffer.from([0x66, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e]); // f\xff\xfe.bin
const LATIN1_DIR = Buffer.from('caf\xe9 latin1', 'latin1'); // café in Latin-1: a lone 0xe9
const NON_UTF8_TARGET = Buffer.from([0x2e, 0x2e, 0x2f, 0xc3, 0x28, 0x78]); // ../\xc3(x: a broken sequence

/** The file sizes of files/ (name → bytes). */
const SIZES = {
  'empty.bin': 0,
  'one.bin': 1,
  '4095.bin': 4095,
  '4096.bin': 4096,
  '256k-1.bin': 256 * KiB - 1,
  '256k.bin': 256 * KiB,
  '256k+1.bin': 256 * KiB + 1,
  '1m-1.bin': MiB - 1,
  '1m.bin': MiB,
  '1m+1.bin': MiB + 1,
  '4m-1.bin': 4 * MiB - 1,
  '4m.bin': 4 * MiB,
  '4m+1.bin': 4 * MiB + 1,
  '8m+3.bin': 8 * MiB + 3,
};

/**
 * Builds the tree (see the module comment). Returns a description: `files` (relative path text
 * → {size, sha}), counts of regular files, directories (incl. the root), symlinks, and the
 * total bytes of the regular files.
 *
 * @param {string} root
 * @param {{bigBytes?: number, seed?: string}} [opts]
 */
function makeTree(root, opts = {}) {
  const seed = opts.seed ?? 'tree';
  const files = {};
  const dirs = []; // [Buffer path, mtime seconds]
  const mkdir = (rel, mode = 0o755) => {
    const abs = join(root, ...rel);
    fs.mkdirSync(abs, { recursive: true });
    fs.chmodSync(abs, mode);
    dirs.push(abs);
    return abs;
  };
  const record = (relParts, size, sha) => {
    files[relParts.map((p) => show(B(p))).join('/')] = { size, sha };
  };
  fs.mkdirSync(root);
  fs.chmodSync(root, 0o755);
  dirs.push(B(root));

  // files/
  mkdir(['files']);
  for (const [name, size] of Object.entries(SIZES)) record(['files', name], size, writeRandom(join(root, 'files', name), size, `${seed}/${name}`));
  record(['files', 'text.log'], 3 * MiB + 17, writeText(join(root, 'files', 'text.log'), 3 * MiB + 17));
  mkdir(['files', 'dup']);
  record(['files', 'dup', 'copy-of-4m+1.bin'], 4 * MiB + 1, writeRandom(join(root, 'files', 'dup', 'copy-of-4m+1.bin'), 4 * MiB + 1, `${seed}/4m+1.bin`));
  if (opts.bigBytes) record(['files', 'big.bin'], opts.bigBytes, writeRandom(join(root, 'files', 'big.bin'), opts.bigBytes, `${seed}/big`));

  // modes/
  mkdir(['modes']);
  const modeFiles = { 'private.txt': 0o600, 'normal.txt': 0o644, 'readonly.txt': 0o444, 'exec.sh': 0o755, 'setuid.bin': 0o4755 };
  for (const [name, mode] of Object.entries(modeFiles)) {
    const p = join(root, 'modes', name);
    fs.writeFileSync(p, `${name} has mode ${mode.toString(8)}\n`);
    fs.chmodSync(p, mode);
    record(['modes', name], fs.statSync(p).size, sha256File(p));
  }
  mkdir(['modes', 'private-dir'], 0o700);
  fs.writeFileSync(join(root, 'modes', 'private-dir', 'secret'), 'secret\n', { mode: 0o600 });
  record(['modes', 'private-dir', 'secret'], 7, sha256File(join(root, 'modes', 'private-dir', 'secret')));
  if (process.getuid() === 0) {
    const p = join(root, 'modes', 'owned-by-1234');
    fs.writeFileSync(p, 'owned by 1234:5678\n');
    fs.chownSync(p, 1234, 5678);
    record(['modes', 'owned-by-1234'], 19, sha256File(p));
  }

  // names/
  mkdir(['names']);
  const odd = [
    'with space',
    ' leading space',
    'trailing space ',
    'new\nline',
    'tab\tname',
    '#hash',
    '-leading-dash',
    '--double-dash',
    'ünïcødé',
    'u\u0308nfd', // NFD: u + combining diaeresis (must not be normalized)
    '日本語.txt',
    '🎉 emoji',
    'back\\slash',
    '\\x41 looks escaped',
    "quote'\"`$(x)",
    '?*[glob]',
    'x'.repeat(255),
    NON_UTF8_FILE,
  ];
  for (const [i, name] of odd.entries()) {
    const p = join(root, 'names', name);
    const body = Buffer.concat([Buffer.from(`odd name ${i}: `), B(name), Buffer.from('\n')]);
    fs.writeFileSync(p, body);
    record(['names', name], body.length, sha256File(p));
  }
  mkdir(['names', LATIN1_DIR]);
  fs.writeFileSync(join(root, 'names', LATIN1_DIR, 'inside'), 'inside a Latin-1 directory\n');
  record(['names', LATIN1_DIR, 'inside'], fs.statSync(join(root, 'names', LATIN1_DIR, 'inside')).size, sha256File(join(root, 'names', LATIN1_DIR, 'inside')));
  mkdir(['names', 'dir with space #1']);
  fs.writeFileSync(join(root, 'names', 'dir with space #1', '-f'), '-f\n');
  record(['names', 'dir with space #1', '-f'], 3, sha256File(join(root, 'names', 'dir with space #1', '-f')));

  // links/
  mkdir(['links']);
  const links = {
    relative: '../files/one.bin',
    absolute: path.join(path.resolve(root), 'files', 'one.bin'),
    'dangling-relative': 'does/not/exist',
    'dangling-absolute': '/nonexistent/shmpipe/e2e',
    'to-dir': '../modes',
    'to-self': 'to-self',
    'odd target': 'with space\nand newline',
    'non-utf8-target': NON_UTF8_TARGET,
  };
  const linkTimes = [];
  for (const [name, target] of Object.entries(links)) {
    const p = join(root, 'links', name);
    fs.symlinkSync(B(target), p);
    linkTimes.push(p);
  }

  // empty directories
  mkdir(['empty']);
  mkdir(['empty-0700'], 0o700);
  mkdir(['deep', 'a', 'b', 'c', 'd', 'e', 'leaf']);
  for (const d of ['deep', 'deep/a', 'deep/a/b', 'deep/a/b/c', 'deep/a/b/c/d', 'deep/a/b/c/d/e']) dirs.push(join(root, d));

  // mtimes: files and links first, directories last and deepest first.
  const base = 1_700_000_000;
  let k = 0;
  for (const rel of Object.keys(SIZES)) {
    const t = base + ++k * 1000 + 0.123456;
    fs.utimesSync(join(root, 'files', rel), t, t);
  }
  fs.utimesSync(join(root, 'modes', 'readonly.txt'), 86_400.5, 86_400.5); // 1970-01-02T00:00:00.5Z
  fs.utimesSync(join(root, 'modes', 'exec.sh'), 4_102_444_800.25, 4_102_444_800.25); // 2100-01-01
  for (const p of linkTimes) {
    const t = base + ++k * 1000 + 0.654321;
    fs.lutimesSync(p, t, t);
  }
  const uniq = [...new Map(dirs.map((d) => [d.toString('latin1'), d])).values()];
  uniq.sort((a, b) => b.length - a.length);
  for (const d of uniq) {
    const t = base + ++k * 1000 + 0.5;
    fs.utimesSync(d, t, t);
  }

  const m = manifest(root);
  const count = (type) => Object.values(m).filter((e) => e.type === type).length;
  const totalBytes = Object.values(files).reduce((a, f) => a + f.size, 0);
  return { root, files, fileCount: count('file'), dirCount: count('dir'), symlinkCount: count('symlink'), totalBytes, manifest: m };
}

/**
 * Every entry under `root` (root itself as '.'): {type, mode, uid, gid, mtimeNs, size?, sha?,
 * target?}. Keys are relative paths as text (show()). Symlinks are not followed.
 *
 * @param {string|Buffer} root
 * @param {{hash?: boolean}} [opts] hash: SHA-256 of every file (default true)
 */
function manifest(root, opts = {}) {
  const hash = opts.hash ?? true;
  const out = {};
  const walk = (abs, rel) => {
    const st = fs.lstatSync(abs, { bigint: true });
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
    const e = { type, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), mtimeNs: st.mtimeNs };
    if (type === 'file') {
      e.size = Number(st.size);
      if (hash) e.sha = sha256File(abs);
    }
    if (type === 'symlink') e.target = show(fs.readlinkSync(abs, { encoding: 'buffer' }));
    out[rel] = e;
    if (type === 'dir') {
      const names = fs.readdirSync(abs, { encoding: 'buffer' }).sort(Buffer.compare);
      for (const n of names) walk(join(abs, n), rel === '.' ? show(n) : `${rel}/${show(n)}`);
    }
  };
  walk(B(root), '.');
  return out;
}

/**
 * Asserts that `actual` (a manifest) has exactly the entries of `expected` with the same type,
 * mode, owner, size, bytes and symlink targets, and mtimes within `toleranceNs`.
 */
function assertSameManifest(actual, expected, toleranceNs = 0n, what = 'restored tree') {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${what}: the same entries`);
  const bad = [];
  for (const [p, want] of Object.entries(expected)) {
    const { mtimeNs, ...got } = actual[p];
    const { mtimeNs: wantT, ...wantRest } = want;
    try {
      assert.deepEqual(got, wantRest);
    } catch {
      bad.push(`${JSON.stringify(p)}: got ${JSON.stringify(got)}, want ${JSON.stringify(wantRest)}`);
    }
    const d = mtimeNs - wantT;
    if (d > toleranceNs || d < -toleranceNs) bad.push(`${JSON.stringify(p)}: mtime ${mtimeNs} ns, want ${wantT} ns (±${toleranceNs})`);
  }
  assert.deepEqual(bad, [], `${what}: ${bad.length} entries differ`);
}

/** Bytes of all regular files under `dir` (st_size) and their count: a repository on disk. */
function diskUsage(dir) {
  let bytes = 0;
  let files = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        bytes += fs.statSync(p).size;
        files++;
      }
    }
  };
  walk(dir);
  return { bytes, files };
}

/** Every file under `dir` as `relative path → size` (to show that nothing was written). */
function listing(dir) {
  const out = {};
  const walk = (d, rel) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else out[r] = fs.lstatSync(path.join(d, e.name)).size;
    }
  };
  walk(dir, '');
  return out;
}

/** rm -rf that also works on read-only directories when not root. */
function removeTree(dir) {
  if (!fs.existsSync(dir)) return;
  const fix = (d) => {
    try {
      fs.chmodSync(d, 0o700);
    } catch {}
    for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) fix(path.join(d, e.name));
  };
  try {
    fix(dir);
  } catch {}
  fs.rmSync(dir, { recursive: true, force: true });
}

module.exports = { makeTree, manifest, assertSameManifest, sha256File, writeRandom, writeText, diskUsage, listing, removeTree, show, join, prng, SIZES, KiB, MiB, NON_UTF8_FILE, LATIN1_DIR, NON_UTF8_TARGET };
