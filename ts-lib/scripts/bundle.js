#!/usr/bin/env node
// Bundles ts-lib/src/index.ts into ts-lib/dist/index.js (CommonJS, Node 20, zod included). The
// addon is not bundled: src/native.ts loads it at run time from ../build/shmpipe_addon.node
// relative to the bundle. Type checking is `tsc -p ts-lib --noEmit` (see package.json).
'use strict';

const path = require('node:path');
const esbuild = require('esbuild');

const root = path.resolve(__dirname, '..');
esbuild
  .build({
    entryPoints: [path.join(root, 'src', 'index.ts')],
    outfile: path.join(root, 'dist', 'index.js'),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    sourcemap: true,
    logLevel: 'warning',
  })
  .then(() => console.log('bundled ts-lib/dist/index.js'))
  .catch(() => process.exit(1));
