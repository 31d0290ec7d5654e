#!/usr/bin/env node
// Builds ts-lib/build/shmpipe_addon.node with a plain g++ command line. No node-gyp: it would
// download Node's headers, and this build must need nothing from the network. The Node-API
// headers come from the npm package node-api-headers, the C++ wrapper from node-addon-api; the
// libuv symbols the addon uses are declared in the source (see its comment).
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
// shmpipe_addon.cc (transport) and fsops.cc (the *at() file-system calls of restore and backup).
const sources = ['shmpipe_addon.cc', 'fsops.cc'].map((f) => path.join(root, 'ts-lib', 'addon', f));
const outDir = path.join(root, 'ts-lib', 'build');
const out = path.join(outDir, 'shmpipe_addon.node');

const apiHeaders = path.dirname(require.resolve('node-api-headers/package.json', { paths: [root] }));
const addonApi = path.dirname(require.resolve('node-addon-api/package.json', { paths: [root] }));

fs.mkdirSync(outDir, { recursive: true });
const cxx = process.env.CXX || 'g++';
const args = [
  '-O2', '-shared', '-fPIC', '-std=c++17',
  '-Wall', '-Wextra', '-Wno-unused-parameter',
  '-fvisibility=hidden',
  '-DNAPI_VERSION=8', '-DNAPI_DISABLE_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED',
  '-I', path.join(apiHeaders, 'include'),
  '-I', addonApi,
  ...sources,
  // Node-API and libuv symbols stay undefined here and resolve against the node binary at load.
  '-o', out,
];
console.log(`${cxx} ${args.join(' ')}`);
execFileSync(cxx, args, { stdio: 'inherit' });
console.log(`built ${path.relative(root, out)}`);
