// UDP services, the parts of the contract a flow shares with a TCP connection, as a client sees
// them: client_max_connections and client_rate_limit count flows (one access log line per refused
// flow), least_connections counts open flows, a shutdown ends open flows (`shutdown`) and exits 0,
// an http health check on health.port marks a UDP backend down, and the admin API lists a UDP
// service as it does a TCP one. The backends are small dgram servers on 127.78.0.x that answer
// each datagram with their name, except "hold" (never answered) and "slow" (answered late), so a
// flow can be held open waiting for a reply.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import http from 'node:http';
import { adminJson, freePort, startBalancer, waitFor, type Balancer, type Ends } from '../helpers';

interface Backend {
  readonly name: string;
  readonly address: string;
}

/** A UDP backend on 127.78.0.`i`: answers a datagram with its name; "hold" never, "slow" after 500 ms. */
async function udpBackend(t: Ends, i: number): Promise<Backend> {
  const s = dgram.createSocket('udp4');
  const name = `b${i}`;
  s.on('message', (msg, from) => {
    const text = msg.toString();
    if (text === 'hold') return;
    const reply = (): void => s.send(Buffer.from(name), from.port, from.address);
    if (text === 'slow') setTimeout(reply, 500);
    else reply();
  });
  await new Promise<void>((r) => s.bind(0, `127.78.0.${i}`, r));
  t.after(() => new Promise<void>((r) => s.close(() => r())));
  return { name, address: `127.78.0.${i}:${s.address().port}` };
}

/** A client socket bound to `ip`, closed when the test ends. */
async function client(t: Ends, ip = '127.0.0.1'): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, ip, r));
  t.after(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

const clientOf = (s: dgram.Socket): string => `${s.address().address}:${s.address().port}`;

/** Send `text` from `s` to the balancer; the first reply's text, or null after `timeoutMs`. */
function ask(s: dgram.Socket, port: number, text: string, timeoutMs = 1000): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Buffer): void => {
      clearTimeout(timer);
      resolve(m.toString());
    };
    const timer = setTimeout(() => {
      s.off('message', onMsg);
      resolve(null);
    }, timeoutMs);
    s.once('message', onMsg);
    s.send(Buffer.from(text), port, '127.0.0.1', (e) => {
      if (e) {
        clearTimeout(timer);
        reject(e);
      }
    });
  });
}

const accessLines = (lb: Balancer): Record<string, unknown>[] => lb.logs.filter((l) => typeof l['termination'] === 'string' && 'bytes_in' in l);
const linesOf = (lb: Balancer, s: dgram.Socket): Record<string, unknown>[] => accessLines(lb).filter((l) => l['client'] === clientOf(s));

/** A check over UDP the backends pass (a default tcp check would find no TCP listener). */
const HEALTH = 'kind = "send_expect"\nsend = "ping"\nexpect = "b"\ninterval = "10s"';

/** The balancer's file: the default service, UDP, over `backends`. */
/** the flows a test leaves waiting end soon after its stop (else each stop waits for the drain's default) */
const SHORT_DRAIN = 'drain_timeout_millis = 500';

function config(backends: readonly Backend[], proxy: string, opts: { algorithm?: string; health?: string; runtime?: string } = {}): string {
  return `[proxy]
listen_address = "127.0.0.1:0"
protocol = "udp"
${proxy}
[strategy]
algorithm = "${opts.algorithm ?? 'round_robin'}"
[health]
${opts.health ?? HEALTH}
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[runtime]
${opts.runtime ?? SHORT_DRAIN}
${backends.map((b, i) => `[[backends]]\nid = ${i}\nname = "${b.name}"\naddress = "${b.address}"\n`).join('')}`;
}

/**
 * A datagram from a fresh client IP, answered: one listening socket reads in order, so every
 * datagram sent before it has been handled.
 */
async function marker(t: Ends, lb: Balancer, ip: string): Promise<void> {
  assert.equal(await ask(await client(t, ip), lb.port, 'marker'), 'b1');
}

test('client_max_connections = 1: a second concurrent flow from the same IP is refused with one log line; another IP is served', { timeout: 60_000 }, async (t) => {
  const b = [await udpBackend(t, 1)];
  const lb = await startBalancer(t, config(b, 'client_max_connections = 1\nudp_idle_timeout = "30s"'));
  const first = await client(t);
  assert.equal(await ask(first, lb.port, 'q1'), 'b1');
  // the first flow is open (idle 30s): another source port of the same IP is refused, however many datagrams it sends
  const second = await client(t);
  assert.equal(await ask(second, lb.port, 'q2', 800), null);
  assert.equal(await ask(second, lb.port, 'q3', 300), null);
  const refused = await lb.waitForLog((l) => l['client'] === clientOf(second), 5000, 'the refusal of the second flow');
  assert.equal(refused['termination'], 'rejected_client_limit', JSON.stringify(refused));
  // the first flow still works
  assert.equal(await ask(first, lb.port, 'q4'), 'b1');
  // another client IP is served
  const other = await client(t, '127.0.0.2');
  assert.equal(await ask(other, lb.port, 'q5'), 'b1');
  assert.equal(linesOf(lb, second).length, 1, JSON.stringify(linesOf(lb, second)));
  const rows = await adminJson<{ name: string; active: number }[]>(lb, '/backends');
  assert.deepEqual(rows.map((r) => [r.name, r.active]), [['b1', 2]]);
  const metrics = (await lb.admin('/metrics')).body;
  assert.match(metrics, /lemonade_connections_rejected_total\{service="default",reason="client_limit"\} 1\n/);
});

test('client_rate_limit counts new flows: "2/m" serves two of five flows in quick succession, each refused flow one log line', { timeout: 60_000 }, async (t) => {
  const b = [await udpBackend(t, 1)];
  // a bucket of 2 that refills one flow every 30 s: no refill within the test
  const lb = await startBalancer(t, config(b, 'client_rate_limit = "2/m"\nudp_idle_timeout = "30s"'));
  const socks: dgram.Socket[] = [];
  for (let i = 0; i < 5; i++) socks.push(await client(t));
  const answers = await Promise.all(socks.map((s, i) => ask(s, lb.port, `q${i}`, 1000)));
  assert.equal(answers.filter((a) => a === 'b1').length, 2, `answers: ${answers.join(', ')}`);
  assert.equal(answers.filter((a) => a === null).length, 3, `answers: ${answers.join(', ')}`);
  // a refused client sending again is still one line
  for (const [i, s] of socks.entries()) if (answers[i] === null) assert.equal(await ask(s, lb.port, 'again', 200), null);
  await marker(t, lb, '127.0.0.3');
  const refused = socks.filter((_, i) => answers[i] === null);
  await waitFor(() => refused.every((s) => linesOf(lb, s).length === 1) || null, 5000, 'one line per refused flow');
  for (const s of refused) {
    const lines = linesOf(lb, s);
    assert.equal(lines.length, 1, JSON.stringify(lines));
    assert.equal(lines[0]!['termination'], 'rejected_rate_limit');
  }
  // the served flows are open (idle 30s): no line yet
  for (const [i, s] of socks.entries()) if (answers[i] !== null) assert.deepEqual(linesOf(lb, s), []);
  const metrics = (await lb.admin('/metrics')).body;
  assert.match(metrics, /lemonade_connections_rejected_total\{service="default",reason="rate_limit"\} 3\n/);
});

test('least_connections: with one flow held open on a backend, the next flows go to the other', { timeout: 60_000 }, async (t) => {
  const b = [await udpBackend(t, 1), await udpBackend(t, 2)];
  const lb = await startBalancer(t, config(b, 'udp_responses = 1\nudp_idle_timeout = "30s"', { algorithm: 'least_connections' }));
  // "hold" is never answered: with udp_responses = 1 its flow stays open, waiting
  const held = await client(t);
  assert.equal(await ask(held, lb.port, 'hold', 200), null);
  type Row = { name: string; active: number; total: number };
  const rows = await waitFor(async () => {
    const r = await adminJson<Row[]>(lb, '/backends');
    return r.some((x) => x.active === 1) ? r : null;
  }, 5000, 'the held flow open');
  const holder = rows.find((r) => r.active === 1)!.name;
  const other = b.find((x) => x.name !== holder)!.name;
  const answers: (string | null)[] = [];
  for (let i = 0; i < 5; i++) answers.push(await ask(await client(t), lb.port, `q${i}`));
  assert.deepEqual(answers, Array(5).fill(other), `held on ${holder}; answers: ${answers.join(', ')}`);
  const after = await adminJson<Row[]>(lb, '/backends');
  // total counts a flow once its backend has answered (a UDP connect proves nothing): the held flow is active only
  assert.deepEqual(after.map((r) => [r.name, r.active, r.total]).sort(), [[holder, 1, 0], [other, 0, 5]].sort());
});

test('SIGTERM: an idle flow ends at once (shutdown), one waiting gets its late reply, one never answered is cut at the drain deadline; exit 0', { timeout: 60_000 }, async (t) => {
  const b = [await udpBackend(t, 1)];
  const lb = await startBalancer(t, config(b, 'udp_idle_timeout = "30s"', { runtime: 'drain_timeout_millis = 2000' }));
  const idle = await client(t);
  assert.equal(await ask(idle, lb.port, 'ping'), 'b1');
  const held = await client(t);
  assert.equal(await ask(held, lb.port, 'hold', 200), null);
  const slow = await client(t);
  const slowReply = ask(slow, lb.port, 'slow', 5000);
  // the slow flow's datagram reached the balancer (its flow is open) before the signal
  await waitFor(async () => (await adminJson<{ active: number }[]>(lb, '/backends'))[0]!.active === 3 || null, 5000, 'three flows open');
  const signalledAt = Date.now();
  const exitCode = lb.stop('SIGTERM');
  const idleLine = await lb.waitForLog((l) => l['client'] === clientOf(idle), 1500, 'the idle flow ending');
  assert.ok(Date.now() - signalledAt < 1500, 'the idle flow ended before the drain deadline');
  assert.equal(idleLine['termination'], 'shutdown');
  assert.equal(await slowReply, 'b1', 'the late reply reaches the client during the drain');
  assert.equal(await exitCode, 0, lb.stderr());
  assert.ok(Date.now() - signalledAt >= 1900, 'the held flow kept the process until the drain deadline');
  const [heldLine] = linesOf(lb, held);
  assert.equal(heldLine?.['termination'], 'shutdown', JSON.stringify(heldLine));
  assert.equal(heldLine['datagrams_in'], 1);
  assert.equal(heldLine['datagrams_out'], 0);
  const [slowLine] = linesOf(lb, slow);
  assert.equal(slowLine?.['termination'], 'shutdown', JSON.stringify(slowLine));
  assert.equal(slowLine['datagrams_out'], 1);
  assert.ok((slowLine['duration_ms'] as number) < 1500, JSON.stringify(slowLine));
});

test('health kind = "http" on health.port: a UDP backend whose status port answers 503 is marked down and its flows go to the other', { timeout: 60_000 }, async (t) => {
  const b = [await udpBackend(t, 1), await udpBackend(t, 2)];
  const port = await freePort();
  const status = [200, 200];
  for (const i of [0, 1]) {
    const srv = http.createServer((req, res) => res.writeHead(req.url === '/health' ? status[i]! : 404).end());
    await new Promise<void>((r) => srv.listen(port, `127.78.0.${i + 1}`, r));
    t.after(() => new Promise<void>((r) => srv.close(() => r())));
  }
  const lb = await startBalancer(t, config(b, 'udp_responses = 1', { health: `kind = "http"\nport = ${port}\npath = "/health"\ninterval = "200ms"\ntimeout = "500ms"\nunhealthy_threshold = 2\nhealthy_threshold = 1` }));
  type Row = { name: string; state: string; last_check: { ok: boolean; error: string | null } | null };
  await waitFor(async () => (await adminJson<Row[]>(lb, '/backends')).every((r) => r.state === 'healthy' && r.last_check?.ok === true), 10_000, 'both checked healthy');
  const before: (string | null)[] = [];
  for (let i = 0; i < 4; i++) before.push(await ask(await client(t), lb.port, 'q'));
  assert.deepEqual(new Set(before), new Set(['b1', 'b2']), `answers: ${before.join(', ')}`);
  status[0] = 503;
  const down = await waitFor(async () => (await adminJson<Row[]>(lb, '/backends')).find((r) => r.name === 'b1' && r.state === 'unhealthy'), 10_000, 'b1 marked down');
  assert.match(down.last_check?.error ?? '', /503/);
  const during: (string | null)[] = [];
  for (let i = 0; i < 6; i++) during.push(await ask(await client(t), lb.port, 'q'));
  assert.deepEqual(during, Array(6).fill('b2'));
  status[0] = 200;
  await waitFor(async () => (await adminJson<Row[]>(lb, '/backends')).find((r) => r.name === 'b1')?.state === 'healthy' || null, 10_000, 'b1 back up');
  const again: (string | null)[] = [];
  for (let i = 0; i < 4; i++) again.push(await ask(await client(t), lb.port, 'q'));
  assert.ok(again.includes('b1'), `answers: ${again.join(', ')}`);
});

test('the admin API lists a UDP service as a TCP one: /services with its figures, /backends rows with its name, /traffic', { timeout: 60_000 }, async (t) => {
  const b = [await udpBackend(t, 1), await udpBackend(t, 2)];
  const lb = await startBalancer(
    t,
    `[[services]]
name = "dns"
protocol = "udp"
listen_address = "127.0.0.1:0"
udp_responses = 1
deny = ["127.0.0.4/32"]
[services.health]
${HEALTH}
${b.map((x) => `[[services.backends]]\nname = "${x.name}"\naddress = "${x.address}"\n`).join('')}
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[runtime]
${SHORT_DRAIN}
`,
  );
  for (let i = 0; i < 3; i++) assert.ok(['b1', 'b2'].includes((await ask(await client(t), lb.port, 'q')) ?? 'none'));
  const held = await client(t);
  assert.equal(await ask(held, lb.port, 'hold', 200), null);
  const denied = await client(t, '127.0.0.4');
  assert.equal(await ask(denied, lb.port, 'q', 300), null);
  await lb.waitForLog((l) => l['termination'] === 'rejected_acl', 5000, 'the denied flow');
  type Svc = { name: string; listen_address: string; algorithm: string; active: number; total: number; rejected: number; usable: number; backends: number };
  const svc = await waitFor(async () => (await adminJson<Svc[]>(lb, '/services')).find((s) => s.name === 'dns' && s.active === 1) ?? null, 5000, '/services figures');
  // total: the flows a backend answered (the held one is active only), as /backends counts them
  assert.equal(svc.total, 3);
  assert.equal(svc.listen_address, `127.0.0.1:${lb.port}`);
  assert.equal(svc.rejected, 1);
  assert.equal(svc.usable, 2);
  assert.equal(svc.backends, 2);
  const rows = await adminJson<{ service: string; name: string; active: number; total: number }[]>(lb, '/backends');
  assert.deepEqual(rows.map((r) => [r.service, r.name]), [['dns', 'b1'], ['dns', 'b2']]);
  assert.equal(rows.reduce((n, r) => n + r.active, 0), 1);
  assert.equal(rows.reduce((n, r) => n + r.total, 0), 3);
  const status = await adminJson<{ services: Svc[] }>(lb, '/status');
  assert.deepEqual(status.services.map((s) => s.name), ['dns']);
  // /traffic: once the service has a point (the first is the baseline), three more flows that
  // end are counted in its points; the refusal is a non-clean termination
  type Traffic = { services: { name: string; points: (number | null)[][] }[]; terminations: { service: string; termination: string; client: string | null }[] };
  await waitFor(async () => ((await adminJson<Traffic>(lb, '/traffic')).services.find((s) => s.name === 'dns')?.points.length ?? 0) > 0 || null, 5000, 'a /traffic point');
  for (let i = 0; i < 3; i++) assert.ok(['b1', 'b2'].includes((await ask(await client(t), lb.port, 'q')) ?? 'none'));
  const traffic = await waitFor(async () => {
    const tr = await adminJson<Traffic>(lb, '/traffic');
    const pts = tr.services.find((s) => s.name === 'dns')?.points ?? [];
    return pts.reduce((n, p) => n + (p[1] as number), 0) >= 3 ? tr : null;
  }, 8000, '/traffic counting the ended flows');
  assert.deepEqual(traffic.services.map((s) => s.name), ['dns']);
  const refusal = traffic.terminations.find((x) => x.termination === 'rejected_acl');
  assert.equal(refusal?.service, 'dns', JSON.stringify(traffic.terminations));
  assert.match(String(refusal?.client), /^127\.0\.0\.4/);
});
