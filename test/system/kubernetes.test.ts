// deploy/kubernetes/ run with `podman kube play` (one replica), and the seed guide's manifests
// run with the same image. podman is not a kubelet; what the test adapts, and why:
//   - replicas: 1. podman starts every replica, each publishing the same host ports.
//   - the container ports are left out: podman publishes every containerPort on all the host's
//     addresses (a kubelet publishes none); the test reaches the pod at its own address on
//     podman's bridge, as a kubelet's probes and a Service do.
//   - the name gets the test's pid, so that a run never meets another's pod.
//   - deploy/kubernetes only: the ConfigMap volume becomes a hostPath directory laid out as the
//     kubelet writes a ConfigMap (a timestamped directory, the `..data` link to it, `config.toml`
//     linking through `..data`); podman mounts a ConfigMap as plain files and never updates them.
//     The ConfigMap's own TOML goes there, its DNS backend replaced by two `lemonade worker`
//     containers added to the pod (the image's own executable, on the pod's loopback), its
//     health interval shortened, and its poll (config_watch_interval_millis) set to an hour so
//     that only the file watcher can apply the swap.
//   - podman ignores terminationGracePeriodSeconds and preStop (it stops after 10 s): the test
//     stops the balancer's container with the grace period as podman's timeout.
// The probes are made as the kubelet makes them: an HTTP GET (200-399 passes) or a TCP connect
// from outside the container, on the port the manifest names. podman's own conversion of probes
// runs curl or nc inside the container, which the image does not carry (docs/containers.md).
//
// Run as root: `npm run test:kubernetes` (builds the image first; .ci/run installs podman,
// buildah, runc, catatonit and debootstrap and runs `scripts/images.sh host-setup`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { tempDir, waitFor } from '../helpers';
import { configKey, deploymentSpec, findKind, KUBE_DIR, probePort, readManifests, SEED_MANIFESTS, type Container, type Manifest } from '../kubernetes-helpers';
import { VERSION, get, httpProbe, inspect, must, podmanReady, run, runAsync, tcpProbe, uidOf } from './podman';

/** The adaptations every play needs (see the top of the file): one replica, no published ports, our name. */
function forPodman(deployment: Manifest, name: string): Manifest {
  const d = structuredClone(deployment);
  d.metadata.name = name;
  const spec = deploymentSpec(d);
  spec.replicas = 1;
  for (const c of spec.template.spec.containers) delete c.ports;
  return d;
}

/** A directory as the kubelet writes a ConfigMap volume; swap() replaces its content atomically. */
class KubeletConfigMapDir {
  private n = 0;
  private current = '';
  constructor(readonly dir: string) {
    chmodSync(dir, 0o755);
  }
  /** Write the files into a new timestamped directory, then rename a `..data` link over the old one. */
  swap(files: Record<string, string>): void {
    const ts = `..${new Date().toISOString().replace(/[-:.TZ]/g, '_')}${++this.n}`;
    mkdirSync(join(this.dir, ts), { mode: 0o755 });
    for (const [k, v] of Object.entries(files)) writeFileSync(join(this.dir, ts, k), v, { mode: 0o644 });
    symlinkSync(ts, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    for (const k of Object.keys(files)) {
      if (!readdirSync(this.dir).includes(k)) symlinkSync(join('..data', k), join(this.dir, k));
    }
    if (this.current) rmSync(join(this.dir, this.current), { recursive: true });
    this.current = ts;
  }
}

interface Played {
  pod: string;
  container: string;
  ip: string;
}

/** `podman kube play` of the YAML; the pod, its balancer container and the pod's address. */
function play(t: { after(f: () => unknown): void }, docs: Manifest[], name: string, containerName: string): Played {
  const dir = tempDir('lemonade-kube-');
  const file = join(dir, 'play.yaml');
  writeFileSync(file, docs.map((d) => stringify(d)).join('---\n'));
  const pod = `${name}-pod-0`;
  t.after(() => run('podman', ['pod', 'rm', '-f', '-t', '0', pod], 60));
  must('podman', ['kube', 'play', '--quiet', file], 120);
  const infra = inspect(pod, '{{.InfraContainerID}}');
  const ip = inspect(infra, '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}').split(' ')[0]!;
  assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/, 'the pod has an address on podman’s network');
  return { pod, container: `${pod}-${containerName}`, ip };
}

function worker(name: string, port: number, lb: Container, extra: string[] = []): Container {
  return {
    name,
    image: lb.image,
    command: ['lemonade', 'demo-backend', '--listen', `127.0.0.1:${port}`, '--name', name, ...extra],
    ...(lb.securityContext ? { securityContext: lb.securityContext } : {}),
  };
}

test('deploy/kubernetes with podman kube play: serves, passes its probes, applies a ..data swap in place, stops within its grace period', async (t) => {
  if (!podmanReady(t)) return;
  const docs = [...readManifests(join(KUBE_DIR, 'configmap.yaml')), ...readManifests(join(KUBE_DIR, 'deployment.yaml'))];
  const original = findKind(docs, 'Deployment');
  const lb0 = deploymentSpec(original).template.spec.containers[0]!;
  assert.equal(lb0.image, `lemonade-lb:${VERSION}`, 'the manifest names the image scripts/images.sh tags');
  const cm = findKind(docs, 'ConfigMap');
  const key = configKey(deploymentSpec(original), lb0);
  const toml = (backend: string, port: number): string =>
    cm.data![key.key]!.replace(/^address = .*\nresolve = "dns"$/m, `address = "127.0.0.1:${port}"`).replace(/^name = "app"$/m, `name = "${backend}"`).replace(/^interval = .*$/m, 'interval = "300ms"')
      // no poll during the test: only the file watcher can see the swap
      .replace(/^config_watch_interval_millis = \d+/m, 'config_watch_interval_millis = 3600000');
  assert.match(toml('w1', 8081), /config_watch_interval_millis = 3600000/);
  assert.match(toml('w1', 8081), /address = "127\.0\.0\.1:8081"/, 'the ConfigMap still has one DNS backend to replace');

  // the kubelet-style directory in place of the ConfigMap volume, and the two backends
  const cmDir = new KubeletConfigMapDir(tempDir('lemonade-configmap-'));
  cmDir.swap({ [key.key]: toml('w1', 8081) });
  const name = `lemonade-kt-${process.pid}`;
  const d = forPodman(original, name);
  const pod = deploymentSpec(d).template.spec;
  pod.volumes = pod.volumes!.map((v) => (v.name === key.volume ? { name: v.name, hostPath: { path: cmDir.dir, type: 'Directory' } } : v));
  pod.containers.push(worker('w1', 8081, lb0), worker('w2', 8082, lb0, ['--delay', '1500'])); // w2 answers after 1.5 s
  const p = play(t, [cm, d], name, lb0.name);
  const admin = probePort(lb0, 'admin');
  const proxy = probePort(lb0, 'proxy');

  await t.test('the pod serves, as uid 999 on a read-only root', async () => {
    await waitFor(async () => (await get(p.ip, proxy)).body === 'w1\n', 20_000, 'w1 to answer through the balancer');
    assert.equal(uidOf(Number(inspect(p.container, '{{.State.Pid}}'))), 999);
    assert.equal(inspect(p.container, '{{.HostConfig.ReadonlyRootfs}}'), 'true');
  });

  await t.test('the readiness and liveness probes pass', async () => {
    for (const probe of [lb0.readinessProbe!, lb0.livenessProbe!]) {
      const status = await httpProbe(p.ip, probePort(lb0, probe.httpGet!.port), probe.httpGet!.path, (probe.timeoutSeconds ?? 1) * 1000);
      assert.ok(status >= 200 && status < 400, `${probe.httpGet!.path}: ${status}`);
    }
  });

  await t.test('a ..data swap (a ConfigMap update as the kubelet writes it) is applied without a restart', async () => {
    const pid = inspect(p.container, '{{.State.Pid}}');
    const generation = async (): Promise<number> => (JSON.parse((await get(p.ip, admin, '/status')).body) as { config: { generation: number } }).config.generation;
    const before = await generation();
    const t0 = Date.now();
    cmDir.swap({ [key.key]: toml('w2', 8082) });
    await waitFor(async () => (await generation()) > before, 15_000, 'the swap to be applied (/status config.generation)');
    console.log(`kubernetes figures: ..data swap applied in ${Date.now() - t0} ms`);
    await waitFor(async () => (await get(p.ip, proxy)).body === 'w2\n', 15_000, 'w2 to answer after the swap');
    assert.equal(inspect(p.container, '{{.State.Pid}}'), pid, 'the same process');
    assert.equal(inspect(p.container, '{{.RestartCount}}'), '0');
  });

  await t.test('the pod stops gracefully within its grace period', async () => {
    // podman ignores terminationGracePeriodSeconds (it stops after 10 s): the test passes it
    const grace = deploymentSpec(original).template.spec.terminationGracePeriodSeconds!;
    const inFlight = get(p.ip, proxy, '/slow', 10_000); // w2 answers after 1.5 s
    await waitFor(async () => {
      const s = JSON.parse((await get(p.ip, admin, '/status')).body) as { connections: { active: number } };
      return s.connections.active >= 1;
    }, 5000, 'the request to be in flight');
    const t0 = Date.now();
    const stopping = runAsync('podman', ['stop', '-t', String(grace), p.container], grace + 30);
    await waitFor(async () => (await httpProbe(p.ip, admin, lb0.readinessProbe!.httpGet!.path, 1000)) === 503, 5000, 'readiness to fail during the drain');
    assert.deepEqual(await inFlight, { status: 200, body: 'w2\n' }, 'the request in flight completes');
    const stopped = await stopping;
    const ms = Date.now() - t0;
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(inspect(p.container, '{{.State.ExitCode}}'), '0');
    assert.ok(ms < grace * 1000, `stopped in ${ms} ms, within the ${grace} s grace period`);
    assert.match(must('podman', ['logs', p.container]), /"drained":1,"cut":0/);
    console.log(`kubernetes figures: stop took ${ms} ms (grace ${grace} s)`);
  });
});

test("the seed guide's deployment.yaml and configmap.yaml run with the image", async (t) => {
  if (!podmanReady(t)) return;
  const seed = readManifests(SEED_MANIFESTS);
  const original = findKind(seed, 'Deployment');
  const c0 = deploymentSpec(original).template.spec.containers[0]!;
  assert.equal(c0.image, 'lemonade-lb:latest');
  const name = `lemonade-seed-${process.pid}`;
  const p = play(t, [findKind(seed, 'ConfigMap'), forPodman(original, name)], name, c0.name);

  await t.test('it starts as the image’s user with the ConfigMap’s configuration', async () => {
    const status = await waitFor(async () => {
      const r = await get(p.ip, 9090, '/status');
      return r.status === 200 ? (JSON.parse(r.body) as { config: { path: string }; backends: { name: string }[] }) : null;
    }, 20_000, 'the admin API (the image sets 0.0.0.0:9090)');
    assert.equal(status.config.path, '/etc/lemonade/config.toml');
    assert.deepEqual(status.backends.map((b) => b.name), ['backend-1', 'backend-2']);
    assert.equal(uidOf(Number(inspect(p.container, '{{.State.Pid}}'))), 999);
  });

  await t.test('its TCP liveness and readiness probes pass', async () => {
    for (const probe of [c0.livenessProbe!, c0.readinessProbe!]) {
      assert.ok(await tcpProbe(p.ip, probePort(c0, probe.tcpSocket!.port), (probe.timeoutSeconds ?? 1) * 1000));
    }
  });

  await t.test('it stops gracefully within the default grace period (30 s)', async () => {
    const t0 = Date.now();
    const stopped = await runAsync('podman', ['stop', '-t', '30', p.container], 60);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(inspect(p.container, '{{.State.ExitCode}}'), '0');
    assert.ok(Date.now() - t0 < 30_000);
  });
});
