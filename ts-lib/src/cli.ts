/** Entry point of the `shmpipe` bin (bundled to dist/cli.js). */

import { main } from './cli/main';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`shmpipe: ${String(e)}\n`);
    process.exitCode = 1;
  },
);
