#!/usr/bin/env node
// Bundles ts-lib/src/index.ts into ts-lib/dist/index.js, the CLI (src/cli.ts) into
// ts-lib/dist/cli.js, and the backup agent's building blocks (src/backup/index.ts, internal:
// for the tests) into ts-lib/dist/backup.js (CommonJS, Node 20, zod included). The
// addon is not bundled: src/native.ts loads it at run time from ../build/shmpipe_addon.node
// relative to the bundle. Type checking is `tsc -p ts-lib --noEmit` (see package.json).
'use strict';

const path = require('node:path');
const esbuild = require('esbuild');

const root = path.resolve(__dirname, '..');
const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', sourcemap: true, logLevel: 'warning' };
Promise.all([
  esbuild.build({ ...common, entryPoints: [path.join(root, 'src', 'index.ts')], outfile: path.join(root, 'dist', 'index.js') }),
  esbuild.build({ ...common, entryPoints: [path.join(root, 'src', 'backup', 'index.ts')], outfile: path.join(root, 'dist', 'backup.js') }),
  // The CLI is its own bundle (it includes the client), with a shebang so it runs as a bin.
  esbuild.build({
    ...common,
    entryPoints: [path.join(root, 'src', 'cli.ts')],
    outfile: path.join(root, 'dist', 'cli.js'),
    // The agent's working set is small and short-lived; V8's default 16 MiB semi-spaces cost
    // ~15 MB of RSS for nothing (measured with the backup CLI). Linux env(1) takes -S.
    banner: { js: '#!/usr/bin/env -S node --max-semi-space-size=2' },
  }),
])
  .then(() => {
    require('node:fs').chmodSync(path.join(root, 'dist', 'cli.js'), 0o755);
    console.log('bundled ts-lib/dist/index.js, ts-lib/dist/cli.js and ts-lib/dist/backup.js');
  })
  .catch(() => process.exit(1));
