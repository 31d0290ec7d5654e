'use strict';
// Shared helpers for the test/deploy suites: loading the manifests, Kubernetes schema
// validation, quantity parsing, the shared-memory size arithmetic, and Dockerfile parsing.
// No network, no cluster, no Docker engine.

const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const K8S_DIR = path.join(ROOT, 'deploy', 'kubernetes');

// --------------------------------------------------------------------------------------------
// Manifests

/** Every YAML document under deploy/kubernetes: [{ file, index, doc }]. Throws on YAML errors. */
function loadManifests(dir = K8S_DIR) {
  const YAML = require('yaml');
  const out = [];
  const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  for (const file of files) {
    const text = fs.readFileSync(path.join(dir, file), 'utf8');
    const docs = YAML.parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true });
    docs.forEach((d, index) => {
      if (d.errors.length) {
        throw new Error(`${file} document ${index}: ${d.errors.map((e) => e.message).join('; ')}`);
      }
      const doc = d.toJS({ maxAliasCount: 0 });
      if (doc !== null && doc !== undefined) out.push({ file, index, doc });
    });
  }
  return out;
}

/** Kubernetes API objects only (kustomize's Kustomization is a config file, not an object). */
function isKubernetesObject(doc) {
  return !(doc.kind === 'Kustomization' && /^kustomize\.config\.k8s\.io\//.test(doc.apiVersion || ''));
}

/** The pod spec inside a workload, or null. */
function podSpecOf(doc) {
  switch (doc.kind) {
    case 'Pod':
      return doc.spec || null;
    case 'Deployment':
    case 'StatefulSet':
    case 'DaemonSet':
    case 'ReplicaSet':
    case 'Job':
      return (doc.spec && doc.spec.template && doc.spec.template.spec) || null;
    case 'CronJob':
      return doc.spec?.jobTemplate?.spec?.template?.spec || null;
    default:
      return null;
  }
}

/** Metadata of the pod (template) - where the Prometheus annotations belong. */
function podMetadataOf(doc) {
  if (doc.kind === 'Pod') return doc.metadata || {};
  if (doc.kind === 'CronJob') return doc.spec?.jobTemplate?.spec?.template?.metadata || {};
  return doc.spec?.template?.metadata || {};
}

/**
 * The environment a container will see, as far as it can be known from the manifests:
 * env values, envFrom ConfigMaps and configMapKeyRef. Secret values and field refs are
 * recorded as `undefined` with their source in `unresolved`. Later entries win, as in k8s
 * (env over envFrom).
 */
function resolveEnv(container, docs) {
  const configMaps = new Map();
  for (const { doc } of docs) if (doc.kind === 'ConfigMap') configMaps.set(doc.metadata.name, doc.data || {});
  const env = new Map();
  const unresolved = new Map();
  const missing = [];
  for (const src of container.envFrom || []) {
    if (src.configMapRef) {
      const data = configMaps.get(src.configMapRef.name);
      if (!data) {
        if (!src.configMapRef.optional) missing.push(`ConfigMap ${src.configMapRef.name}`);
        continue;
      }
      for (const [k, v] of Object.entries(data)) env.set((src.prefix || '') + k, String(v));
    }
  }
  for (const e of container.env || []) {
    if (Object.prototype.hasOwnProperty.call(e, 'value')) {
      env.set(e.name, String(e.value));
      unresolved.delete(e.name);
    } else if (e.valueFrom && e.valueFrom.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      const data = configMaps.get(ref.name);
      if (data && Object.prototype.hasOwnProperty.call(data, ref.key)) {
        env.set(e.name, String(data[ref.key]));
        unresolved.delete(e.name);
      } else if (!ref.optional) {
        missing.push(`ConfigMap ${ref.name} key ${ref.key}`);
      }
    } else if (e.valueFrom) {
      env.delete(e.name);
      unresolved.set(e.name, e.valueFrom);
    }
  }
  return { env, unresolved, missing };
}

// --------------------------------------------------------------------------------------------
// Quantities (the subset of resource.Quantity used for memory and sizes)

const BINARY = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

/** A Kubernetes quantity ("384Mi", "1G", "500m", 1024) as a number. Throws if malformed. */
function parseQuantity(q) {
  if (typeof q === 'number') return q;
  const m = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([eE][+-]?\d+)|(n|u|m|k|M|G|T|P|E)?)$/.exec(
    String(q).trim(),
  );
  if (!m) throw new Error(`not a Kubernetes quantity: ${JSON.stringify(q)}`);
  const n = Number(m[1]);
  if (m[2]) return n * BINARY[m[2]];
  if (m[3]) return n * 10 ** Number(m[3].slice(1));
  return n * DECIMAL[m[4] || ''];
}

// --------------------------------------------------------------------------------------------
// Shared-memory arithmetic (shm-protocol/SPEC.md: header page, SQ/CQ/GQ rings, slot area)

const PAGE = 4096;
const HEADER_SIZE = 4096;
const RING_HEADER_SIZE = 256;
const ENTRY_SIZE = 64; // SQ and CQ
const GRANT_ENTRY_SIZE = 8;
const MIN_RING_CAPACITY = 2;

// The sidecar's defaults (sidecar/src/service/config.rs). The shared-memory sizing tests require the
// manifests to set the four sizing knobs explicitly, so these only fill in the rest.
const SIDECAR_DEFAULTS = Object.freeze({
  SHMPIPE_SEGMENT_DIR: '/dev/shm', // unset: POSIX shm, i.e. the container's own /dev/shm
  SHMPIPE_WORKER_THREADS: '2',
  SHMPIPE_MAX_CLIENTS: '16',
  SHMPIPE_MAX_SLOTS: '1024',
  SHMPIPE_MAX_SLOT_SIZE: String(16 * 1024 * 1024),
  SHMPIPE_MAX_RING: '4096',
  SHMPIPE_SPIN_US: '50',
  SHMPIPE_ADMIN_ADDR: '127.0.0.1:9464',
  SHMPIPE_SHUTDOWN_GRACE: '20',
});
const SIZING_KNOBS = Object.freeze(['SHMPIPE_MAX_CLIENTS', 'SHMPIPE_MAX_SLOTS', 'SHMPIPE_MAX_SLOT_SIZE', 'SHMPIPE_MAX_RING']);

const roundUp = (n, to) => Math.ceil(n / to) * to;
const nextPow2 = (n) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * Bytes of the largest segment one client can get: `slots` slots of `slotSize` bytes and SQ/CQ
 * rings of `ring` entries (the sidecar clamps what a client asks for to these maxima).
 */
function segmentBytes(slots, slotSize, ring) {
  if (!Number.isInteger(ring)) throw new Error('segmentBytes: ring capacity required');
  const sq = roundUp(RING_HEADER_SIZE + ENTRY_SIZE * ring, PAGE);
  const cq = sq;
  // gq_capacity is a power of two >= slot_count (SPEC: the GQ can never overflow).
  const gq = roundUp(RING_HEADER_SIZE + GRANT_ENTRY_SIZE * Math.max(MIN_RING_CAPACITY, nextPow2(slots)), PAGE);
  return HEADER_SIZE + sq + cq + gq + slots * roundUp(slotSize, PAGE);
}

/** The sidecar's shared-memory configuration from its environment (defaults filled in). */
function shmConfig(env) {
  const get = (k) => (env.has(k) ? env.get(k) : SIDECAR_DEFAULTS[k]);
  const int = (k) => {
    const v = get(k);
    if (!/^\d+$/.test(String(v))) throw new Error(`${k}=${JSON.stringify(v)} is not a non-negative integer`);
    return Number(v);
  };
  return {
    clients: int('SHMPIPE_MAX_CLIENTS'),
    slots: int('SHMPIPE_MAX_SLOTS'),
    slotSize: int('SHMPIPE_MAX_SLOT_SIZE'),
    ring: int('SHMPIPE_MAX_RING'),
    workers: int('SHMPIPE_WORKER_THREADS'),
    shutdownGrace: int('SHMPIPE_SHUTDOWN_GRACE'),
  };
}

// --------------------------------------------------------------------------------------------
// Kubernetes schema validation
//
// kubernetes-models ships, for every type of the Kubernetes OpenAPI spec, a JSON-schema
// validator generated from that spec and compiled with ajv. Those schemas - like the API server
// by default - accept unknown fields, so a misspelt or misplaced field would pass. kubectl
// (--validate=strict, its default) rejects them, so strictUnknownFields() walks the same type
// graph, read from the package's generated type declarations, and reports every field the type
// does not have.

const SCHEMA_PACKAGE = 'kubernetes-models';

function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^[A-Za-z0-9]+$/.test(kind)) {
    throw new Error(`apiVersion/kind missing or malformed: ${apiVersion} ${kind}`);
  }
  // apps/v1 -> kubernetes-models/apps/v1/Deployment; v1 -> kubernetes-models/v1/Pod
  const mod = `${SCHEMA_PACKAGE}/${apiVersion}/${kind}`;
  let exported;
  try {
    exported = require(mod);
  } catch (err) {
    if (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw new Error(`no schema for ${apiVersion} ${kind} in ${SCHEMA_PACKAGE}`);
    throw err;
  }
  const Model = exported[kind];
  if (typeof Model !== 'function') throw new Error(`no model class ${kind} in ${mod}`);
  return { Model, dts: require.resolve(mod).replace(/\.js$/, '.d.ts') };
}

/** JSON-schema errors of a Kubernetes object: [] when it is valid. */
function schemaErrors(doc) {
  const { Model } = modelFor(doc.apiVersion, doc.kind);
  try {
    new Model(doc).validate();
    return [];
  } catch (err) {
    const details = err.details || err.errors;
    if (!Array.isArray(details)) throw err;
    return details.map((d) => `${d.instancePath || '/'} ${d.message}${d.params ? ' ' + JSON.stringify(d.params) : ''}`);
  }
}

const typeCache = new Map(); // d.ts path -> { kind: 'object', props } | { kind: 'leaf' }

function loadDeclaration(dtsPath) {
  if (typeCache.has(dtsPath)) return typeCache.get(dtsPath);
  const ts = require('typescript');
  const text = fs.readFileSync(dtsPath, 'utf8');
  const sf = ts.createSourceFile(dtsPath, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const imports = new Map(); // local identifier -> d.ts path
  const localInterfaces = new Map();
  let main = null;
  for (const st of sf.statements) {
    if (ts.isImportDeclaration(st) && st.importClause?.namedBindings && ts.isNamedImports(st.importClause.namedBindings)) {
      const spec = st.moduleSpecifier.text;
      for (const el of st.importClause.namedBindings.elements) {
        imports.set(el.name.text, { spec, dir: path.dirname(dtsPath) });
      }
    } else if (ts.isInterfaceDeclaration(st)) {
      localInterfaces.set(st.name.text, st);
      if (!main) main = st; // generated files declare the model's interface first
    }
  }
  if (!main) {
    const leaf = { kind: 'leaf' }; // e.g. Quantity, IntOrString, Time: type aliases of scalars
    typeCache.set(dtsPath, leaf);
    return leaf;
  }
  const resolveImport = (name) => {
    const imp = imports.get(name);
    if (!imp) return null;
    const js = require.resolve(imp.spec, { paths: [imp.dir] });
    return js.replace(/\.(c|m)?js$/, '.d.ts');
  };
  const toType = (node) => {
    if (!node) return { kind: 'leaf' };
    if (ts.isParenthesizedTypeNode(node)) return toType(node.type);
    if (ts.isTypeReferenceNode(node) && ts.isIdentifier(node.typeName)) {
      const name = node.typeName.text;
      if (name === 'Array' && node.typeArguments?.length === 1) return { kind: 'array', of: toType(node.typeArguments[0]) };
      const file = resolveImport(name);
      if (file) return { kind: 'ref', file };
      if (localInterfaces.has(name)) return { kind: 'local', name };
      return { kind: 'leaf' };
    }
    if (ts.isArrayTypeNode(node)) return { kind: 'array', of: toType(node.elementType) };
    if (ts.isTypeLiteralNode(node)) {
      const idx = node.members.find((m) => ts.isIndexSignatureDeclaration(m));
      if (idx) return { kind: 'map', of: toType(idx.type) };
      return { kind: 'leaf' };
    }
    if (ts.isUnionTypeNode(node)) {
      const nonNull = node.types.filter((t) => !(ts.isLiteralTypeNode(t) && t.literal.kind === ts.SyntaxKind.NullKeyword));
      return nonNull.length === 1 ? toType(nonNull[0]) : { kind: 'leaf' };
    }
    return { kind: 'leaf' }; // keywords, literal unions, indexed access (IFoo["kind"])
  };
  const interfaceType = (decl) => {
    const props = new Map();
    for (const m of decl.members) {
      if (!ts.isPropertySignature(m)) continue;
      const name = ts.isStringLiteral(m.name) || ts.isIdentifier(m.name) ? m.name.text : m.name.getText(sf);
      props.set(name, toType(m.type));
    }
    return props;
  };
  const result = { kind: 'object', props: interfaceType(main), locals: new Map() };
  for (const [name, decl] of localInterfaces) result.locals.set(name, interfaceType(decl));
  typeCache.set(dtsPath, result);
  return result;
}

/** Paths of fields that the Kubernetes type of `doc` does not have. */
function strictUnknownFields(doc) {
  const { dts } = modelFor(doc.apiVersion, doc.kind);
  const errors = [];
  const walk = (value, type, ctx, where) => {
    if (value === null || value === undefined) return;
    switch (type.kind) {
      case 'leaf':
        return;
      case 'array':
        if (Array.isArray(value)) value.forEach((v, i) => walk(v, type.of, ctx, `${where}/${i}`));
        return;
      case 'map':
        if (value && typeof value === 'object' && !Array.isArray(value)) {
          for (const [k, v] of Object.entries(value)) walk(v, type.of, ctx, `${where}/${k}`);
        }
        return;
      case 'ref': {
        const decl = loadDeclaration(type.file);
        if (decl.kind === 'leaf') return;
        walkObject(value, decl.props, decl, where);
        return;
      }
      case 'local':
        walkObject(value, ctx.locals.get(type.name), ctx, where);
        return;
      default:
        throw new Error(`unexpected type node ${type.kind}`);
    }
  };
  const walkObject = (value, props, ctx, where) => {
    if (!value || typeof value !== 'object' || Array.isArray(value)) return; // the schema reports it
    for (const [k, v] of Object.entries(value)) {
      if (!props.has(k)) errors.push(`${where || '/'}: unknown field "${k}"`);
      else walk(v, props.get(k), ctx, `${where}/${k}`);
    }
  };
  const root = loadDeclaration(dts);
  walkObject(doc, root.props, root, '');
  return errors;
}

function schemaPackageVersion() {
  return require(`${SCHEMA_PACKAGE}/package.json`).version;
}

// --------------------------------------------------------------------------------------------
// Dockerfile

/**
 * The Dockerfile as stages: [{ name, index, base, instructions: [{ keyword, args, raw, from,
 * json, env, line }] }]. Global ARG defaults are substituted into FROM.
 */
function parseDockerfile(file = path.join(ROOT, 'Dockerfile')) {
  return parseDockerfileText(fs.readFileSync(file, 'utf8'));
}

function parseDockerfileText(text) {
  const { DockerfileParser } = require('dockerfile-ast');
  const df = DockerfileParser.parse(text);
  const globalArgs = new Map();
  const stages = [];
  let cur = null;
  for (const ins of df.getInstructions()) {
    const keyword = ins.getKeyword().toUpperCase();
    const args = ins.getArguments().map((a) => a.getValue());
    const line = ins.getRange().start.line + 1;
    if (keyword === 'ARG' && !cur) {
      for (const a of args) {
        const [k, ...v] = a.split('=');
        globalArgs.set(k, v.length ? v.join('=') : '');
      }
      continue;
    }
    if (keyword === 'FROM') {
      const image = ins.getImage().replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (m, k) =>
        globalArgs.has(k) ? globalArgs.get(k) : m,
      );
      cur = { name: ins.getBuildStage() || null, index: stages.length, base: image, instructions: [], line };
      stages.push(cur);
      continue;
    }
    if (!cur) throw new Error(`Dockerfile line ${line}: ${keyword} before the first FROM`);
    const entry = { keyword, args, raw: args.join(' '), line };
    if (keyword === 'COPY' || keyword === 'ADD') {
      const from = ins.getFromFlag && ins.getFromFlag();
      entry.from = from ? from.getValue() : null;
      const nonFlag = args.filter((a) => !a.startsWith('--'));
      entry.sources = nonFlag.slice(0, -1);
      entry.dest = nonFlag[nonFlag.length - 1];
    }
    if (keyword === 'ENTRYPOINT' || keyword === 'CMD') {
      entry.json = ins.getJSONStrings ? ins.getJSONStrings().map((s) => s.getJSONValue()) : null;
      if (entry.json && entry.json.length === 0) entry.json = null;
    }
    if (keyword === 'ENV') entry.env = ins.getProperties().map((p) => [p.getName(), p.getValue()]);
    cur.instructions.push(entry);
  }
  return { stages, globalArgs };
}

/** The stage's effective WORKDIR at the end (absolute; '/' if none). */
function workdirOf(stage) {
  let wd = '/';
  for (const ins of stage.instructions) {
    if (ins.keyword === 'WORKDIR') wd = path.posix.resolve(wd, ins.args[0]);
  }
  return wd;
}

/** ENV of a stage as a Map (later wins). */
function envOf(stage) {
  const env = new Map();
  for (const ins of stage.instructions) if (ins.env) for (const [k, v] of ins.env) env.set(k, v);
  return env;
}

/**
 * A .dockerignore matcher with Docker's semantics for the patterns this repo uses: patterns
 * are relative to the context root, `*` does not cross `/`, `**` does, a pattern that matches
 * a directory excludes everything below it, `!` re-includes, the last matching rule wins.
 */
function dockerignoreMatcher(file = path.join(ROOT, '.dockerignore')) {
  const rules = [];
  if (fs.existsSync(file)) {
    for (let line of fs.readFileSync(file, 'utf8').split('\n')) {
      line = line.trim();
      if (!line || line.startsWith('#')) continue;
      const negate = line.startsWith('!');
      if (negate) line = line.slice(1).trim();
      let p = path.posix.normalize(line.replace(/^\/+/, '')).replace(/\/+$/, '');
      if (p === '.') continue;
      let re = '';
      for (let i = 0; i < p.length; i++) {
        const c = p[i];
        if (c === '*' && p[i + 1] === '*') {
          i++;
          if (p[i + 1] === '/') {
            i++;
            re += '(?:.*/)?';
          } else re += '.*';
        } else if (c === '*') re += '[^/]*';
        else if (c === '?') re += '[^/]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      rules.push({ negate, re: new RegExp(`^${re}$`), pattern: line });
    }
  }
  return function isIgnored(rel) {
    const parts = path.posix.normalize(rel).replace(/^\.\//, '').split('/').filter(Boolean);
    let ignored = false;
    for (const rule of rules) {
      for (let n = 1; n <= parts.length; n++) {
        if (rule.re.test(parts.slice(0, n).join('/'))) {
          ignored = !rule.negate;
          break;
        }
      }
    }
    return ignored;
  };
}

/** { sidecar: { uid, gid }, agent: { uid, gid } } from the last USER of each final stage. */
function finalStageUsers() {
  const { stages } = parseDockerfile();
  const out = {};
  for (const target of ['sidecar', 'agent']) {
    const stage = stages.find((s) => s.name === target);
    if (!stage) throw new Error(`Dockerfile has no stage ${target}`);
    const users = stage.instructions.filter((i) => i.keyword === 'USER');
    if (!users.length) throw new Error(`Dockerfile stage ${target} has no USER`);
    const m = /^(\d+)(?::(\d+))?$/.exec(users[users.length - 1].args[0]);
    if (!m) throw new Error(`Dockerfile stage ${target}: USER must be numeric uid[:gid], got ${users[users.length - 1].args[0]}`);
    out[target] = { uid: Number(m[1]), gid: m[2] === undefined ? null : Number(m[2]) };
  }
  return out;
}

module.exports = {
  finalStageUsers,
  ROOT,
  K8S_DIR,
  loadManifests,
  isKubernetesObject,
  podSpecOf,
  podMetadataOf,
  resolveEnv,
  parseQuantity,
  PAGE,
  SIDECAR_DEFAULTS,
  SIZING_KNOBS,
  segmentBytes,
  shmConfig,
  schemaErrors,
  strictUnknownFields,
  schemaPackageVersion,
  parseDockerfile,
  parseDockerfileText,
  workdirOf,
  envOf,
  dockerignoreMatcher,
};
