// Where the tests find what they exercise: the built public bundle and the built sidecar binary.
'use strict';

const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
module.exports = {
  root,
  bundle: path.join(root, 'ts-lib', 'dist', 'index.js'),
  sidecarBin: path.join(root, 'target', 'release', 'shmpipe-sidecar'),
  vectors: path.join(root, 'shm-protocol', 'vectors', 'vectors.json'),
  child: path.join(__dirname, 'child.js'),
};
