// Socket activation (systemd-socket-activate stands in for systemd): the passed socket is the
// .socket unit's, so a reload that would move its address fails whole and keeps serving it; more
// proxy sockets than one listen_address can serve is a start error naming them, never a silent
// loss of all but the first.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, httpRequest, requireTool, SOCKET_ACTIVATE, socketActivated, startNamed, tcpExchange, tempDir, testConfig, waitFor } from '../helpers';


test('a reload changing listen_address under socket activation fails whole: the socket unit owns the address, the socket is kept', async (t) => {
  if (!requireTool(t, 'systemd-socket-activate (package systemd)', SOCKET_ACTIVATE !== '')) return;
  const srv = await startNamed(t, 'n1');
  const [port, adminPort, other] = [await freePort(), await freePort(), await freePort()];
  const dir = tempDir();
  const conf = join(dir, 'config.toml');
  const config = (listen: number, max = 1000): string =>
    testConfig([{ address: srv.address, name: 'n1' }], { proxy: `max_connections = ${max}`, runtime: 'config_watch_interval_millis = 60000' })
      .replace('"127.0.0.1:0"', `"127.0.0.1:${listen}"`)
      .replace('"127.0.0.1:0"', `"127.0.0.1:${adminPort}"`);
  writeFileSync(conf, config(port));
  const { proc, stderr, exited } = await socketActivated(t, [port], conf);
  assert.equal((await tcpExchange(port, '')).data.toString().trim(), 'n1', 'the first connection starts the balancer');
  await waitFor(async () => (await httpRequest(adminPort, '/status').catch(() => null))?.status === 200, 10_000, 'the admin API');

  writeFileSync(conf, config(other));
  const r = await httpRequest(adminPort, '/reload', { method: 'POST' });
  assert.equal(r.status, 422, r.body);
  assert.match(r.body, /serves the socket systemd passed \(127\.0\.0\.1:\d+\): the \.socket unit owns that address/);
  const st = JSON.parse((await httpRequest(adminPort, '/status')).body) as { listen_address: string; config: { generation: number } };
  assert.equal(st.listen_address, `127.0.0.1:${port}`);
  assert.equal(st.config.generation, 1);
  assert.equal((await tcpExchange(port, '')).data.toString().trim(), 'n1', 'the passed socket still serves');
  // any other change applies as usual
  writeFileSync(conf, config(port, 999));
  assert.equal((await httpRequest(adminPort, '/reload', { method: 'POST' })).status, 200);
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, stderr());
});

test('a passed socket that matches no service is a start error naming its address', async (t) => {
  if (!requireTool(t, 'systemd-socket-activate (package systemd)', SOCKET_ACTIVATE !== '')) return;
  const srv = await startNamed(t, 'n1');
  const [p1, p2, adminPort] = [await freePort(), await freePort(), await freePort()];
  const conf = join(tempDir(), 'config.toml');
  writeFileSync(conf, testConfig([{ address: srv.address, name: 'n1' }]).replace('"127.0.0.1:0"', `"127.0.0.1:${p1}"`).replace('"127.0.0.1:0"', `"127.0.0.1:${adminPort}"`));
  const { stderr } = await socketActivated(t, [p1, p2], conf);
  // the first connection starts the balancer, which refuses to run
  await tcpExchange(p1, '', { timeoutMs: 5000 }).catch(() => null);
  await waitFor(() => /LEMONADE|cannot listen/.test(stderr()), 10_000, 'the start error');
  assert.match(stderr(), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${p2} \\(proxy\\): systemd passed this socket but no service has it as listen_address \\(services: default=127\\.0\\.0\\.1:${p1}\\)`));
});
