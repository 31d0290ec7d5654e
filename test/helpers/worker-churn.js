// A process for test/client-worker.test.js: opens a client in a worker_thread `count` times,
// one worker after another, each ending in the way `mode` says, then reports what this process
// holds (fds, segment mappings, libuv handles) before and after as one JSON line on stdout, and
// returns without process.exit(): the test also checks that it then exits on its own.
// argv: socketPath mode count; mode `all` takes the modes below in turn. Modes:
//   close      the worker closes its client, then ends by itself
//   unref      the worker unref()s its open client and ends by itself (no close)
//   terminate  the main thread terminates the worker while a call of its open client is pending
//   exit       the worker calls process.exit() (which ends only the worker) with its client open
'use strict';

const fs = require('node:fs');
const { Worker, isMainThread, workerData, parentPort } = require('node:worker_threads');
const { bundle } = require('./paths');

const fds = () => fs.readdirSync('/proc/self/fd').length;
const segments = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => /shmpipe/.test(l)).length;
const handles = () => process.getActiveResourcesInfo().length;

if (isMainThread) {
  const [socketPath, mode, count] = [process.argv[2], process.argv[3], Number(process.argv[4])];
  (async () => {
    const MODES = ['close', 'unref', 'terminate', 'exit'];
    let n = 0;
    const once = () =>
      new Promise((resolve, reject) => {
        const m = mode === 'all' ? MODES[n++ % MODES.length] : mode;
        const w = new Worker(__filename, { workerData: { socketPath, mode: m } });
        w.on('message', (m) => {
          if (m === 'pending') void w.terminate();
        });
        w.once('error', reject);
        w.once('exit', resolve);
      });
    // The first round loads the addon and its libraries: the baseline comes after it.
    const first = mode === 'all' ? MODES.length : 1;
    for (let i = 0; i < first; i++) await once();
    const before = { fds: fds(), segments: segments(), handles: handles() };
    for (let i = first; i < count; i++) await once();
    const after = { fds: fds(), segments: segments(), handles: handles() };
    process.stdout.write(`${JSON.stringify({ before, after })}\n`);
  })().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
} else {
  const { connect } = require(bundle);
  const { socketPath, mode } = workerData;
  (async () => {
    const client = await connect({ socketPath, slotCount: 4, slotSize: 65536, sqCapacity: 16, cqCapacity: 16 });
    const slot = await client.alloc();
    slot.buffer.write('worker');
    await client.echo(slot, 6);
    if (mode === 'close') {
      await client.close();
    } else if (mode === 'unref') {
      client.unref();
    } else if (mode === 'terminate') {
      client.delay(30_000_000).catch(() => {});
      parentPort.postMessage('pending');
    } else if (mode === 'exit') {
      process.exit(0);
    }
  })();
}
