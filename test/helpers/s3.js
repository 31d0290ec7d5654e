// The S3-protocol test server for the JS store tests: moto's server mode, from the venv that
// `npm run setup:s3` (scripts/install-s3-server.sh) installs into .venv-s3/, started through
// the store crate's launcher (sidecar/store/tests/support/s3_server.py). moto accepts unsigned
// requests, so the tests talk to it directly with plain HTTP for what the agent cannot do:
// creating the bucket, listing multipart uploads, reading and tampering with raw objects.
//
// Availability: without the venv, `s3Available()` is false; the S3 tests then skip, unless
// SHMPIPE_REQUIRE_S3=1 (set by `npm run test:js`), which makes them fail instead.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { root } = require('./paths');

const venv = process.env.SHMPIPE_S3_VENV || path.join(root, '.venv-s3');
const python = path.join(venv, 'bin', 'python');
const launcher = path.join(root, 'sidecar', 'store', 'tests', 'support', 's3_server.py');

function s3Available() {
  return fs.existsSync(python) && fs.existsSync(launcher);
}

const s3Required = () => process.env.SHMPIPE_REQUIRE_S3 === '1';

// moto treats requests without credentials as anonymous (objects are then forbidden), but
// does not verify signatures: any SigV4-shaped Authorization header will do.
const AUTH = 'AWS4-HMAC-SHA256 Credential=shmpipe-test/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0';

/** Plain HTTP to moto; resolves with { status, body: Buffer }. */
function request(port, method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const headers = { authorization: AUTH, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...(body ? { 'content-length': body.length } : {}) };
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Starts moto on `port` (0: a free one). Resolves with a handle: `port`, `kill()` (SIGKILL, for
 * mid-upload failures), `stop()`, and helpers for the bucket.
 */
function startS3(port = 0) {
  return new Promise((resolve, reject) => {
    const proc = spawn(python, [launcher, '--port', String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const fail = (why) => {
      proc.kill('SIGKILL');
      reject(new Error(`moto did not start (${why}): ${err.slice(-2000)}`));
    };
    const timer = setTimeout(() => fail('no READY within 60 s'), 60_000);
    proc.stderr.on('data', (d) => {
      err = (err + d).slice(-8192);
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      if (!out.includes('READY')) fail(`exited with ${code}`);
    });
    const exited = new Promise((r) => proc.once('exit', r));
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /READY (\d+)/.exec(out);
      if (m === null) return;
      clearTimeout(timer);
      const p = Number(m[1]);
      resolve({
        port: p,
        endpoint: `http://127.0.0.1:${p}`,
        proc,
        async kill() {
          proc.kill('SIGKILL');
          await exited;
        },
        async stop() {
          proc.stdin.end(); // the launcher serves until its stdin closes
          const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(t);
        },
        async createBucket(bucket) {
          const r = await request(p, 'PUT', `/${bucket}`);
          if (r.status !== 200) throw new Error(`create bucket ${bucket}: HTTP ${r.status} ${r.body}`);
        },
        /** Keys of the incomplete multipart uploads in `bucket` (ListMultipartUploads). */
        async multipartUploads(bucket) {
          const r = await request(p, 'GET', `/${bucket}?uploads`);
          if (r.status !== 200) throw new Error(`list uploads: HTTP ${r.status} ${r.body}`);
          return [...r.body.toString('utf8').matchAll(/<Upload>[\s\S]*?<Key>([^<]*)<\/Key>[\s\S]*?<\/Upload>/g)].map((m) => m[1]);
        },
        /** Every key in `bucket` (ListObjectsV2, one page). */
        async keys(bucket) {
          const r = await request(p, 'GET', `/${bucket}?list-type=2`);
          if (r.status !== 200) throw new Error(`list objects: HTTP ${r.status} ${r.body}`);
          return [...r.body.toString('utf8').matchAll(/<Contents>[\s\S]*?<Key>([^<]*)<\/Key>/g)].map((m) => m[1]);
        },
        async getRaw(bucket, key) {
          const r = await request(p, 'GET', `/${bucket}/${key}`);
          if (r.status !== 200) throw new Error(`get ${key}: HTTP ${r.status}`);
          return r.body;
        },
        async putRaw(bucket, key, body) {
          const r = await request(p, 'PUT', `/${bucket}/${key}`, body);
          if (r.status !== 200) throw new Error(`put ${key}: HTTP ${r.status} ${r.body}`);
        },
      });
    });
  });
}

/** The sidecar environment for a store in moto's `bucket` under `prefix`. */
function s3Env(s3, bucket, prefix, extra = {}) {
  return {
    SHMPIPE_STORE: `s3://${bucket}/${prefix}`,
    SHMPIPE_S3_ENDPOINT: s3.endpoint,
    SHMPIPE_S3_ALLOW_HTTP: 'true',
    SHMPIPE_S3_PATH_STYLE: 'true',
    SHMPIPE_S3_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'shmpipe-test',
    AWS_SECRET_ACCESS_KEY: 'shmpipe-test-secret',
    ...extra,
  };
}

module.exports = { s3Available, s3Required, startS3, s3Env };
