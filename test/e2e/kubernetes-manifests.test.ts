// deploy/kubernetes/ as an operator applies it: every manifest validates against the Kubernetes
// API schemas (kubernetes-models, offline: no cluster), the kustomization lists them all and
// `kubectl kustomize` renders them (kubectl needs no cluster for that), and the
// Deployment holds what the balancer needs (probes on the admin API, a grace period longer than
// the drain, a non-root read-only security context, requests and limits, Prometheus
// annotations on the admin port). The probes are then asked of a running balancer whose only
// backend is down: readiness and liveness answer 200 where /health answers 503. The seed guide's
// manifests validate too. (test/system/kubernetes.test.ts runs them with podman.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import TOML from '@iarna/toml';
import { freePort, requireTool, runCli, startBalancer, tempDir, waitFor, httpRequest } from '../helpers';
import {
  configKey,
  deploymentSpec,
  findKind,
  KUBE_DIR,
  parseManifests,
  kubeFiles,
  kustomizeResources,
  probePort,
  readManifests,
  SEED_MANIFESTS,
  type Manifest,
} from '../kubernetes-helpers';

interface Model {
  validate(): void;
}
type ModelClass = new (data: unknown) => Model;

/** The kubernetes-models class of a manifest, by apiVersion and kind (an unknown one fails). */
async function modelOf(m: Manifest): Promise<ModelClass> {
  const group = m.apiVersion === 'v1' ? 'v1' : m.apiVersion;
  const mods: Record<string, () => Promise<Record<string, unknown>>> = {
    v1: () => import('kubernetes-models/v1'),
    'apps/v1': () => import('kubernetes-models/apps/v1'),
    'policy/v1': () => import('kubernetes-models/policy/v1'),
  };
  const load = mods[group];
  assert.ok(load, `${m.kind} ${m.metadata.name}: apiVersion ${m.apiVersion} is not one this test knows`);
  const cls = (await load())[m.kind] as ModelClass | undefined;
  assert.ok(cls, `${m.apiVersion} has no kind ${m.kind}`);
  return cls;
}

/** Schema errors of a manifest, "" when it is valid. */
async function schemaErrors(m: Manifest): Promise<string> {
  const Cls = await modelOf(m);
  try {
    new Cls(m).validate();
    return '';
  } catch (e) {
    return String(e);
  }
}

const resources = kustomizeResources();
const all = resources.flatMap((r) => r.manifests);
const deployment = findKind(all, 'Deployment');
const spec = deploymentSpec(deployment);
const pod = spec.template.spec;
const container = pod.containers[0]!;
const configMap = findKind(all, 'ConfigMap');
const mounted = configKey(spec, container);
const configToml = configMap.data?.[mounted.key] ?? '';

test('the kustomization lists every manifest of deploy/kubernetes, and names the Deployment image', () => {
  const listed = resources.map((r) => r.file).sort();
  assert.deepEqual(listed, kubeFiles().filter((f) => f !== 'kustomization.yaml'));
  const k = readManifests(join(KUBE_DIR, 'kustomization.yaml'))[0] as unknown as { images: { name: string }[] };
  assert.ok(k.images.some((i) => container.image.split(':')[0] === i.name), `kustomization images names ${container.image}`);
  assert.deepEqual(all.map((m) => m.kind).sort(), ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service']);
});

test('`kubectl kustomize deploy/kubernetes` renders the four objects, each valid, with the image the kustomization names', async (t) => {
  const found = spawnSync('sh', ['-c', 'command -v kubectl'], { stdio: 'ignore' }).status === 0;
  if (!requireTool(t, 'kubectl', found)) return;
  const r = spawnSync('timeout', ['60', 'kubectl', 'kustomize', KUBE_DIR], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const rendered = parseManifests(r.stdout, 'kubectl kustomize');
  assert.deepEqual(rendered.map((m) => m.kind).sort(), ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service']);
  for (const m of rendered) assert.equal(await schemaErrors(m), '', `${m.kind} ${m.metadata.name}`);
  assert.equal(deploymentSpec(findKind(rendered, 'Deployment')).template.spec.containers[0]!.image, container.image);
});

test('every manifest validates against the Kubernetes API schemas', async () => {
  for (const m of all) assert.equal(await schemaErrors(m), '', `${m.kind} ${m.metadata.name}`);
});

test('the schema check catches a broken manifest (a string replica count, a probe port object)', async () => {
  const bad = structuredClone(deployment) as unknown as { spec: { replicas: unknown; template: { spec: { containers: { livenessProbe: { httpGet: { port: unknown } } }[] } } } };
  bad.spec.replicas = 'three';
  bad.spec.template.spec.containers[0]!.livenessProbe.httpGet.port = { name: 'admin' };
  const errors = await schemaErrors(bad as unknown as Manifest);
  assert.match(errors, /spec\/replicas must be integer/);
  assert.match(errors, /livenessProbe\/httpGet\/port/);
});

test('the Deployment: probes on the admin API, grace period past the drain, non-root read-only, requests and limits', () => {
  const admin = probePort(container, 'admin');
  assert.equal(container.readinessProbe?.httpGet?.path, '/ready');
  assert.equal(probePort(container, container.readinessProbe!.httpGet!.port), admin);
  // liveness on the admin API, never on /health (503 when the backends are down)
  assert.ok(container.livenessProbe?.httpGet, 'liveness is an HTTP GET');
  assert.notEqual(container.livenessProbe.httpGet.path, '/health');
  assert.equal(probePort(container, container.livenessProbe.httpGet.port), admin);

  const toml = TOML.parse(configToml) as { runtime?: { drain_timeout_millis?: number }; admin?: { listen_address?: string } };
  const drainS = (toml.runtime?.drain_timeout_millis ?? 30000) / 1000;
  const preStop = container.lifecycle?.preStop?.exec?.command ?? [];
  const pauseS = preStop[0] === 'sleep' ? Number(preStop[1]) : 0;
  assert.ok(pod.terminationGracePeriodSeconds! > pauseS + drainS, `grace ${pod.terminationGracePeriodSeconds}s > preStop ${pauseS}s + drain ${drainS}s`);

  assert.equal(pod.securityContext?.['runAsNonRoot'], true);
  assert.equal(pod.securityContext?.['runAsUser'], 999, "the image's lemonade user");
  assert.equal(container.securityContext?.['readOnlyRootFilesystem'], true);
  assert.equal(container.securityContext?.['allowPrivilegeEscalation'], false);
  assert.deepEqual((container.securityContext?.['capabilities'] as { drop: string[] }).drop, ['ALL']);
  for (const r of ['cpu', 'memory']) {
    assert.ok(container.resources?.requests?.[r], `requests.${r}`);
    assert.ok(container.resources?.limits?.[r], `limits.${r}`);
  }

  const ann = spec.template.metadata.annotations ?? {};
  assert.equal(ann['prometheus.io/scrape'], 'true');
  assert.equal(Number(ann['prometheus.io/port']), admin);
  assert.equal(ann['prometheus.io/path'], '/metrics');
  // the admin API the ConfigMap asks for is the port the probes and Prometheus use
  assert.equal(Number(toml.admin?.listen_address?.split(':').pop()), admin);

  // the config comes from the ConfigMap, mounted read-only at /etc/lemonade
  assert.equal(mounted.mountPath, '/etc/lemonade');
  assert.equal(pod.volumes?.find((v) => v.name === mounted.volume)?.configMap?.name, configMap.metadata.name);
  assert.ok(configToml.length > 0, `ConfigMap ${configMap.metadata.name} has the key ${mounted.key}`);
});

test('the Service and the PodDisruptionBudget select the Deployment pods; the Service targets the proxy port only', () => {
  const labels = spec.template.metadata.labels;
  const svc = findKind(all, 'Service').spec as { selector: Record<string, string>; ports: { targetPort: string | number }[] };
  const pdb = findKind(all, 'PodDisruptionBudget').spec as { selector: { matchLabels: Record<string, string> } };
  for (const sel of [svc.selector, pdb.selector.matchLabels, spec.selector.matchLabels]) {
    for (const [k, v] of Object.entries(sel)) assert.equal(labels[k], v, `selector ${k}=${v}`);
  }
  assert.deepEqual(svc.ports.map((p) => probePort(container, p.targetPort)), [probePort(container, 'proxy')]);
});

test("the ConfigMap's configuration is valid", async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'config.toml'), configToml);
  const r = await runCli(['lb', '--config', join(dir, 'config.toml'), '--validate']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
});

test('the probes, asked of a balancer whose only backend is down: ready and alive, while /health is 503', async (t) => {
  const dead = await freePort(); // nothing listens there
  const cfg = configToml
    .replace(/^listen_address = "0\.0\.0\.0:8080"/m, 'listen_address = "127.0.0.1:0"')
    .replace(/^listen_address = "0\.0\.0\.0:9090"/m, 'listen_address = "127.0.0.1:0"')
    .replace(/^address = .*$/m, `address = "127.0.0.1:${dead}"\nresolve = "none"`)
    .replace(/^resolve = "dns"$/m, '')
    .replace(/^interval = .*$/m, 'interval = "200ms"');
  const lb = await startBalancer(t, cfg);
  await waitFor(async () => (await lb.admin('/health')).status === 503, 10_000, '/health to say no backend is usable');
  // what the kubelet does: GET the probe's path; 200-399 passes
  for (const probe of [container.readinessProbe!, container.livenessProbe!]) {
    const r = await httpRequest(lb.adminPort, probe.httpGet!.path, { timeoutMs: (probe.timeoutSeconds ?? 1) * 1000 });
    assert.ok(r.status >= 200 && r.status < 400, `${probe.httpGet!.path}: ${r.status}`);
  }
});

test("the seed guide's manifests validate against the schemas", async () => {
  const seed = readManifests(SEED_MANIFESTS);
  assert.deepEqual(seed.map((m) => m.kind), ['Deployment', 'Service', 'ConfigMap']);
  for (const m of seed) assert.equal(await schemaErrors(m), '', `${m.kind} ${m.metadata.name}`);
  const dir = tempDir();
  writeFileSync(join(dir, 'config.toml'), findKind(seed, 'ConfigMap').data!['config.toml']!);
  const r = await runCli(['lb', '--config', join(dir, 'config.toml'), '--validate']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
});
