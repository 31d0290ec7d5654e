'use strict';
// Checks of the parsed Dockerfile, as named functions (df) => void that throw AssertionError.
// dockerfile.test.js runs each on the real Dockerfile and against broken variants.

const assert = require('node:assert/strict');
const path = require('node:path');

// What the project's build produces, relative to the repository root (the builder's WORKDIR),
// and what each final image needs of it.
const BUILD_OUTPUTS = Object.freeze({
  'target/release/shmpipe-sidecar': { kind: 'file', by: 'cargo build --release -p shmpipe-sidecar' },
  'ts-lib/dist': { kind: 'dir', by: 'npm run build (build:ts)', contains: ['index.js', 'cli.js'] },
  'ts-lib/build/shmpipe_addon.node': { kind: 'file', by: 'npm run build (build:addon)' },
  'package.json': { kind: 'file', by: 'the repository' },
});
const NEEDS = Object.freeze({
  sidecar: ['target/release/shmpipe-sidecar'],
  agent: ['ts-lib/dist', 'ts-lib/build/shmpipe_addon.node', 'package.json'],
});
const ENTRYPOINTS = Object.freeze({
  sidecar: ['/usr/local/bin/shmpipe-sidecar'],
  agent: ['node', '--max-semi-space-size=2', '/app/ts-lib/dist/cli.js'],
});
const UID = 10001;
const ADMIN_PORT = 9464;

const BUILD_TOOLS = /\b(build-essential|gcc|g\+\+|cpp|clang|llvm|make|cmake|ninja(-build)?|cargo|rustc|rustup|libc6-dev|libc-dev|binutils|python3?-dev|node-gyp|autoconf|automake|libtool|pkg-config)\b/;
const SLIM_BASE = /^(debian:[^\s]*slim|node:[^\s]*-slim|gcr\.io\/distroless\/[^\s]+|scratch)$/;

function stage(df, name) {
  const s = df.stages.find((x) => x.name === name);
  assert.ok(s, `Dockerfile has no stage named ${name}`);
  return s;
}
const ins = (s, kw) => s.instructions.filter((i) => i.keyword === kw);
const last = (a) => a[a.length - 1];

function workdir(s) {
  let wd = '/';
  for (const i of ins(s, 'WORKDIR')) wd = path.posix.resolve(wd, i.args[0]);
  return wd;
}
function env(s) {
  const m = new Map();
  for (const i of ins(s, 'ENV')) for (const [k, v] of i.env) m.set(k, v);
  return m;
}

/** COPY --from=<stage> of a final stage, resolved: [{ builder, rel, dest }]. */
function builderCopies(df, s) {
  const out = [];
  for (const c of ins(s, 'COPY')) {
    if (!c.from) continue;
    const builder = df.stages.find((x) => x.name === c.from || String(x.index) === c.from);
    assert.ok(builder, `${s.name}: COPY --from=${c.from} is not a stage of this Dockerfile`);
    assert.ok(builder.index < s.index, `${s.name}: COPY --from=${c.from} refers to a later stage`);
    const wd = workdir(builder);
    for (const src of c.sources) {
      const abs = path.posix.resolve(wd, src);
      const rel = path.posix.relative(wd, abs);
      assert.ok(!rel.startsWith('..'), `${s.name}: COPY --from=${c.from} ${src} is outside the builder's WORKDIR ${wd}`);
      out.push({ builder, rel, dest: path.posix.resolve(workdir(s), c.dest), src, line: c.line });
    }
  }
  return out;
}

const checks = {
  'has the targets sidecar and agent'(df) {
    const names = df.stages.map((s) => s.name).filter(Boolean);
    assert.equal(new Set(names).size, names.length, 'duplicate stage names');
    stage(df, 'sidecar');
    stage(df, 'agent');
  },

  'the Rust builder runs cargo build --release --locked -p shmpipe-sidecar'(df) {
    const from = builderCopies(df, stage(df, 'sidecar')).find((c) => c.rel === 'target/release/shmpipe-sidecar');
    assert.ok(from, 'target sidecar does not copy target/release/shmpipe-sidecar from a builder');
    assert.match(from.builder.base, /^rust:/, 'the sidecar builder is not the official rust image');
    const runs = ins(from.builder, 'RUN').map((r) => r.raw).join('\n');
    assert.match(runs, /cargo build\b(?=[^\n]*--release)(?=[^\n]*--locked)(?=[^\n]*-p shmpipe-sidecar)/);
  },

  'the Node builder is node:20-bookworm and runs npm ci'(df) {
    const from = builderCopies(df, stage(df, 'agent')).find((c) => c.rel === 'ts-lib/dist');
    assert.ok(from, 'target agent does not copy ts-lib/dist from a builder');
    assert.match(from.builder.base, /^node:20(\.\d+)*-bookworm$/, 'the agent builder should be node:20-bookworm (it has g++)');
    const runs = ins(from.builder, 'RUN').map((r) => r.raw).join('\n');
    assert.match(runs, /\bnpm ci\b/);
    assert.match(runs, /\bnpm run build(:ts)?\b/);
  },

  'final stages use slim bases of the builders\' Debian release'(df) {
    for (const name of ['sidecar', 'agent']) {
      const s = stage(df, name);
      assert.match(s.base, SLIM_BASE, `${name}: base ${s.base} is not slim/distroless`);
      assert.ok(!df.stages.some((x) => x.name === s.base), `${name}: must not build on another stage`);
      for (const c of builderCopies(df, s)) {
        const rel = (b) => (/bookworm|debian12/.exec(b) || /bullseye|debian11/.exec(b) || /trixie|debian13/.exec(b) || [null])[0];
        const [a, b] = [rel(c.builder.base), rel(s.base)];
        if (a && b) assert.equal(a.replace('debian12', 'bookworm'), b.replace('debian12', 'bookworm'), `${name}: builder ${c.builder.base} and base ${s.base} differ in glibc`);
      }
    }
    const nodeMajor = (b) => (/^node:(\d+)/.exec(b) || [])[1];
    const agent = stage(df, 'agent');
    for (const c of builderCopies(df, agent)) {
      if (nodeMajor(c.builder.base)) assert.equal(nodeMajor(agent.base), nodeMajor(c.builder.base), 'the addon must run on the Node major it was built for');
    }
  },

  'final stages run as USER 10001:10001 with the expected ENTRYPOINT'(df) {
    for (const name of ['sidecar', 'agent']) {
      const s = stage(df, name);
      const user = last(ins(s, 'USER'));
      assert.ok(user, `${name}: no USER`);
      assert.equal(user.args[0], `${UID}:${UID}`, `${name}: USER must be ${UID}:${UID}`);
      const ep = last(ins(s, 'ENTRYPOINT'));
      assert.ok(ep, `${name}: no ENTRYPOINT`);
      assert.deepEqual(ep.json, ENTRYPOINTS[name], `${name}: ENTRYPOINT must be exec form ${JSON.stringify(ENTRYPOINTS[name])}`);
      const runs = ins(s, 'RUN');
      if (runs.length) assert.ok(last(runs).line < user.line, `${name}: RUN after USER`);
    }
  },

  'final stages contain no build tools'(df) {
    for (const name of ['sidecar', 'agent']) {
      const s = stage(df, name);
      for (const r of ins(s, 'RUN')) {
        const installs = r.raw.match(/\b(apt-get|apt|apk|dnf|yum|microdnf)\s+(-\S+\s+)*(install|add)\b[^&;|]*/g) || [];
        for (const i of installs) assert.doesNotMatch(i, BUILD_TOOLS, `${name}: installs build tools: ${i}`);
        assert.doesNotMatch(r.raw, /\b(npm (ci|install)|cargo |rustup |node-gyp)\b/, `${name}: builds in the final stage: ${r.raw}`);
      }
      for (const c of ins(s, 'COPY').concat(ins(s, 'ADD'))) {
        for (const src of c.sources || []) {
          assert.doesNotMatch(src, /cargo|rustup|node_modules|\/usr\/(local\/)?(bin|lib)\/(gcc|g\+\+|cc|clang)/, `${name}: copies a toolchain: ${src}`);
        }
      }
    }
  },

  'every COPY --from source is a documented build output, and each target copies what it needs'(df) {
    for (const name of ['sidecar', 'agent']) {
      const s = stage(df, name);
      const copies = builderCopies(df, s);
      for (const c of copies) {
        assert.ok(Object.prototype.hasOwnProperty.call(BUILD_OUTPUTS, c.rel), `${name}: line ${c.line}: COPY --from source ${c.src} (${c.rel}) is not a build output`);
      }
      for (const need of NEEDS[name]) assert.ok(copies.some((c) => c.rel === need), `${name}: does not copy ${need}`);
    }
    const sc = builderCopies(df, stage(df, 'sidecar')).find((c) => c.rel === 'target/release/shmpipe-sidecar');
    assert.equal(sc.dest, ENTRYPOINTS.sidecar[0], 'the sidecar binary is not copied to the ENTRYPOINT path');
    const agent = builderCopies(df, stage(df, 'agent'));
    const dest = (rel) => agent.find((c) => c.rel === rel).dest;
    const dist = dest('ts-lib/dist');
    assert.equal(path.posix.join(dist, 'cli.js'), ENTRYPOINTS.agent.at(-1), 'ENTRYPOINT cli.js is not inside the copied ts-lib/dist');
    // The bundle finds the addon and package.json relative to itself: keep the layout.
    const root = path.posix.dirname(path.posix.dirname(dist));
    assert.equal(dest('ts-lib/build/shmpipe_addon.node'), path.posix.join(root, 'ts-lib/build/shmpipe_addon.node'));
    assert.equal(dest('package.json'), path.posix.join(root, 'package.json'));
  },

  'image defaults: socket and segments in /run/shmpipe, admin port exposed on a non-loopback address'(df) {
    const s = stage(df, 'sidecar');
    const e = env(s);
    assert.equal(e.get('SHMPIPE_SEGMENT_DIR'), '/run/shmpipe');
    assert.equal(path.posix.dirname(e.get('SHMPIPE_SOCKET') || ''), '/run/shmpipe');
    const addr = e.get('SHMPIPE_ADMIN_ADDR') || '127.0.0.1:9464';
    const m = /^(.*):(\d+)$/.exec(addr);
    assert.ok(m && ['0.0.0.0', '[::]', ''].includes(m[1]), `SHMPIPE_ADMIN_ADDR ${addr}: EXPOSE is useless on loopback`);
    const exposed = ins(s, 'EXPOSE').flatMap((x) => x.args).map((p) => Number(String(p).split('/')[0]));
    assert.ok(exposed.includes(Number(m[2])), `admin port ${m[2]} is not EXPOSEd`);
    assert.equal(Number(m[2]), ADMIN_PORT);
    assert.equal(env(stage(df, 'agent')).get('SHMPIPE_SIDECAR_SOCKET'), e.get('SHMPIPE_SOCKET'), 'agent and sidecar images disagree on the socket path');
  },
};

module.exports = { checks, BUILD_OUTPUTS, NEEDS, ENTRYPOINTS, builderCopies, stage, ins };
