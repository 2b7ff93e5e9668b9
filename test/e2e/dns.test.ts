// Backends found by DNS: `resolve = "dns"` and `srv` against a real DNS server
// (dnsmasq, test/dnsmasq.ts), records added, removed and the server stopped, SRV ports and
// weights, an operator's action on a parent, worker processes; and a host name without `resolve`
// looked up off the connect path. Backends listen on 127.77.0.x, dnsmasq on 127.77.0.53.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, freePort, requireTool, startBalancer, tempDir, waitFor, type Balancer } from '../helpers';
import { DNSMASQ, startDnsmasq, type Dnsmasq } from '../dnsmasq';
import { parseAndValidate } from '../../src/config/load';
import { endpointsOf, srvTargets, withEndpoints } from '../../src/core/endpoints';

const DNS_IP = '127.77.0.53';

interface Named {
  readonly ip: string;
  readonly name: string;
  close(): Promise<void>;
}

/** A server on ip:port that writes `name\n` to each connection, then echoes what it reads. */
function named(ip: string, port: number, name: string): Promise<Named> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.write(`${name}\n`);
    s.pipe(s);
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, ip, () =>
      resolve({
        ip,
        name,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            srv.close(() => r());
          }),
      }),
    );
  });
}

/** One connection through the balancer: the first line (the backend's name), and the socket, left open. */
function open(port: number, timeoutMs = 3000): Promise<{ name: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const t = setTimeout(() => (s.destroy(), reject(new Error('no answer through the balancer'))), timeoutMs);
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) {
        clearTimeout(t);
        s.removeAllListeners('data');
        resolve({ name: buf.slice(0, i), socket: s });
      }
    });
    s.on('error', (e) => (clearTimeout(t), reject(e)));
    s.on('close', () => (clearTimeout(t), reject(new Error(`closed before a name (got "${buf}")`))));
  });
}

/** The backend names `n` connections reach (each closed after its first line); a failed connection counts as "!". */
async function names(port: number, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    try {
      const c = await open(port);
      c.socket.removeAllListeners('close');
      c.socket.on('error', () => {});
      c.socket.destroy();
      out.push(c.name);
    } catch {
      out.push('!');
    }
  }
  return out;
}

/** The held connection still carries bytes both ways: what is written comes back. */
function echoes(s: net.Socket, text: string, timeoutMs = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    let buf = '';
    const t = setTimeout(() => resolve(false), timeoutMs);
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes(text)) {
        clearTimeout(t);
        resolve(true);
      }
    });
    s.write(text);
  });
}

type Row = { name: string; parent?: string; address: string; state: string; weight: number; active: number };

const rows = (lb: Balancer): Promise<Row[]> => adminJson<Row[]>(lb, '/backends');

function dnsConfig(server: string, backend: string, extra: { runtime?: string; strategy?: string; dns?: string } = {}): string {
  return [
    '[runtime]',
    'drain_timeout_millis = 20000',
    extra.runtime ?? '',
    '[proxy]',
    'listen_address = "127.0.0.1:0"',
    'connect_timeout = "1s"',
    '[strategy]',
    `algorithm = "${extra.strategy ?? 'round_robin'}"`,
    '[health]',
    'interval = "1s"',
    'timeout = "500ms"',
    '[admin]',
    'listen_address = "127.0.0.1:0"',
    '[dns]',
    `servers = ["${server}"]`,
    extra.dns ?? '',
    '[[backends]]',
    backend,
    '',
  ].join('\n');
}

interface Parts {
  dns?: Dnsmasq;
  lb?: Balancer;
  servers: Named[];
}

/** What a test starts, to fill in: dnsmasq and the balancer stopped, the backends closed, whatever the test's outcome. */
function cleanedUp(t: { after(f: () => unknown): void }): Parts {
  const parts: Parts = { servers: [] };
  t.after(async () => {
    await parts.lb?.stop();
    await parts.dns?.stop();
    await Promise.all(parts.servers.map((s) => s.close()));
  });
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Configuration

test('resolve, srv and [dns]: validated with the key and what was expected', () => {
  const base = '[proxy]\nlisten_address = "127.0.0.1:8080"\n';
  const issues = (text: string): string[] => {
    const r = parseAndValidate(text, {});
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.deepEqual(issues(`${base}[[backends]]\nsrv = "_pg._tcp.db.internal"\n`), []);
  assert.deepEqual(issues(`${base}[[backends]]\naddress = "db.internal:5432"\nresolve = "dns"\n`), []);
  assert.match(issues(`${base}[[backends]]\naddress = "db:1"\nsrv = "_pg._tcp.db"\n`).join(), /backends\[0\]\.srv: a backend has either address or srv, not both/);
  assert.match(issues(`${base}[[backends]]\nname = "x"\n`).join(), /backends\[0\]\.address: every backend needs an address "host:port" \(or an SRV name as `srv`\)/);
  assert.match(issues(`${base}[[backends]]\nsrv = "not a name"\n`).join(), /backends\[0\]\.srv: expected an SRV name/);
  assert.match(issues(`${base}[[backends]]\naddress = "db:1"\nresolve = "yes"\n`).join(), /backends\[0\]\.resolve: expected one of "none", "dns"/);
  assert.match(issues(`${base}[dns]\nservers = ["dns.example"]\n[[backends]]\naddress = "db:1"\n`).join(), /dns\.servers: "dns\.example" is not a DNS server address/);
  assert.match(issues(`${base}[dns]\nmin_ttl = "10s"\nmax_ttl = "5s"\n[[backends]]\naddress = "db:1"\n`).join(), /dns\.max_ttl: must be at least min_ttl/);
  const r = parseAndValidate(`${base}[dns]\nservers = ["127.0.0.1", "127.0.0.2:5353", "::1", "[::1]:5353"]\n[[backends]]\naddress = "db:1"\n`, {});
  assert.ok(r.ok);
  assert.deepEqual(r.config.dns.servers, ['127.0.0.1:53', '127.0.0.2:5353', '[::1]:53', '[::1]:5353']);
  assert.deepEqual([r.config.dns.minTtlMs, r.config.dns.maxTtlMs], [1000, 300000]);
});

test('endpoints: one per address named PARENT/IP:PORT, SRV lowest priority with its weights, ids kept by name', () => {
  const r = parseAndValidate('[proxy]\nlisten_address = "127.0.0.1:8080"\n[[backends]]\nname = "db"\nsrv = "_pg._tcp.x"\n[[backends]]\nname = "web"\naddress = "web.x:80"\nresolve = "dns"\n[[backends]]\nname = "h"\naddress = "h.x:81"\n', {});
  assert.ok(r.ok);
  const [db, web] = r.config.backends;
  const ids = new Map<string, number>();
  const idOf = (n: string): number => ids.get(n) ?? (ids.set(n, 100 + ids.size), 100 + ids.size - 1);
  assert.deepEqual(
    endpointsOf(web!, [{ ip: '10.0.0.2' }, { ip: '10.0.0.1' }, { ip: '::1' }], idOf).map((e) => [e.name, e.address, e.parent, e.weight]),
    [
      ['web/10.0.0.1:80', '10.0.0.1:80', 'web', 1],
      ['web/10.0.0.2:80', '10.0.0.2:80', 'web', 1],
      ['web/[::1]:80', '[::1]:80', 'web', 1],
    ],
  );
  // the same name keeps its id whatever the order of the answer
  assert.equal(endpointsOf(web!, [{ ip: '10.0.0.1' }], idOf)[0]!.id, ids.get('web/10.0.0.1:80'));
  const srv = [
    { ip: '10.0.1.1', port: 5432, weight: 30, priority: 10 },
    { ip: '10.0.1.2', port: 6432, weight: 10, priority: 10 },
    { ip: '10.0.1.3', port: 5432, weight: 50, priority: 20 },
  ];
  assert.deepEqual(
    endpointsOf(db!, srv, idOf).map((e) => [e.name, e.weight]),
    [
      ['db/10.0.1.1:5432', 30],
      ['db/10.0.1.2:6432', 10],
    ],
  );
  assert.deepEqual(
    srvTargets([
      { ip: 'a', port: 1, weight: 0, priority: 1 },
      { ip: 'b', port: 1, weight: 0, priority: 1 },
    ]).map((x) => x.weight),
    [1, 1],
  );
  // a host name without resolve keeps its name and address (its figures' key), with its cached addresses
  const expanded = withEndpoints(r.config, new Map([['lookup:h.x', [{ ip: '10.0.2.1' }, { ip: '10.0.2.2' }]]]), (_s, n) => idOf(n));
  const h = expanded.services[0]!.backends.find((b) => b.name === 'h') as unknown as { address: string; host: string; addresses: string[] };
  assert.deepEqual([h.address, h.host, h.addresses], ['h.x:81', 'h.x', ['10.0.2.1', '10.0.2.2']]);
  // before any answer, a discovered backend has no endpoints
  assert.deepEqual(
    expanded.services[0]!.backends.map((b) => b.name),
    ['h'],
  );
});

// ---------------------------------------------------------------------------------------------
// A records against dnsmasq

test('resolve = "dns": records added take traffic, removed ones drain, a stopped DNS server keeps the last answer', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dir = tempDir('lemonade-dns-');
  const port = await freePort();
  const parts = cleanedUp(t);
  for (const i of [1, 2, 3]) parts.servers.push(await named(`127.77.0.${i}`, port, `n${i}`));
  const dns = (parts.dns = await startDnsmasq(dir, DNS_IP, ['127.77.0.1 web.ldns.test', '127.77.0.2 web.ldns.test']));
  const lb = (parts.lb = await startBalancer(dnsConfig(dns.server, `name = "web"\naddress = "web.ldns.test:${port}"\nresolve = "dns"`)));

  // the start waited for the first answer: both endpoints are there, as rows of their own
  const first = await rows(lb);
  assert.deepEqual(
    first.map((r) => [r.name, r.parent, r.address]),
    [
      [`web/127.77.0.1:${port}`, 'web', `127.77.0.1:${port}`],
      [`web/127.77.0.2:${port}`, 'web', `127.77.0.2:${port}`],
    ],
  );
  assert.deepEqual(new Set(await names(lb.port, 4)), new Set(['n1', 'n2']));

  // added: the new address takes connections once its record is out (TTL 1 s, min_ttl 1 s)
  const added = Date.now();
  dns.rewriteHosts(['127.77.0.1 web.ldns.test', '127.77.0.2 web.ldns.test', '127.77.0.3 web.ldns.test']);
  await waitFor(async () => (await names(lb.port, 3)).includes('n3'), 15_000, 'the added address to take a connection', 50);
  const addDelay = Date.now() - added;
  t.diagnostic(`DNS update delay (record added -> endpoint serving): ${addDelay} ms`);
  assert.ok(addDelay < 10_000, `${addDelay} ms`);

  // removed: an open connection through n1 keeps flowing; no new connection goes there
  let held: net.Socket | undefined;
  for (let i = 0; i < 10 && !held; i++) {
    const c = await open(lb.port);
    if (c.name === 'n1') held = c.socket;
    else c.socket.destroy();
  }
  assert.ok(held, 'a connection through n1');
  const removed = Date.now();
  dns.rewriteHosts(['127.77.0.2 web.ldns.test', '127.77.0.3 web.ldns.test']);
  const gone = await waitFor(async () => (await rows(lb)).find((r) => r.name === `web/127.77.0.1:${port}` && r.state === 'draining'), 15_000, 'the removed endpoint to drain');
  t.diagnostic(`DNS update delay (record removed -> endpoint draining): ${Date.now() - removed} ms`);
  assert.equal(gone.parent, 'web');
  assert.equal(gone.active, 1);
  assert.deepEqual(new Set(await names(lb.port, 6)), new Set(['n2', 'n3']));
  assert.ok(await echoes(held, 'still here\n'), 'the draining connection carries bytes');

  // the DNS server stops: the last answer stays, the failure is reported, traffic flows
  await dns.stop();
  await lb.waitForLog((l) => l['msg'] === 'DNS lookup failed: keeping the last answer (2 addresses)', 15_000, 'the lookup failure warning');
  const st = await adminJson<{ dns: { query: string; failures: number; last_error: string | null; addresses: string[] }[] }>(lb, '/status');
  const web = st.dns.find((d) => d.query === 'dns:web.ldns.test')!;
  assert.ok(web.failures >= 1 && web.last_error !== null, JSON.stringify(web));
  assert.deepEqual(web.addresses, ['127.77.0.2', '127.77.0.3']);
  const metrics = (await lb.admin('/metrics')).body;
  assert.match(metrics, /lemonade_dns_lookups_total\{result="failure"\} [1-9]/);
  assert.match(metrics, /lemonade_dns_last_success_timestamp_seconds\{query="dns:web.ldns.test"\} \d/);
  assert.deepEqual(new Set(await names(lb.port, 6)), new Set(['n2', 'n3']));
  assert.ok(await echoes(held, 'and still\n'));
  held.destroy();
});

// ---------------------------------------------------------------------------------------------
// SRV records, and an operator's action on the parent

test('srv: targets, ports and weights from SRV records (lowest priority); drain on the parent holds for later endpoints', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dir = tempDir('lemonade-dns-');
  const [p1, p2] = [await freePort(), await freePort()];
  const parts = cleanedUp(t);
  parts.servers.push(await named('127.77.0.11', p1, 'a'), await named('127.77.0.12', p2, 'b'), await named('127.77.0.13', p1, 'c'), await named('127.77.0.14', p1, 'd'));
  const hosts = ['127.77.0.11 a.ldns.test', '127.77.0.12 b.ldns.test', '127.77.0.13 c.ldns.test', '127.77.0.14 d.ldns.test'];
  // srv-host=NAME,TARGET,PORT,PRIORITY,WEIGHT
  const srv = [`srv-host=_app._tcp.ldns.test,a.ldns.test,${p1},10,30`, `srv-host=_app._tcp.ldns.test,b.ldns.test,${p2},10,10`, `srv-host=_app._tcp.ldns.test,c.ldns.test,${p1},20,50`];
  const dns = (parts.dns = await startDnsmasq(dir, DNS_IP, hosts, srv));
  const lb = (parts.lb = await startBalancer(dnsConfig(dns.server, 'name = "app"\nsrv = "_app._tcp.ldns.test"', { strategy: 'weighted_round_robin' })));

  assert.deepEqual(
    (await rows(lb)).map((r) => [r.name, r.weight]),
    [
      [`app/127.77.0.11:${p1}`, 30],
      [`app/127.77.0.12:${p2}`, 10],
    ],
  );
  const seen = await names(lb.port, 40);
  assert.deepEqual([seen.filter((n) => n === 'a').length, seen.filter((n) => n === 'b').length], [30, 10], seen.join(''));

  // drain the parent: every endpoint drains, and so does one that appears afterwards
  const r = await lb.admin('/backends/app/drain', 'POST');
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(new Set((await rows(lb)).map((x) => x.state)), new Set(['draining']));
  await dns.restart([...srv, `srv-host=_app._tcp.ldns.test,d.ldns.test,${p1},10,10`]);
  const later = await waitFor(async () => (await rows(lb)).find((x) => x.name === `app/127.77.0.14:${p1}`), 15_000, 'the new SRV target');
  assert.equal(later.state, 'draining');
  assert.deepEqual(await names(lb.port, 2), ['!', '!'], 'a drained parent takes no connection');
  assert.equal((await lb.admin('/backends/app/enable', 'POST')).status, 200);
  await waitFor(async () => (await rows(lb)).every((x) => x.state === 'healthy'), 10_000, 'every endpoint enabled');
  assert.deepEqual(new Set(await names(lb.port, 10)), new Set(['a', 'b', 'd']));
});

// ---------------------------------------------------------------------------------------------
// Reloads

test('a reload adds a resolve backend, then moves [dns] servers: endpoints follow, the parent keeps its drain, the generation counts reloads only', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const port = await freePort();
  const parts = cleanedUp(t);
  let other: Dnsmasq | undefined;
  t.after(() => other?.stop());
  for (const i of [31, 32, 33]) parts.servers.push(await named(`127.77.0.${i}`, port, `r${i}`));
  const dns = (parts.dns = await startDnsmasq(tempDir('lemonade-dns-'), DNS_IP, ['127.77.0.31 r.ldns.test']));
  other = await startDnsmasq(tempDir('lemonade-dns-'), '127.77.0.54', ['127.77.0.32 r.ldns.test']);
  const fixed = `name = "fixed"\naddress = "127.77.0.33:${port}"`;
  const withR = `${fixed}\n[[backends]]\nname = "r"\naddress = "r.ldns.test:${port}"\nresolve = "dns"`;
  const lb = (parts.lb = await startBalancer(dnsConfig(dns.server, fixed)));
  const generation = async (): Promise<number> => (await adminJson<{ config: { generation: number } }>(lb, '/status')).config.generation;

  lb.writeConfig(dnsConfig(dns.server, withR));
  await waitFor(async () => (await rows(lb)).some((r) => r.name === `r/127.77.0.31:${port}`), 15_000, 'the added backend\'s endpoint');
  assert.equal(await generation(), 2);
  assert.equal((await lb.admin('/backends/r/drain', 'POST')).status, 200);

  lb.writeConfig(dnsConfig(other.server, withR));
  const moved = await waitFor(async () => {
    const list = await rows(lb);
    return list.some((r) => r.name === `r/127.77.0.32:${port}`) && !list.some((r) => r.name === `r/127.77.0.31:${port}`) ? list : null;
  }, 15_000, 'the endpoint the other DNS server gives');
  assert.equal(moved.find((r) => r.name === `r/127.77.0.32:${port}`)!.state, 'draining', 'the drain on the parent holds over the reload');
  assert.equal(await generation(), 3);
  assert.deepEqual(new Set(await names(lb.port, 4)), new Set(['r33']));
});

// ---------------------------------------------------------------------------------------------
// Worker processes

test('workers = 2: endpoints found by DNS reach the worker processes, added and removed', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dir = tempDir('lemonade-dns-');
  const port = await freePort();
  const parts = cleanedUp(t);
  for (const i of [21, 22]) parts.servers.push(await named(`127.77.0.${i}`, port, `w${i}`));
  const dns = (parts.dns = await startDnsmasq(dir, DNS_IP, ['127.77.0.21 pool.ldns.test']));
  const lb = (parts.lb = await startBalancer(dnsConfig(dns.server, `name = "pool"\naddress = "pool.ldns.test:${port}"\nresolve = "dns"`, { runtime: 'workers = 2' })));
  assert.deepEqual(new Set(await names(lb.port, 6)), new Set(['w21']));
  const added = Date.now();
  dns.rewriteHosts(['127.77.0.21 pool.ldns.test', '127.77.0.22 pool.ldns.test']);
  // both workers serve the new endpoint: enough connections that each worker takes several
  await waitFor(async () => (await names(lb.port, 8)).filter((n) => n === 'w22').length >= 4, 15_000, 'the added address to take connections', 50);
  t.diagnostic(`DNS update delay with workers (record added -> endpoint serving): ${Date.now() - added} ms`);
  dns.rewriteHosts(['127.77.0.22 pool.ldns.test']);
  await waitFor(async () => !(await rows(lb)).some((x) => x.name === `pool/127.77.0.21:${port}`), 15_000, 'the removed endpoint to go');
  assert.deepEqual(new Set(await names(lb.port, 12)), new Set(['w22']));
});

// ---------------------------------------------------------------------------------------------
// A host name without resolve: looked up in the background, not per connection

test('a host-name backend without resolve connects by its cached addresses: no lookup per connection', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('lemonade-dns-');
  const port = await freePort();
  const parts = cleanedUp(t);
  parts.servers.push(await named('127.0.0.1', port, 'local'));
  // counts every dns.lookup the balancer makes for "localhost" (connects by name go through it)
  const count = join(dir, 'lookups');
  const hook = join(dir, 'count-lookups.js');
  writeFileSync(count, '');
  writeFileSync(
    hook,
    `const dns = require('node:dns'); const fs = require('node:fs'); const orig = dns.lookup;
dns.lookup = function (host, ...rest) { if (host === 'localhost') fs.appendFileSync(${JSON.stringify(count)}, 'x'); return orig.call(this, host, ...rest); };\n`,
  );
  const config = dnsConfig('127.0.0.1:53', `name = "local"\naddress = "localhost:${port}"`, { dns: 'min_ttl = "1m"\nmax_ttl = "1m"' }).replace('servers = ["127.0.0.1:53"]', '');
  const lb = (parts.lb = await startBalancer(config.replace('interval = "1s"', 'interval = "1m"'), { env: { NODE_OPTIONS: `--require ${hook}` } }));
  const st = await adminJson<{ dns: { query: string; addresses: string[] | null }[] }>(lb, '/status');
  const entry = st.dns.find((d) => d.query === 'lookup:localhost');
  assert.ok(entry && entry.addresses !== null && entry.addresses.length > 0, JSON.stringify(st.dns));
  const before = readFileSync(count, 'utf8').length;
  assert.deepEqual(new Set(await names(lb.port, 30)), new Set(['local']));
  const after = readFileSync(count, 'utf8').length;
  assert.ok(before >= 1, 'the background lookup went through dns.lookup');
  assert.equal(after - before, 0, `${after - before} lookups for 30 connections`);
  // the row keeps the configured address: the name, not the address it was found at
  assert.deepEqual(
    (await rows(lb)).map((r) => [r.name, r.address, r.parent]),
    [['local', `localhost:${port}`, undefined]],
  );
});

test('a host name without resolve: a connection tries its addresses one after the other, on either relay', { timeout: 60_000 }, async (t) => {
  const dir = tempDir('lemonade-dns-');
  const port = await freePort();
  const parts = cleanedUp(t);
  parts.servers.push(await named('127.77.0.20', port, 'second'));
  // "two.test" gives two addresses: nothing listens on the first (refused at once), the backend on the second
  const hook = join(dir, 'two-addresses.js');
  writeFileSync(
    hook,
    `const dns = require('node:dns'); const orig = dns.lookup;
const all = [{ address: '127.0.0.2', family: 4 }, { address: '127.77.0.20', family: 4 }];
dns.lookup = function (host, opts, cb) {
  if (host !== 'two.test') return orig.apply(this, arguments);
  if (typeof opts === 'function') { cb = opts; opts = {}; }
  process.nextTick(() => (opts && opts.all ? cb(null, all) : cb(null, all[0].address, 4)));
};\n`,
  );
  const config = dnsConfig('127.0.0.1:53', `name = "two"\naddress = "two.test:${port}"`, { dns: 'min_ttl = "1m"\nmax_ttl = "1m"' })
    .replace('servers = ["127.0.0.1:53"]', '')
    .replace('interval = "1s"', 'interval = "1m"');
  for (const relay of ['raw', 'net.Socket'] as const) {
    const lb = (parts.lb = await startBalancer(config, { env: { NODE_OPTIONS: `--require ${hook}`, LEMONADE_LB_NET_SOCKETS: relay === 'net.Socket' ? '1' : undefined } }));
    const started = await lb.waitForLog((l) => l['msg'] === 'lemonade-lb started');
    if (process.env['LEMONADE_TEST_NET_SOCKETS'] !== '1') assert.equal(started['relay'], relay);
    await waitFor(async () => {
      const st = await adminJson<{ dns: { query: string; addresses: string[] | null }[] }>(lb, '/status');
      return st.dns.find((d) => d.query === 'lookup:two.test')?.addresses?.length === 2;
    });
    assert.deepEqual(await names(lb.port, 10), Array(10).fill('second'), relay);
    // the refused first address is not the backend failing: it stays up, with no connect error
    const [row] = await rows(lb);
    assert.equal(row?.state, 'healthy', `${relay}: ${JSON.stringify(row)}`);
    await lb.stop();
    parts.lb = undefined;
  }
});
