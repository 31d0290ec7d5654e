// Interoperability of the three agents (issue #17): objects put by the TypeScript library, the
// Go client (go-lib/cmd/shmpipe-go), the Python client (`python -m shmpipe`) and the `shmpipe`
// CLI read back bit-exact through every other one, against one real sidecar; every client lists
// the same keys. The Go command is built here from go-lib (Go from the machine's toolchain); the
// Python client needs only the standard library.
'use strict';

const assert = require('node:assert/strict');
const { execFile, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { bundle, root } = require('./helpers/paths');
const { startSidecar } = require('./helpers/sidecar');
const { CLI } = require('./helpers/cli');
const { crc32c } = require('./helpers/crc32c');

const { connect } = require(bundle);

function run(cmd, args, env = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

describe('interop: TypeScript, Go, Python and the shmpipe CLI on one sidecar', function () {
  this.timeout(300_000);
  let sidecar;
  let client;
  let work;
  let goBin;
  const py = fs.existsSync(path.join(root, '.venv-py', 'bin', 'python')) ? path.join(root, '.venv-py', 'bin', 'python') : 'python3';
  const pyEnv = { PYTHONPATH: path.join(root, 'py-lib') };

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-interop-'));
    goBin = path.join(work, 'shmpipe-go');
    execFileSync('go', ['build', '-o', goBin, './cmd/shmpipe-go'], { cwd: path.join(root, 'go-lib'), stdio: 'inherit' });
    sidecar = await startSidecar();
    client = await connect({ socketPath: sidecar.socketPath, slotCount: 32, slotSize: 1 << 20, clientName: 'interop-ts' });
  });
  after(async () => {
    await client?.close();
    await sidecar?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const sock = () => sidecar.socketPath;
  // Each agent's put and get of a file, and its listing (keys).
  const agents = {
    ts: {
      put: (file, key) => client.putFile(file, key),
      get: (key, file) => client.getFile(key, file),
      ls: async (prefix) => {
        const keys = [];
        for await (const e of client.list(prefix)) keys.push(e.key);
        return keys;
      },
    },
    go: {
      put: (file, key) => run(goBin, ['--sidecar', sock(), 'put', key, file]),
      get: (key, file) => run(goBin, ['--sidecar', sock(), 'get', key, file]),
      ls: async (prefix) => (await run(goBin, ['--sidecar', sock(), '--json', 'ls', prefix])).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).key),
    },
    py: {
      put: (file, key) => run(py, ['-m', 'shmpipe', '--sidecar', sock(), 'put', key, file], pyEnv),
      get: (key, file) => run(py, ['-m', 'shmpipe', '--sidecar', sock(), 'get', key, file], pyEnv),
      ls: async (prefix) =>
        (await run(py, ['-m', 'shmpipe', '--sidecar', sock(), '--json', 'ls', prefix], pyEnv)).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).key),
    },
    cli: {
      put: (file, key) => run(process.execPath, [CLI, 'put', file, key, '--sidecar', sock()]),
      get: (key, file) => run(process.execPath, [CLI, 'get', key, file, '--sidecar', sock()]),
      ls: async (prefix) => (await run(process.execPath, [CLI, 'list', prefix, '--json', '--sidecar', sock()])).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).key),
    },
  };
  // Empty, one slot with its key, and streamed through several slots (and several parts' worth
  // of WRITEs for the 1 MiB-slot clients).
  const sizes = [0, 100_003, (9 << 20) + 5];

  it('an object put by any agent reads back bit-exact through every agent', async () => {
    const objects = [];
    for (const writer of Object.keys(agents)) {
      for (const size of sizes) {
        const data = crypto.randomBytes(size);
        const file = path.join(work, `src-${writer}-${size}`);
        fs.writeFileSync(file, data);
        const key = `interop/${writer}/${size}.bin`;
        await agents[writer].put(file, key);
        objects.push({ writer, key, data });
      }
    }
    for (const o of objects) {
      const st = await client.stat(o.key);
      assert.equal(st.size, o.data.length, `${o.key}: size`);
      assert.equal(st.checksum, crc32c(o.data), `${o.key}: the sidecar's CRC-32C of what ${o.writer} put`);
      for (const reader of Object.keys(agents)) {
        const out = path.join(work, `out-${reader}-${path.basename(o.key)}-${o.writer}`);
        await agents[reader].get(o.key, out);
        const back = fs.readFileSync(out);
        assert.ok(back.equals(o.data), `${o.key} put by ${o.writer}, read by ${reader}: ${back.length} bytes, want ${o.data.length}, equal: false`);
        fs.rmSync(out);
      }
    }
    const want = objects.map((o) => o.key).sort((a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
    for (const lister of Object.keys(agents)) assert.deepEqual(await agents[lister].ls('interop'), want, `${lister} lists every key`);
  });
});
