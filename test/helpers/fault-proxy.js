// A fault-injecting HTTP proxy for the S3 tests: it sits between the sidecar (its S3 endpoint)
// and moto, forwards every request, and injects the faults a test asks for — an HTTP status
// with an S3 error document (500 InternalError, 503 SlowDown, 429 SlowDown, …), a connection
// reset before the request reaches the server or after the server handled it (the response
// lost), a stall (no answer until the client gives up), or a response body cut off after some
// bytes — at a chosen rate, for requests that match. `down()` refuses every connection (the
// store unreachable) and `up()` comes back on the same port.
//
// Why our own rather than a package: the tests need deterministic rates (a seeded generator),
// a cap on how many times one request may be hit (so "within the retry budget" holds every
// run, not with high probability), mid-body truncation of the server's response, and counters
// of what was injected to assert on; that is ~200 lines over node:http. (Toxiproxy is not on
// the package registries; mockttp's passthrough rules cannot cut a forwarded body at a byte.)
'use strict';

const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
// The perf scripts' seeded generator (mulberry32): a test's faults are the same on every run.
const { prng } = require(path.join(__dirname, '..', '..', 'perf', 'lib', 'prng'));

const s3Error = (code, message) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>fault-proxy</RequestId></Error>`;

/**
 * A fault rule.
 * @typedef {object} Rule
 * @property {'status'|'reset'|'reset-after'|'stall'|'truncate'} fault
 *   status: answer `status` with an S3 error document `code` (the server never sees the request);
 *   reset: RST the client's connection once the request arrived (never forwarded);
 *   reset-after: forward, let the server handle it, then RST instead of the response;
 *   stall: never answer (the client times out);
 *   truncate: forward, relay the headers and `bytes` bytes of a 2xx body (default: half), then
 *     RST (an error answer or an empty body passes whole).
 * @property {number} [status]
 * @property {string} [code]
 * @property {number} [bytes]
 * @property {number} [minBytes] truncate: only bodies of at least this many bytes
 * @property {string} [method] only requests with this method
 * @property {RegExp} [path] only requests whose path (with the query) matches
 * @property {number} [rate] probability per matching request (default 1)
 * @property {number} [after] let this many matching requests through first
 * @property {number} [times] hit at most this many requests in all
 */

/**
 * Starts the proxy on a free port in front of `target` ({host, port}).
 * @returns {Promise<FaultProxy>}
 */
async function startFaultProxy(target, { seed = 1 } = {}) {
  const random = prng(seed);
  let rules = [];
  let maxPerRequest = Infinity;
  const perRequest = new Map(); // request identity -> times hit, by any rule
  const perRule = new Map(); // rule -> times hit
  const seen = new Map(); // rule -> matching requests seen
  const sockets = new Set();
  const stats = { requests: 0, forwarded: 0, faults: {}, byRequest: [] };
  const upstream = new http.Agent({ keepAlive: true, maxSockets: 64 });

  const pick = (req) => {
    // Not the Range: a GET resumed after a cut body counts as the same request.
    const id = `${req.method} ${req.url}`;
    if ((perRequest.get(id) ?? 0) >= maxPerRequest) return null;
    for (const rule of rules) {
      if (rule.method && rule.method !== req.method) continue;
      if (rule.path && !rule.path.test(req.url)) continue;
      const n = (seen.get(rule) ?? 0) + 1;
      seen.set(rule, n);
      if (n <= (rule.after ?? 0)) continue;
      if (rule.times !== undefined && (perRule.get(rule) ?? 0) >= rule.times) continue;
      if (random() >= (rule.rate ?? 1)) continue;
      perRequest.set(id, (perRequest.get(id) ?? 0) + 1);
      perRule.set(rule, (perRule.get(rule) ?? 0) + 1);
      const name = rule.fault === 'status' ? `status ${rule.status}` : rule.fault;
      stats.faults[name] = (stats.faults[name] ?? 0) + 1;
      return rule;
    }
    return null;
  };

  const forward = (req, res, onResponse) => {
    stats.forwarded++;
    const up = http.request({ host: target.host, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: upstream }, onResponse);
    up.on('error', () => req.socket.resetAndDestroy());
    req.pipe(up);
  };

  const server = http.createServer((req, res) => {
    stats.requests++;
    const rule = pick(req);
    stats.byRequest.push({ method: req.method, url: req.url, fault: rule ? rule.fault : null });
    if (stats.byRequest.length > 100_000) stats.byRequest.splice(0, 50_000);
    if (rule === null) {
      forward(req, res, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      return;
    }
    switch (rule.fault) {
      case 'status': {
        req.resume(); // read the request body whole, as a server would, then refuse
        req.on('end', () => {
          const body = s3Error(rule.code ?? 'InternalError', 'injected by the test fault proxy');
          res.writeHead(rule.status ?? 500, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        });
        return;
      }
      case 'reset':
        req.resume();
        req.on('end', () => req.socket.resetAndDestroy());
        return;
      case 'reset-after':
        forward(req, res, (r) => {
          r.resume();
          r.on('end', () => req.socket.resetAndDestroy());
        });
        return;
      case 'stall':
        req.resume(); // and never answer; the client's timeout closes the socket
        return;
      case 'truncate':
        forward(req, res, (r) => {
          const total = Number(r.headers['content-length'] ?? 0);
          if (r.statusCode >= 300 || total === 0 || total < (rule.minBytes ?? 0)) {
            // Only a successful body is cut (an error answer passes whole): the fault is a
            // download that breaks, not a refusal.
            res.writeHead(r.statusCode, r.headers);
            r.pipe(res);
            return;
          }
          const keep = Math.max(0, Math.min(rule.bytes ?? Math.floor(total / 2), total - 1));
          res.writeHead(r.statusCode, r.headers);
          res.flushHeaders(); // the status and headers arrive whole, then the body breaks
          let sent = 0;
          r.on('data', (d) => {
            if (sent >= keep) return;
            const part = d.subarray(0, keep - sent);
            sent += part.length;
            res.write(part);
          });
          r.on('end', () => req.socket.resetAndDestroy());
        });
        return;
      default:
        throw new Error(`unknown fault ${rule.fault}`);
    }
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_, s) => s.destroy());

  const listen = (port) =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve(server.address().port);
      });
    });
  const port = await listen(0);

  /** @typedef {ReturnType<typeof api>} FaultProxy */
  const api = () => ({
    port,
    endpoint: `http://127.0.0.1:${port}`,
    stats,
    /**
     * Replaces the rules (the first that matches and fires wins; [] forwards everything).
     * `maxPerRequest`: hit one request (method + path + query) at most this many
     * times by any rule — with fewer than the client's retries, every request gets through
     * in the end, on every run.
     */
    set(newRules, options = {}) {
      rules = newRules;
      maxPerRequest = options.maxPerRequest ?? Infinity;
      perRequest.clear();
      perRule.clear();
      seen.clear();
    },
    /** Counters since the last call, and zeroes them. */
    take() {
      const s = { requests: stats.requests, forwarded: stats.forwarded, faults: { ...stats.faults }, byRequest: stats.byRequest.splice(0) };
      stats.requests = 0;
      stats.forwarded = 0;
      stats.faults = {};
      return s;
    },
    /** Unreachable: stops listening (connections are refused) and resets every open connection. */
    async down() {
      await new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.resetAndDestroy();
      });
    },
    /** Reachable again, on the same port. */
    async up() {
      await listen(port);
    },
    async close() {
      for (const s of sockets) s.destroy();
      upstream.destroy();
      if (server.listening) await new Promise((resolve) => server.close(() => resolve()));
    },
  });
  return api();
}

/** True when something accepts connections on 127.0.0.1:`port`. */
function reachable(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

module.exports = { startFaultProxy, reachable };
