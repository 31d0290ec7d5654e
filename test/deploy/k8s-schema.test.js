'use strict';
// Every document in deploy/kubernetes validates against the Kubernetes OpenAPI schema (the
// JSON-schema validators shipped by the npm package kubernetes-models, generated from the
// official spec and compiled with ajv), and has no field the schema does not know (what
// `kubectl apply --validate=strict` would reject). Kustomization files are checked separately.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const MIN_K8S_MINOR = 28; // initContainers[].restartPolicy (native sidecars) exists from 1.28

describe('deploy/kubernetes: Kubernetes schema', function () {
  const manifests = h.loadManifests();
  const objects = manifests.filter((m) => h.isKubernetesObject(m.doc));

  it('has the expected manifests', function () {
    const files = new Set(manifests.map((m) => m.file));
    for (const f of ['deployment.yaml', 'pod-example.yaml']) assert.ok(files.has(f), `deploy/kubernetes/${f} is missing`);
    const kinds = objects.map((m) => m.doc.kind);
    assert.ok(kinds.includes('Deployment'), 'no Deployment');
    assert.ok(kinds.includes('Pod'), 'no Pod');
  });

  it(`uses schemas new enough for native sidecars (Kubernetes >= 1.${MIN_K8S_MINOR})`, function () {
    // The schema package must know initContainers[].restartPolicy, or the check below would
    // reject (strict) the very field this deployment depends on.
    const probe = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'probe' },
      spec: { initContainers: [{ name: 's', image: 'x', restartPolicy: 'Always' }], containers: [{ name: 'c', image: 'x' }] },
    };
    assert.deepEqual(h.schemaErrors(probe), []);
    assert.deepEqual(h.strictUnknownFields(probe), [], `kubernetes-models ${h.schemaPackageVersion()} is too old`);
  });

  for (const { file, index, doc } of objects) {
    const label = `${file}#${index} ${doc.kind}/${doc.metadata && doc.metadata.name}`;
    it(`${label} validates against the schema`, function () {
      assert.deepEqual(h.schemaErrors(doc), [], `${label}: schema errors`);
    });
    it(`${label} has no unknown fields`, function () {
      assert.deepEqual(h.strictUnknownFields(doc), [], `${label}: unknown fields`);
    });
    it(`${label} has a DNS-1123 name and the shmpipe labels`, function () {
      assert.match(doc.metadata.name, /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
      assert.equal(doc.metadata.labels?.['app.kubernetes.io/name'], 'shmpipe');
    });
  }

  describe('kustomization.yaml', function () {
    const kust = manifests.filter((m) => !h.isKubernetesObject(m.doc));
    it('lists existing files, every non-example manifest, and the images used', function () {
      if (kust.length === 0) this.skip(); // optional file
      assert.equal(kust.length, 1);
      const k = kust[0].doc;
      assert.ok(Array.isArray(k.resources) && k.resources.length > 0, 'resources is empty');
      for (const r of k.resources) {
        assert.ok(fs.existsSync(path.join(h.K8S_DIR, r)), `kustomization resource ${r} does not exist`);
      }
      const expected = [...new Set(objects.map((m) => m.file))].filter((f) => f !== 'pod-example.yaml').sort();
      assert.deepEqual([...k.resources].sort(), expected, 'kustomization resources != manifests (pod-example.yaml excepted)');
      const allowed = new Set(['apiVersion', 'kind', 'resources', 'images', 'namespace', 'commonLabels', 'labels', 'configMapGenerator', 'patches']);
      for (const key of Object.keys(k)) assert.ok(allowed.has(key), `unexpected kustomization field ${key}`);
      const imagesUsed = new Set();
      for (const { doc } of objects) {
        const spec = h.podSpecOf(doc);
        for (const c of [...(spec?.initContainers || []), ...(spec?.containers || [])]) imagesUsed.add(c.image.split(':')[0]);
      }
      for (const img of k.images || []) assert.ok(imagesUsed.has(img.name), `kustomization image ${img.name} is not used`);
    });
  });

  describe('the validator itself can fail', function () {
    const deployment = objects.find((m) => m.doc.kind === 'Deployment').doc;
    const mutate = (fn) => {
      const d = structuredClone(deployment);
      fn(d);
      return d;
    };
    it('rejects a wrong enum value', function () {
      const d = mutate((x) => (x.spec.template.spec.containers[0].imagePullPolicy = 'Sometimes'));
      assert.notDeepEqual(h.schemaErrors(d), []);
    });
    it('rejects a missing required field', function () {
      const d = mutate((x) => delete x.spec.template.spec.containers[0].name);
      assert.notDeepEqual(h.schemaErrors(d), []);
    });
    it('rejects a malformed quantity', function () {
      const d = mutate((x) => (x.spec.template.spec.volumes[0].emptyDir.sizeLimit = '384 MB'));
      assert.notDeepEqual(h.schemaErrors(d), []);
    });
    it('rejects a wrong type', function () {
      const d = mutate((x) => (x.spec.template.spec.terminationGracePeriodSeconds = 'thirty'));
      assert.notDeepEqual(h.schemaErrors(d), []);
    });
    it('rejects a wrong apiVersion', function () {
      const d = mutate((x) => (x.apiVersion = 'apps/v2'));
      assert.throws(() => h.schemaErrors(d), /no schema/);
    });
    it('reports unknown and misplaced fields', function () {
      const d = mutate((x) => {
        x.spec.template.spec.initContainers[0].restartPolicyy = 'Always';
        x.spec.template.spec.restartPolicyAlways = true;
        x.spec.template.spec.volumes[0].emptyDir.sizeLimt = '1Gi';
        x.spec.template.spec.containers[0].resources.limits.memroy = '1Gi'; // a map: keys are free
      });
      const errs = h.strictUnknownFields(d);
      assert.equal(errs.length, 3, errs.join('\n'));
      assert.ok(errs.some((e) => e.includes('"restartPolicyy"')));
      assert.ok(errs.some((e) => e.includes('"sizeLimt"')));
    });
  });
});
