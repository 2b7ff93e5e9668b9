// Reading deploy/kubernetes/ (and the seed guide's manifests) for the manifest test and the
// podman kube play test: YAML documents as plain objects, found by kind.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ROOT } from './helpers';

export const KUBE_DIR = join(ROOT, 'deploy', 'kubernetes');
export const SEED_MANIFESTS = join(ROOT, 'test', 'system', 'seed-guide-kubernetes.yaml');

// The shapes the tests read; the schemas themselves are checked by kubernetes-models.
export interface Probe {
  httpGet?: { path: string; port: string | number };
  tcpSocket?: { port: string | number };
  exec?: { command: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
}
export interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: { name: string; value: string }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown>;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}
export interface DeploymentSpec {
  replicas: number;
  selector: { matchLabels: Record<string, string> };
  template: {
    metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
    spec: {
      terminationGracePeriodSeconds?: number;
      securityContext?: Record<string, unknown>;
      containers: Container[];
      volumes?: { name: string; configMap?: { name: string }; hostPath?: { path: string; type?: string } }[];
      hostNetwork?: boolean;
    };
  };
}

/** Every YAML document of a file, as plain objects (a parse error fails loudly, naming the file). */
export function readManifests(file: string): Manifest[] {
  return parseManifests(readFileSync(file, 'utf8'), file);
}

/** Every YAML document of a text; `what` names it in a parse error. */
export function parseManifests(text: string, what: string): Manifest[] {
  const docs = parseAllDocuments(text);
  const out: Manifest[] = [];
  for (const d of Array.isArray(docs) ? docs : [docs]) {
    if (d.errors.length > 0) throw new Error(`${what}: ${d.errors.map((e) => e.message).join('; ')}`);
    const v = d.toJS() as Manifest | null;
    if (v) out.push(v);
  }
  return out;
}

/** The manifests that deploy/kubernetes/kustomization.yaml lists, in its order. */
export function kustomizeResources(): { file: string; manifests: Manifest[] }[] {
  const k = readManifests(join(KUBE_DIR, 'kustomization.yaml'))[0] as unknown as { resources: string[] };
  return k.resources.map((f) => ({ file: f, manifests: readManifests(join(KUBE_DIR, f)) }));
}

export function kubeFiles(): string[] {
  return readdirSync(KUBE_DIR).filter((f) => f.endsWith('.yaml')).sort();
}

export function findKind(ms: Manifest[], kind: string): Manifest {
  const m = ms.find((x) => x.kind === kind);
  if (!m) throw new Error(`no ${kind} among ${ms.map((x) => x.kind).join(', ')}`);
  return m;
}

export function deploymentSpec(m: Manifest): DeploymentSpec {
  return m.spec as unknown as DeploymentSpec;
}

/** A probe's port as a number: a name is looked up among the container's ports, as the kubelet does. */
export function probePort(c: Container, port: string | number): number {
  if (typeof port === 'number') return port;
  const p = c.ports?.find((x) => x.name === port);
  if (!p) throw new Error(`container ${c.name} has no port named ${port}`);
  return p.containerPort;
}

/** The ConfigMap key the balancer reads, from the Deployment's mount and its --config argument. */
export function configKey(d: DeploymentSpec, c: Container): { mountPath: string; key: string; volume: string } {
  const i = c.args?.indexOf('--config') ?? -1;
  const path = i >= 0 ? c.args![i + 1]! : '/etc/lemonade/config.toml';
  const mount = c.volumeMounts?.find((v) => path.startsWith(`${v.mountPath}/`));
  if (!mount) throw new Error(`${path} is on no volume of container ${c.name}`);
  const vol = d.template.spec.volumes?.find((v) => v.name === mount.name);
  if (!vol) throw new Error(`no volume ${mount.name}`);
  return { mountPath: mount.mountPath, key: path.slice(mount.mountPath.length + 1), volume: vol.name };
}
