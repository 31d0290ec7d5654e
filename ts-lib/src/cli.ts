/** Entry point of the `shmpipe` bin (bundled to dist/cli.js). */

import { main } from './cli/main';

// A reader that goes away (`shmpipe backup --json … | head`) must not crash a running command
// (and leave a backup half done): its output is dropped, the work goes on.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`shmpipe: ${String(e)}\n`);
    process.exitCode = 1;
  },
);
