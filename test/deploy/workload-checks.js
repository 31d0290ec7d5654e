'use strict';
// The semantic checks of one workload (Pod or Deployment), as named functions that throw an
// AssertionError. k8s-semantics.test.js runs each on every workload and also runs each against
// a broken copy to show it can fail.

const assert = require('node:assert/strict');
const path = require('node:path');
const h = require('./helpers');

const MiB = 2 ** 20;
// The sidecar process itself, on top of the volume: a backup session's working set (~80 MiB:
// two packs, chunk windows, sealing scratch), Argon2id's 64 MiB while a repository opens, and a
// pack per extra concurrent upload (SHMPIPE_PACK_UPLOADS, 4 for s3://). deploy/README.md §3.
const PROCESS_MEMORY_MIN = 256 * MiB;

function containers(doc) {
  const spec = h.podSpecOf(doc);
  return {
    spec,
    init: spec.initContainers || [],
    main: spec.containers || [],
  };
}

const imageName = (c) => String(c.image || '').replace(/[:@].*$/, '').split('/').pop();

function envNames(c) {
  return new Set([...(c.env || []).map((e) => e.name)]);
}

const isAgent = (c) => imageName(c) === 'shmpipe-agent' || envNames(c).has('SHMPIPE_SIDECAR_SOCKET');

/**
 * The sidecar and the agent container of a pod, wherever they are; `jobs`: one-shot CLI runs of
 * the agent image among the init containers (e.g. `shmpipe init --exists-ok`), which need the
 * sidecar as much as the agent does.
 */
function roles(doc) {
  const { init, main } = containers(doc);
  const all = [...init.map((c) => ({ c, init: true })), ...main.map((c) => ({ c, init: false }))];
  const sidecars = all.filter(({ c }) => imageName(c) === 'shmpipe-sidecar' || envNames(c).has('SHMPIPE_SOCKET'));
  const agents = all.filter(({ c, init: i }) => !i && isAgent(c));
  assert.equal(sidecars.length, 1, 'expected exactly one shmpipe sidecar container');
  assert.equal(agents.length, 1, 'expected exactly one shmpipe agent container');
  const jobs = all.filter(({ c, init: i }) => i && isAgent(c) && c !== sidecars[0].c);
  return { sidecar: sidecars[0], agent: agents[0], jobs };
}

function envOf(c, manifests) {
  const r = h.resolveEnv(c, manifests);
  assert.deepEqual(r.missing, [], `${c.name}: references to missing ConfigMaps/keys`);
  return r;
}

const isInside = (p, dir) => {
  const rel = path.posix.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.posix.isAbsolute(rel));
};

/** The sidecar's mount that holds its control socket, and the volume behind it. */
function sharedVolume(doc, manifests) {
  const { spec } = containers(doc);
  const { sidecar } = roles(doc);
  const { env } = envOf(sidecar.c, manifests);
  const socket = env.get('SHMPIPE_SOCKET');
  assert.ok(socket, 'the sidecar must set SHMPIPE_SOCKET explicitly');
  const mounts = (sidecar.c.volumeMounts || []).filter((m) => isInside(socket, m.mountPath));
  assert.equal(mounts.length, 1, `SHMPIPE_SOCKET ${socket} is not inside exactly one of the sidecar's volume mounts`);
  const mount = mounts[0];
  const volume = (spec.volumes || []).find((v) => v.name === mount.name);
  assert.ok(volume, `volume ${mount.name} is not declared`);
  return { mount, volume, socket };
}

function effective(c, spec, key) {
  const cs = c.securityContext || {};
  const ps = spec.securityContext || {};
  return cs[key] !== undefined ? cs[key] : ps[key];
}

function parseAdminAddr(addr) {
  const m = /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(addr);
  assert.ok(m, `SHMPIPE_ADMIN_ADDR ${addr} is not host:port`);
  return { host: m[1] !== undefined ? m[1] : m[2], port: Number(m[3]) };
}

function adminOf(doc, manifests) {
  const { sidecar } = roles(doc);
  const { env, unresolved } = envOf(sidecar.c, manifests);
  assert.ok(!unresolved.has('SHMPIPE_ADMIN_ADDR'), 'SHMPIPE_ADMIN_ADDR must be a literal value');
  const addr = env.has('SHMPIPE_ADMIN_ADDR') ? env.get('SHMPIPE_ADMIN_ADDR') : h.SIDECAR_DEFAULTS.SHMPIPE_ADMIN_ADDR;
  return { ...parseAdminAddr(addr), addr, env, sidecar: sidecar.c };
}

function resolvePort(c, port) {
  if (typeof port === 'number') return port;
  if (/^\d+$/.test(String(port))) return Number(port);
  const p = (c.ports || []).find((x) => x.name === port);
  assert.ok(p, `${c.name}: no container port named ${port}`);
  return p.containerPort;
}

function shm(doc, manifests) {
  const { sidecar } = roles(doc);
  return h.shmConfig(envOf(sidecar.c, manifests).env);
}

const checkWorkload = {
  'the sidecar is a native sidecar (restartPolicy: Always)'(doc) {
    const { sidecar, agent } = roles(doc);
    assert.ok(sidecar.init, 'the sidecar must be an init container (native sidecar), not a regular container');
    assert.equal(sidecar.c.restartPolicy, 'Always', 'the sidecar init container needs restartPolicy: Always');
    assert.ok(!agent.init, 'the agent must be a regular container');
    assert.equal(agent.c.restartPolicy, undefined, 'regular containers cannot set restartPolicy');
  },

  'both containers mount the shared memory-backed emptyDir at the same path'(doc, manifests) {
    const { mount, volume } = sharedVolume(doc, manifests);
    const { agent } = roles(doc);
    assert.ok(volume.emptyDir, `volume ${volume.name} must be an emptyDir`);
    assert.equal(volume.emptyDir.medium, 'Memory', `volume ${volume.name} must be memory-backed (medium: Memory)`);
    const agentMount = (agent.c.volumeMounts || []).find((m) => m.name === volume.name);
    assert.ok(agentMount, `the agent does not mount ${volume.name}`);
    assert.equal(agentMount.mountPath, mount.mountPath, 'the agent and the sidecar mount the volume at different paths');
    for (const m of [mount, agentMount]) {
      assert.ok(!m.subPath && !m.subPathExpr, 'no subPath on the shared volume');
      assert.ok(!m.readOnly, 'the shared volume must be writable (segments are mapped read-write)');
    }
  },

  'SHMPIPE_SOCKET, SHMPIPE_SIDECAR_SOCKET and SHMPIPE_SEGMENT_DIR point into the shared volume'(doc, manifests) {
    const { mount, socket } = sharedVolume(doc, manifests);
    const { sidecar, agent } = roles(doc);
    const senv = envOf(sidecar.c, manifests).env;
    const segDir = senv.has('SHMPIPE_SEGMENT_DIR') ? senv.get('SHMPIPE_SEGMENT_DIR') : h.SIDECAR_DEFAULTS.SHMPIPE_SEGMENT_DIR;
    assert.ok(isInside(segDir, mount.mountPath), `SHMPIPE_SEGMENT_DIR ${segDir} is not inside ${mount.mountPath}`);
    assert.ok(isInside(socket, mount.mountPath) && socket !== mount.mountPath, `SHMPIPE_SOCKET ${socket} is not a file in ${mount.mountPath}`);
    const aenv = envOf(agent.c, manifests).env;
    assert.equal(aenv.get('SHMPIPE_SIDECAR_SOCKET'), socket, 'the agent SHMPIPE_SIDECAR_SOCKET is not the sidecar SHMPIPE_SOCKET');
  },

  'the slot configuration is set explicitly and within the protocol limits'(doc, manifests) {
    const { sidecar } = roles(doc);
    const { env } = envOf(sidecar.c, manifests);
    for (const k of h.SIZING_KNOBS) {
      assert.ok(env.has(k), `set ${k} explicitly: the sidecar defaults need many GiB of shared memory`);
    }
    const cfg = shm(doc, manifests);
    assert.ok(cfg.ring >= 2 && cfg.ring <= 65536 && (cfg.ring & (cfg.ring - 1)) === 0, 'SHMPIPE_MAX_RING: a power of two in 2..65536');
    assert.ok(cfg.clients >= 1, 'SHMPIPE_MAX_CLIENTS >= 1');
    assert.ok(cfg.slots >= 1 && cfg.slots <= 65535, 'SHMPIPE_MAX_SLOTS in 1..65535');
    assert.equal(cfg.slotSize % h.PAGE, 0, 'SHMPIPE_MAX_SLOT_SIZE must be a multiple of 4096');
    assert.ok(cfg.slotSize >= h.PAGE && cfg.slotSize <= 2 ** 30, 'SHMPIPE_MAX_SLOT_SIZE in 4096..1 GiB');
    assert.ok(cfg.workers >= 1, 'SHMPIPE_WORKER_THREADS >= 1');
  },

  'the emptyDir sizeLimit covers every client segment plus one spare'(doc, manifests) {
    const { volume } = sharedVolume(doc, manifests);
    assert.ok(volume.emptyDir.sizeLimit !== undefined, `volume ${volume.name} needs a sizeLimit`);
    const limit = h.parseQuantity(volume.emptyDir.sizeLimit);
    const cfg = shm(doc, manifests);
    const seg = h.segmentBytes(cfg.slots, cfg.slotSize, cfg.ring);
    const need = cfg.clients * seg;
    const withSpare = need + seg; // a reconnecting client's old segment may still be mapped
    const mib = (n) => (n / MiB).toFixed(1) + ' MiB';
    assert.ok(
      limit >= withSpare,
      `sizeLimit ${volume.emptyDir.sizeLimit} (${mib(limit)}) < ${cfg.clients} clients x ${mib(seg)} + one spare segment = ${mib(withSpare)}`,
    );
  },

  'the sidecar memory limit holds the volume plus the process'(doc, manifests) {
    const { volume } = sharedVolume(doc, manifests);
    const { sidecar, agent } = roles(doc);
    const size = h.parseQuantity(volume.emptyDir.sizeLimit);
    const res = sidecar.c.resources || {};
    assert.ok(res.limits?.memory, 'the sidecar needs a memory limit');
    assert.ok(res.requests?.memory, 'the sidecar needs a memory request');
    const limit = h.parseQuantity(res.limits.memory);
    assert.ok(limit >= size, `sidecar memory limit ${res.limits.memory} < emptyDir sizeLimit ${volume.emptyDir.sizeLimit}`);
    assert.ok(
      limit - size >= PROCESS_MEMORY_MIN,
      `sidecar memory limit ${res.limits.memory} leaves < 64 MiB for the process beside the ${volume.emptyDir.sizeLimit} volume`,
    );
    assert.ok(h.parseQuantity(res.requests.memory) >= size, 'the sidecar memory request must cover the volume (tmpfs is not reclaimable)');
    for (const c of [sidecar.c, agent.c]) {
      assert.ok(c.resources?.limits?.memory && c.resources?.requests?.cpu, `${c.name}: set resources (memory limit, cpu request)`);
    }
  },

  'both containers run as uid/gid 10001, the Dockerfile USER'(doc, manifests, ctx) {
    const { spec } = containers(doc);
    const { sidecar, agent } = roles(doc);
    const s = { uid: effective(sidecar.c, spec, 'runAsUser'), gid: effective(sidecar.c, spec, 'runAsGroup') };
    const a = { uid: effective(agent.c, spec, 'runAsUser'), gid: effective(agent.c, spec, 'runAsGroup') };
    assert.equal(s.uid, a.uid, 'sidecar and agent run as different uids: the sidecar SO_PEERCRED check would refuse the agent');
    assert.equal(s.gid, a.gid, 'sidecar and agent run as different gids');
    assert.equal(s.uid, 10001);
    assert.equal(s.gid, 10001);
    assert.equal(s.uid, ctx.dockerUid.sidecar.uid, 'sidecar runAsUser differs from the Dockerfile USER of target sidecar');
    assert.equal(a.uid, ctx.dockerUid.agent.uid, 'agent runAsUser differs from the Dockerfile USER of target agent');
    assert.equal(s.gid, ctx.dockerUid.sidecar.gid);
    assert.equal(a.gid, ctx.dockerUid.agent.gid);
  },

  'the probes use the admin port of SHMPIPE_ADMIN_ADDR'(doc, manifests) {
    const { host, port, addr, sidecar } = adminOf(doc, manifests);
    assert.ok(
      ['0.0.0.0', '::', ''].includes(host),
      `SHMPIPE_ADMIN_ADDR ${addr}: the kubelet probes via the pod IP, so bind 0.0.0.0 (not loopback)`,
    );
    const declared = (sidecar.ports || []).map((p) => p.containerPort);
    assert.ok(declared.includes(port), `the sidecar does not declare containerPort ${port}`);
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const get = sidecar[probe]?.httpGet;
      if (!get) continue; // presence is checked separately
      assert.equal(resolvePort(sidecar, get.port), port, `${probe} port != SHMPIPE_ADMIN_ADDR port ${port}`);
      assert.ok(!get.host, `${probe}: leave httpGet.host unset (pod IP)`);
    }
  },

  'the sidecar has startup, readiness and liveness probes on /ready and /live'(doc) {
    const { sidecar } = roles(doc);
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      assert.ok(sidecar.c[probe]?.httpGet, `the sidecar needs an httpGet ${probe}`);
    }
    assert.equal(sidecar.c.livenessProbe.httpGet.path, '/live');
    assert.equal(sidecar.c.readinessProbe.httpGet.path, '/ready');
    // The kubelet starts the agent only after the sidecar's startupProbe succeeded.
    assert.equal(sidecar.c.startupProbe.httpGet.path, '/ready', 'startupProbe should wait for /ready');
  },

  'both containers are hardened'(doc) {
    const { spec } = containers(doc);
    const { sidecar, agent, jobs } = roles(doc);
    for (const k of ['hostNetwork', 'hostPID', 'hostIPC']) assert.notEqual(spec[k], true, `${k} must not be set`);
    assert.equal(spec.automountServiceAccountToken, false, 'neither container needs the Kubernetes API');
    for (const c of [sidecar.c, agent.c, ...jobs.map((j) => j.c)]) {
      const sc = c.securityContext || {};
      assert.equal(effective(c, spec, 'runAsNonRoot'), true, `${c.name}: runAsNonRoot`);
      assert.equal(sc.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation: false`);
      assert.equal(sc.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem: true`);
      assert.notEqual(sc.privileged, true, `${c.name}: privileged`);
      assert.ok(sc.capabilities?.drop?.includes('ALL'), `${c.name}: capabilities.drop [ALL]`);
      assert.ok(!sc.capabilities?.add?.length, `${c.name}: no added capabilities`);
      const seccomp = effective(c, spec, 'seccompProfile');
      assert.equal(seccomp?.type, 'RuntimeDefault', `${c.name}: seccompProfile RuntimeDefault`);
      assert.notEqual(effective(c, spec, 'runAsUser'), 0, `${c.name}: uid 0`);
    }
  },

  'agent-image init containers start after the sidecar and reach its socket'(doc, manifests) {
    const { init } = containers(doc);
    const { sidecar, jobs } = roles(doc);
    const socket = envOf(sidecar.c, manifests).env.get('SHMPIPE_SOCKET');
    for (const { c } of jobs) {
      // Init containers start in order; a native sidecar counts as started once its startup
      // probe passes, so a job listed after it finds the socket accepting.
      assert.ok(init.indexOf(c) > init.indexOf(sidecar.c), `${c.name}: must come after the sidecar in initContainers`);
      assert.equal(envOf(c, manifests).env.get('SHMPIPE_SIDECAR_SOCKET'), socket, `${c.name}: SHMPIPE_SIDECAR_SOCKET is the sidecar's socket`);
      assert.ok((c.volumeMounts || []).some((m) => isInside(socket, m.mountPath)), `${c.name}: mounts the volume with the socket`);
    }
  },

  'the shutdown grace fits in terminationGracePeriodSeconds'(doc, manifests) {
    const { spec } = containers(doc);
    const cfg = shm(doc, manifests);
    assert.equal(typeof spec.terminationGracePeriodSeconds, 'number', 'set terminationGracePeriodSeconds explicitly');
    // The agent stops first; the sidecar drains after it, inside the same pod-wide budget.
    assert.ok(
      cfg.shutdownGrace < spec.terminationGracePeriodSeconds,
      `SHMPIPE_SHUTDOWN_GRACE ${cfg.shutdownGrace}s >= terminationGracePeriodSeconds ${spec.terminationGracePeriodSeconds}s`,
    );
  },

  'Prometheus scrape annotations point at /metrics on the admin port'(doc, manifests) {
    const { port } = adminOf(doc, manifests);
    const ann = h.podMetadataOf(doc).annotations || {};
    assert.equal(ann['prometheus.io/scrape'], 'true');
    assert.equal(ann['prometheus.io/port'], String(port));
    assert.equal(ann['prometheus.io/path'] ?? '/metrics', '/metrics');
  },

  'the agent and the sidecar are configured with images, a repository and a store'(doc, manifests) {
    const { sidecar, agent } = roles(doc);
    assert.equal(imageName(sidecar.c), 'shmpipe-sidecar');
    assert.equal(imageName(agent.c), 'shmpipe-agent');
    for (const c of [sidecar.c, agent.c]) {
      assert.notEqual(c.imagePullPolicy, 'Always', `${c.name}: locally built images need IfNotPresent/Never`);
      assert.ok(!c.command, `${c.name}: keep the image ENTRYPOINT (no command:)`);
    }
    const s = envOf(sidecar.c, manifests);
    const a = envOf(agent.c, manifests);
    assert.ok(s.env.has('SHMPIPE_STORE'), 'the sidecar needs SHMPIPE_STORE');
    assert.ok(a.env.has('SHMPIPE_REPO'), 'the agent needs SHMPIPE_REPO');
    assert.equal(a.env.get('SHMPIPE_REPO'), s.env.get('SHMPIPE_STORE'), 'SHMPIPE_REPO != SHMPIPE_STORE');
    assert.match(s.env.get('SHMPIPE_STORE'), /^(file|s3):\/\//);
  },

  'every mounted volume is declared and worker threads fit the CPU limit'(doc, manifests) {
    const { spec, init, main } = containers(doc);
    const names = new Set((spec.volumes || []).map((v) => v.name));
    for (const c of [...init, ...main]) {
      for (const m of c.volumeMounts || []) assert.ok(names.has(m.name), `${c.name} mounts undeclared volume ${m.name}`);
    }
    const { sidecar } = roles(doc);
    const cpu = sidecar.c.resources?.limits?.cpu;
    if (cpu !== undefined) {
      const cfg = shm(doc, manifests);
      assert.ok(cfg.workers <= Math.ceil(h.parseQuantity(cpu)), `SHMPIPE_WORKER_THREADS ${cfg.workers} > cpu limit ${cpu}`);
    }
  },
};

module.exports = { checkWorkload };
