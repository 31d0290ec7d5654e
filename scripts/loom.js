#!/usr/bin/env node
// Runs the loom models of the shm-protocol rings in their own target dir (RUSTFLAGS would
// otherwise invalidate the main build). LOOM_MAX_PREEMPTIONS bounds the search so CI stays
// within minutes; raise it locally for a deeper check.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const root = path.resolve(__dirname, '..');
const env = {
  ...process.env,
  RUSTFLAGS: `${process.env.RUSTFLAGS || ''} --cfg loom`.trim(),
  CARGO_TARGET_DIR: path.join(root, 'target', 'loom'),
  LOOM_MAX_PREEMPTIONS: process.env.LOOM_MAX_PREEMPTIONS || '3',
};
const r = spawnSync('cargo', ['test', '--locked', '--release', '-p', 'shm-protocol', '--test', 'loom'], { cwd: root, env, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
