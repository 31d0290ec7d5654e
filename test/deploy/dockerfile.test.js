'use strict';
// The Dockerfile: targets, users, entrypoints, slim final stages without build tools, and
// COPY --from sources that the project's build really produces. No Docker engine is used.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');
const { checks, BUILD_OUTPUTS, stage, ins } = require('./dockerfile-checks');

const DOCKERFILE = path.join(h.ROOT, 'Dockerfile');

describe('Dockerfile', function () {
  const text = fs.readFileSync(DOCKERFILE, 'utf8');
  const df = h.parseDockerfileText(text);

  for (const [name, fn] of Object.entries(checks)) {
    it(name, function () {
      fn(df);
    });
  }

  describe('build context', function () {
    const isIgnored = h.dockerignoreMatcher();

    it('.dockerignore keeps build outputs, dependencies and VCS data out of the context', function () {
      for (const p of ['target/release/shmpipe-sidecar', 'node_modules/zod/package.json', '.git/HEAD', 'ts-lib/dist/cli.js', 'ts-lib/build/shmpipe_addon.node', 'sidecar/target/x']) {
        assert.ok(isIgnored(p), `${p} is not excluded by .dockerignore`);
      }
    });

    it('every COPY from the context exists in the repository and is not ignored', function () {
      for (const s of df.stages) {
        for (const c of ins(s, 'COPY').concat(ins(s, 'ADD'))) {
          if (c.from) continue;
          for (const src of c.sources) {
            assert.ok(!/^https?:/.test(src), `line ${c.line}: no remote ADD`);
            const rel = path.posix.normalize(src).replace(/^\/+/, '');
            assert.ok(fs.existsSync(path.join(h.ROOT, rel)), `line ${c.line}: COPY source ${src} does not exist in the repository`);
            assert.ok(!isIgnored(rel), `line ${c.line}: COPY source ${src} is excluded by .dockerignore`);
          }
        }
      }
    });

    it('the Rust builder gets every workspace member', function () {
      const cargo = path.join(h.ROOT, 'Cargo.toml');
      if (!fs.existsSync(cargo)) this.skip(); // the Rust workspace is not there yet
      const m = /^\s*members\s*=\s*\[([^\]]*)\]/m.exec(fs.readFileSync(cargo, 'utf8'));
      assert.ok(m, 'Cargo.toml has no workspace members');
      const members = [...m[1].matchAll(/"([^"]+)"/g)].map((x) => x[1]);
      const builder = df.stages.find((s) => /^rust:/.test(s.base));
      const copied = ins(builder, 'COPY').filter((c) => !c.from).flatMap((c) => c.sources.map((x) => path.posix.normalize(x)));
      const isCopied = (rel) => copied.some((c) => rel === c || rel.startsWith(c + '/'));
      for (const f of ['Cargo.toml', 'Cargo.lock', ...members]) {
        assert.ok(isCopied(f), `the Rust builder does not COPY ${f}`);
      }
      // Path dependencies of the members must be in the image too.
      for (const member of members) {
        const toml = path.join(h.ROOT, member, 'Cargo.toml');
        if (!fs.existsSync(toml)) continue;
        for (const [, dep] of fs.readFileSync(toml, 'utf8').matchAll(/\bpath\s*=\s*"([^"]+)"/g)) {
          const rel = path.posix.normalize(path.posix.join(member, dep));
          assert.ok(
            isCopied(rel),
            `${member} depends on path ${rel}, which the Rust builder does not COPY`,
          );
        }
      }
      const sidecarToml = path.join(h.ROOT, 'sidecar', 'Cargo.toml');
      if (fs.existsSync(sidecarToml)) {
        const t = fs.readFileSync(sidecarToml, 'utf8');
        assert.match(t, /^\s*name\s*=\s*"shmpipe-sidecar"/m, 'sidecar/Cargo.toml package is not shmpipe-sidecar');
        const bins = [...t.matchAll(/\[\[bin\]\][^[]*?name\s*=\s*"([^"]+)"/g)].map((x) => x[1]);
        if (bins.length) assert.ok(bins.includes('shmpipe-sidecar'), 'no binary named shmpipe-sidecar');
      }
    });

    it('the Node builder runs npm scripts that exist and need no cargo', function () {
      const pkgFile = path.join(h.ROOT, 'package.json');
      if (!fs.existsSync(pkgFile)) this.skip(); // package.json is not there yet
      const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
      const scripts = pkg.scripts || {};
      const expand = (name, seen = new Set()) => {
        assert.ok(scripts[name], `npm script ${name} does not exist`);
        if (seen.has(name)) return '';
        seen.add(name);
        return scripts[name].replace(/\bnpm run ([\w:.-]+)/g, (_, n) => expand(n, seen));
      };
      const builder = df.stages.find((s) => /^node:/.test(s.base) && !/slim/.test(s.base));
      const runs = ins(builder, 'RUN').map((r) => r.raw).join(' && ');
      const called = [...runs.matchAll(/\bnpm run ([\w:.-]+)/g)].map((x) => x[1]);
      assert.ok(called.length > 0, 'the Node builder runs no npm script');
      for (const name of called) {
        assert.doesNotMatch(expand(name), /\bcargo\b/, `npm run ${name} needs cargo, which the Node builder does not have`);
      }
      if (pkg.main) assert.equal(path.posix.normalize(pkg.main), 'ts-lib/dist/index.js');
      if (pkg.bin) {
        const bins = typeof pkg.bin === 'string' ? [pkg.bin] : Object.values(pkg.bin);
        assert.ok(bins.map((b) => path.posix.normalize(b)).includes('ts-lib/dist/cli.js'), 'package.json bin is not ts-lib/dist/cli.js');
      }
      assert.ok(fs.existsSync(path.join(h.ROOT, 'package-lock.json')), 'npm ci needs package-lock.json');
    });
  });

  describe('build outputs on disk (present only after npm run build / cargo build)', function () {
    for (const [rel, spec] of Object.entries(BUILD_OUTPUTS)) {
      it(`${rel} (${spec.by})`, function () {
        const abs = path.join(h.ROOT, rel);
        if (!fs.existsSync(abs)) {
          this.skip(); // not built yet: the path list itself is checked against BUILD_OUTPUTS above
        }
        const st = fs.statSync(abs);
        if (spec.kind === 'dir') {
          assert.ok(st.isDirectory(), `${rel} is not a directory`);
          for (const f of spec.contains || []) assert.ok(fs.existsSync(path.join(abs, f)), `${rel}/${f} is missing`);
        } else {
          assert.ok(st.isFile(), `${rel} is not a file`);
        }
        if (/shmpipe-sidecar$|\.node$/.test(rel)) {
          const fd = fs.openSync(abs, 'r');
          const magic = Buffer.alloc(4);
          fs.readSync(fd, magic, 0, 4, 0);
          fs.closeSync(fd);
          assert.deepEqual([...magic], [0x7f, 0x45, 0x4c, 0x46], `${rel} is not an ELF file`);
        }
        if (rel === 'target/release/shmpipe-sidecar') assert.ok(st.mode & 0o111, `${rel} is not executable`);
      });
    }
  });

  describe('the checks can fail', function () {
    const broken = {
      'has the targets sidecar and agent': [/AS agent$/m, 'AS agent2'],
      'the Rust builder runs cargo build --release --locked -p shmpipe-sidecar': [/--locked /, ''],
      'the Node builder is node:20-bookworm and runs npm ci': [/npm ci/, 'npm install'],
      "final stages use slim bases of the builders' Debian release": [/FROM debian:bookworm-slim/, 'FROM debian:bookworm'],
      'final stages run as USER 10001:10001 with the expected ENTRYPOINT': [/USER 10001:10001\nENTRYPOINT \["node"/, 'USER 1000:1000\nENTRYPOINT ["node"'],
      'final stages contain no build tools': [/RUN groupadd --system --gid 10001 shmpipe \\\n && useradd/, 'RUN apt-get update && apt-get install -y --no-install-recommends build-essential && groupadd --system --gid 10001 shmpipe \\\n && useradd'],
      'every COPY --from source is a documented build output, and each target copies what it needs': [/\/src\/ts-lib\/dist /, '/src/ts-lib/out '],
      'image defaults: socket and segments in /run/shmpipe, admin port exposed on a non-loopback address': [/SHMPIPE_ADMIN_ADDR=0\.0\.0\.0:9464/, 'SHMPIPE_ADMIN_ADDR=127.0.0.1:9464'],
    };
    for (const [name, [re, replacement]] of Object.entries(broken)) {
      it(`"${name}" fails on a broken Dockerfile`, function () {
        assert.ok(checks[name], `no check named ${name}`);
        assert.match(text, re, 'the mutation no longer applies to the Dockerfile; update the test');
        const bad = h.parseDockerfileText(text.replace(re, replacement));
        assert.throws(() => checks[name](bad), assert.AssertionError);
      });
    }
    it('the stage lookup fails for a missing stage', function () {
      assert.throws(() => stage(df, 'nope'), assert.AssertionError);
    });
  });
});
