// The image built from Dockerfile.lb (scripts/images.sh), run with podman as an operator runs it:
// a read-only root filesystem with no tmpfs, every capability dropped, no new privileges, the
// configuration directory mounted read-only at /etc/lemonade. It must start as its own non-root
// user, serve, pass its own HEALTHCHECK, apply an edit of the mounted file without a restart, and
// on `podman stop` finish a request in flight, refuse new connections, and exit 0.
//
// The backends are `lemonade worker` processes started in the container with `podman exec` (the
// image's own executable, on the container's loopback); the test reaches the container at its
// address on podman's bridge, which exists only on this host.
//
// Run as root: `npm run test:container` (builds the image first; needs podman, buildah, runc,
// debootstrap and the host setup of `scripts/images.sh host-setup`, all done by .ci/run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, waitFor } from '../helpers';
import { IMAGE, get, httpProbe, inspect, must, podmanReady, run, runAsync, uidOf } from './podman';

const NAME = `lemonade-ct-${process.pid}`;

function config(backend: { name: string; port: number }): string {
  return [
    '[runtime]',
    'drain_timeout_millis = 15000',
    'config_watch_interval_millis = 3600000', // no poll: only the file watcher applies an edit
    '[proxy]',
    'listen_address = "0.0.0.0:8080"',
    '[health]',
    'interval = "300ms"',
    '[[backends]]',
    'id = 0',
    `name = "${backend.name}"`,
    `address = "127.0.0.1:${backend.port}"`,
    '',
  ].join('\n');
}

test('the image: non-root on a read-only root, serves, hot-reloads its mounted config, drains on podman stop', async (t) => {
  if (!podmanReady(t)) return;
  const dir = tempDir('lemonade-container-');
  chmodSync(dir, 0o755); // read by the image's user, uid 999
  const file = join(dir, 'config.toml');
  writeFileSync(file, config({ name: 'w1', port: 8081 }), { mode: 0o644 });
  t.after(() => run('podman', ['rm', '-f', '-t', '0', NAME], 60));

  must('podman', [
    'run', '-d', '--name', NAME,
    '--read-only', '--read-only-tmpfs=false', '--cap-drop=all', '--security-opt', 'no-new-privileges',
    '-v', `${dir}:/etc/lemonade:ro`,
    IMAGE,
  ]);
  // the backends: the image's own worker, on the container's loopback (w2 answers after 1.5 s)
  must('podman', ['exec', '-d', NAME, 'lemonade', 'demo-backend', '--listen', '127.0.0.1:8081', '--name', 'w1']);
  must('podman', ['exec', '-d', NAME, 'lemonade', 'demo-backend', '--listen', '127.0.0.1:8082', '--name', 'w2', '--delay', '1500']);
  const ip = inspect(NAME, '{{.NetworkSettings.IPAddress}}');
  assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/, 'the container has an address on podman’s network');
  const pid = Number(inspect(NAME, '{{.State.Pid}}'));

  await t.test('it runs as the image’s user, on a root filesystem it cannot write', () => {
    assert.equal(uidOf(pid), 999);
    assert.equal(inspect(NAME, '{{.HostConfig.ReadonlyRootfs}}'), 'true');
    const w = run('podman', ['exec', NAME, 'sh', '-c', 'echo x > /etc/lemonade-probe'], 30);
    assert.notEqual(w.code, 0);
    assert.match(w.stderr + w.stdout, /Read-only file system/);
  });

  await t.test('it serves, and its HEALTHCHECK (the executable’s own status client) passes', async () => {
    await waitFor(async () => (await get(ip, 8080)).body === 'w1\n', 15_000, 'w1 to answer through the balancer');
    assert.equal(await httpProbe(ip, 9090, '/ready', 2000), 200);
    const hc = run('podman', ['healthcheck', 'run', NAME], 30);
    assert.equal(hc.code, 0, hc.stdout + hc.stderr);
    // the image knows the commit it was built from (the build stage has no .git: a build argument)
    const head = run('git', ['rev-parse', '--short=12', 'HEAD'], 10);
    if (head.code === 0) assert.equal((JSON.parse((await get(ip, 9090, '/version')).body) as { commit: string }).commit, head.stdout.trim());
  });

  await t.test('an edit of the mounted file (saved through a rename) is applied without a restart', async () => {
    const before = JSON.parse((await get(ip, 9090, '/status')).body) as { config: { generation: number } };
    writeFileSync(`${file}.tmp`, config({ name: 'w2', port: 8082 }), { mode: 0o644 });
    renameSync(`${file}.tmp`, file);
    await waitFor(async () => (await get(ip, 8080)).body === 'w2\n', 15_000, 'w2 to answer after the edit');
    const after = JSON.parse((await get(ip, 9090, '/status')).body) as { config: { generation: number } };
    assert.ok(after.config.generation > before.config.generation);
    assert.equal(Number(inspect(NAME, '{{.State.Pid}}')), pid, 'the same process');
  });

  await t.test('podman stop: the request in flight completes, new connections are refused, exit 0', async () => {
    const inFlight = get(ip, 8080, '/slow', 10_000); // w2 answers after 1.5 s
    await waitFor(async () => {
      const s = JSON.parse((await get(ip, 9090, '/status')).body) as { connections: { active: number } };
      return s.connections.active >= 1;
    }, 5000, 'the request to be in flight');
    const t0 = Date.now();
    const stop = runAsync('podman', ['stop', '-t', '30', NAME], 60);
    await waitFor(async () => (await httpProbe(ip, 9090, '/ready', 1000)) === 503, 5000, '/ready to turn 503');
    const fresh = await get(ip, 8080, '/', 2000);
    assert.equal(fresh.status, 0, `a new connection during the drain is not served (${fresh.error ?? fresh.body})`);
    const r = await inFlight;
    assert.equal(r.status, 200);
    assert.equal(r.body, 'w2\n');
    const stopped = await stop;
    const ms = Date.now() - t0;
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(inspect(NAME, '{{.State.ExitCode}}'), '0');
    assert.ok(ms < 10_000, `stopped ${ms} ms after SIGTERM, not at the 30 s timeout`);
    const logs = must('podman', ['logs', NAME]);
    assert.match(logs, /"drained":1,"cut":0/);
    console.log(`container figures: stop took ${ms} ms with one 1.5 s request in flight`);
  });
});
