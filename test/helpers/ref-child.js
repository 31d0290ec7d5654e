// A process for test/client-ref.test.js: connects, does `mode`, and ends its script; the test
// watches whether and when the process exits on its own. argv: socketPath mode. Lines on stdout
// say what happened.
'use strict';

const { bundle } = require('./paths');
const { connect } = require(bundle);

const [socketPath, mode] = [process.argv[2], process.argv[3]];
(async () => {
  const client = await connect({ socketPath, slotCount: 4, slotSize: 65536, unresponsiveMs: mode === 'unref-pending-nowatchdog' ? 0 : 5000 });
  await client.nop();
  if (mode === 'open') {
    // default: an open client keeps the process alive, like a net.Socket
  } else if (mode === 'unref') {
    client.unref();
  } else if (mode === 'unref-ref') {
    client.unref();
    client.ref();
  } else if (mode === 'unref-pending' || mode === 'unref-pending-nowatchdog') {
    client.unref();
    // Only the pending call keeps the process alive now.
    client.delay(1_500_000).then((us) => console.log(`delay ${us}`));
  } else if (mode === 'unref-alloc') {
    client.unref();
    const held = [];
    while (held.length < client.layout.grantWindow) held.push(await client.alloc());
    // Waits for a grant, which comes once a held slot is released, 1 s from now.
    client.alloc().then((s) => console.log(`alloc ${s.id}`));
    setTimeout(() => held[0].release(), 1000).unref();
  }
  console.log('ready');
})().catch((e) => {
  console.log(`error ${e.code} ${e.message}`);
  process.exitCode = 1;
});
