// The admin API's connection limits against slowloris clients: many connections that send their
// request headers a line a second (never the blank line) hold at most ADMIN_MAX_CONNECTIONS
// descriptors; past the cap the oldest of them is closed at once (and counted), so keepalived's
// GET /health still gets in; each is closed after the headers timeout, checked every second; the
// proxy goes on relaying.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { startBalancer, startEcho, testConfig, tcpExchange, waitFor } from '../helpers';
import { samples } from '../access-log-helpers';
import { ADMIN_HEADERS_TIMEOUT_MS, ADMIN_MAX_CONNECTIONS } from '../../src/admin/server';

const SLOW = 400;

interface Slow {
  readonly socket: net.Socket;
  readonly openedAt: number;
  closedAt: number;
  /** what the server answered before closing, if anything */
  answer: string;
}

/** A connection that sends a request line and then one header line a second, never ending its headers. */
function slowloris(port: number): Promise<Slow> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      const s: Slow = { socket, openedAt: Date.now(), closedAt: 0, answer: '' };
      socket.on('data', (d: Buffer) => (s.answer += d.toString('latin1')));
      socket.on('close', () => (s.closedAt = Date.now()));
      resolve(s);
    });
    socket.on('error', reject);
  });
}

test(`${SLOW} slowloris connections to the admin API: capped at ${ADMIN_MAX_CONNECTIONS}, the oldest closed to let GET /health in, each closed after the headers timeout; the proxy relays`, { timeout: 120_000 }, async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address, name: 'e' }]));
  const fds = (): number => readdirSync(`/proc/${lb.proc.pid!}/fd`).length;
  const fds0 = fds();

  const slow: Slow[] = [];
  t.after(() => {
    for (const s of slow) s.socket.destroy();
  });
  // one header line a second on every connection still open: never idle, never complete
  const drip = setInterval(() => {
    for (const s of slow) if (s.closedAt === 0 && !s.socket.destroyed) s.socket.write('X-Slow: 1\r\n');
  }, 1000);
  t.after(() => clearInterval(drip));
  const started = Date.now();
  for (let i = 0; i < SLOW; i += 50) slow.push(...(await Promise.all(Array.from({ length: 50 }, () => slowloris(lb.adminPort)))));
  const opened = Date.now() - started;

  // past the cap, the oldest were closed as the new ones came: the process holds at most the cap
  const excess = SLOW - ADMIN_MAX_CONNECTIONS;
  await waitFor(() => slow.filter((s) => s.closedAt !== 0).length >= excess, 5000, `${excess} connections closed by the cap`);
  const held = fds() - fds0;
  assert.ok(held <= ADMIN_MAX_CONNECTIONS + 10, `the balancer holds ${held} more descriptors with ${SLOW} slow clients`);
  // keepalived and Prometheus still get in, and the proxy relays
  const health = await lb.admin('/health');
  assert.equal(health.status, 200);
  const r = await tcpExchange(lb.port, 'ping');
  assert.equal(r.data.toString(), 'ping');
  const metrics = (await lb.admin('/metrics')).body;
  const evicted = samples(metrics, 'lemonade_admin_connections_dropped_total').find((x) => x.labels['reason'] === 'evicted')?.value ?? 0;
  assert.ok(evicted >= excess, `lemonade_admin_connections_dropped_total{reason="evicted"} ${evicted}, at least ${excess}`);
  await lb.waitForLog((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('admin API: '), 5000, 'the warning of the cap');

  // the rest: closed by the headers timeout (a 408), not before it, and within a check of it
  await waitFor(() => slow.every((s) => s.closedAt !== 0), ADMIN_HEADERS_TIMEOUT_MS + opened + 5000, 'every slow connection closed');
  const early = slow.filter((s) => s.answer === '');
  const late = slow.filter((s) => s.answer !== '');
  assert.ok(early.length >= excess && late.length > 0, `${early.length} closed by the cap, ${late.length} by the timeout`);
  // the cap closed the oldest, without an answer (the few GET of this test closed a few more)
  for (const s of early) {
    assert.ok(slow.indexOf(s) < excess + 50, `connection #${slow.indexOf(s)} was closed by the cap`);
    assert.ok(s.closedAt - s.openedAt < ADMIN_HEADERS_TIMEOUT_MS - 2000, 'closed by the cap as the new ones came, not by the timeout');
  }
  for (const s of late) {
    const lived = s.closedAt - s.openedAt;
    assert.ok(lived >= ADMIN_HEADERS_TIMEOUT_MS - 1000 && lived <= ADMIN_HEADERS_TIMEOUT_MS + 3000, `a slow connection lived ${lived} ms`);
    assert.match(s.answer, /^HTTP\/1\.1 408 /);
  }
  t.diagnostic(`${SLOW} slow connections opened in ${opened} ms; ${early.length} closed by the cap, ${late.length} after ${Math.min(...late.map((s) => s.closedAt - s.openedAt))}-${Math.max(...late.map((s) => s.closedAt - s.openedAt))} ms; ${held} descriptors held`);
  assert.equal((await lb.admin('/health')).status, 200);
});
