// DNS answers that fail, in part or whole, and answers that must not be taken: an
// SRV backend whose targets' AAAA queries are REFUSED (stock dnsmasq for a name with only an A
// record) at start, at a reload and at runtime (the server turned to REFUSED, then stopped); a
// resolver that never answers AAAA; [dns] family; the balancer's own admin address in an answer;
// [dns] max_endpoints; and the state of endpoints that come and go at TTL 1 staying bounded.
// dnsmasq (test/dnsmasq.ts) on 127.77.2.53; backends on 127.77.2.x and 127.78.x.x.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { adminJson, freePort, requireTool, startBalancer, tempDir, waitFor, type Balancer } from '../helpers';
import { DNSMASQ, startDnsmasq, type Dnsmasq } from '../dnsmasq';

const DNS_IP = '127.77.2.53';

/** A server on ip:port that writes `name\n` to each connection; close() ends every connection. */
function named(ip: string, port: number, name: string): Promise<{ close(cb: () => void): void }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.end(`${name}\n`);
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, ip, () =>
      resolve({
        close: (cb) => {
          for (const s of sockets) s.destroy();
          srv.close(() => cb());
        },
      }),
    );
  });
}

/** The first line a connection through the balancer reads ("!" when none comes). */
function firstLine(port: number, send = '', timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v: string): void => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(buf === '' ? '!' : buf), timeoutMs);
    s.on('connect', () => send !== '' && s.write(send));
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) done(buf.slice(0, i));
    });
    s.on('error', () => done('!'));
    s.on('close', () => done(buf === '' ? '!' : buf));
  });
}

async function lines(port: number, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await firstLine(port));
  return out;
}

type Row = { name: string; parent?: string; address: string; state: string };
type DnsRow = { query: string; addresses: string[] | null; failures: number; last_error: string | null; notes: string[] };
const rows = (lb: Balancer): Promise<Row[]> => adminJson<Row[]>(lb, '/backends');
const dnsRows = async (lb: Balancer): Promise<DnsRow[]> => (await adminJson<{ dns: DnsRow[] }>(lb, '/status')).dns;

function config(server: string, backends: string, o: { dns?: string; runtime?: string; admin?: string; health?: string } = {}): string {
  return [
    '[runtime]',
    o.runtime ?? '',
    '[proxy]',
    'listen_address = "127.0.0.1:0"',
    'connect_timeout = "1s"',
    '[strategy]',
    'algorithm = "round_robin"',
    '[health]',
    o.health ?? 'interval = "1s"\ntimeout = "500ms"',
    '[admin]',
    `listen_address = "${o.admin ?? '127.0.0.1:0'}"`,
    '[dns]',
    `servers = ["${server}"]`,
    'timeout = "300ms"',
    o.dns ?? '',
    backends,
    '',
  ].join('\n');
}

interface Parts {
  dns?: Dnsmasq;
  lb?: Balancer;
  closers: (() => unknown)[];
}

function cleanedUp(t: { after(f: () => unknown): void }): Parts {
  const parts: Parts = { closers: [] };
  t.after(async () => {
    await parts.lb?.stop();
    await parts.dns?.stop();
    for (const c of parts.closers) await c();
  });
  return parts;
}

const alive = (lb: Balancer): boolean => lb.proc.exitCode === null && lb.proc.signalCode === null;

// ---------------------------------------------------------------------------------------------
// SRV targets whose AAAA queries are refused: start, reload, runtime

test('srv: targets whose AAAA is REFUSED come up from their A records, at start and when a reload adds them; the rest of the balancer stays up', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const port = await freePort();
  const parts = cleanedUp(t);
  for (const i of [1, 2, 3]) {
    const s = await named(`127.77.2.${i}`, port, `s${i}`);
    parts.closers.push(() => new Promise<void>((r) => s.close(r)));
  }
  // a.other.test and b.other.test have an A record and nothing else: dnsmasq, which has no
  // upstream for other.test, answers their AAAA queries with REFUSED
  const conf = [`srv-host=_two._tcp.ldns.test,a.other.test,${port}`, `srv-host=_two._tcp.ldns.test,b.other.test,${port}`, 'host-record=a.other.test,127.77.2.1', 'host-record=b.other.test,127.77.2.2'];
  const dns = (parts.dns = await startDnsmasq(tempDir('lemonade-dnsf-'), DNS_IP, [], conf));
  const srv = '[[backends]]\nname = "two"\nsrv = "_two._tcp.ldns.test"';

  // at start: the balancer comes up (it exited 1 on an unhandled rejection) with both endpoints
  const lb = (parts.lb = await startBalancer(config(dns.server, srv)));
  assert.deepEqual(
    (await rows(lb)).map((r) => r.name),
    [`two/127.77.2.1:${port}`, `two/127.77.2.2:${port}`],
  );
  assert.deepEqual(new Set(await lines(lb.port, 4)), new Set(['s1', 's2']));
  const st = (await dnsRows(lb)).find((d) => d.query === 'srv:_two._tcp.ldns.test')!;
  assert.equal(st.failures, 0, JSON.stringify(st));
  assert.match(st.notes.join('\n'), /a\.other\.test AAAA EREFUSED/, JSON.stringify(st));
  assert.match((await lb.admin('/metrics')).body, /lemonade_dns_lookups_total\{result="partial"\} [1-9]/);
  await lb.waitForLog((l) => l['msg'] === 'DNS answer: records not used', 5000, 'the partial answer reported');
  await lb.stop();

  // at a reload: a balancer serving another service takes a service with such a backend
  const fixed = `[[backends]]\nname = "fixed"\naddress = "127.77.2.3:${port}"`;
  const lb2 = (parts.lb = await startBalancer(config(dns.server, fixed)));
  assert.deepEqual(await lines(lb2.port, 2), ['s3', 's3']);
  const svcPort = await freePort();
  lb2.writeConfig(config(dns.server, `${fixed}\n[[services]]\nname = "more"\nlisten_address = "127.0.0.1:${svcPort}"\n[[services.backends]]\nname = "two"\nsrv = "_two._tcp.ldns.test"`));
  await waitFor(async () => (await adminJson<{ config: { generation: number } }>(lb2, '/status')).config.generation === 2, 15_000, 'the reload');
  await waitFor(async () => (await rows(lb2)).filter((r) => r.parent === 'two').length === 2, 15_000, 'the new service\'s endpoints');
  assert.ok(alive(lb2), 'the balancer is up after the reload');
  assert.deepEqual(new Set(await lines(svcPort, 4)), new Set(['s1', 's2']));
  assert.deepEqual(await lines(lb2.port, 2), ['s3', 's3']);
});

test('srv at runtime: the DNS server turned to REFUSED for every target, then stopped: the last answer stays, reported, and the balancer serves on', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const port = await freePort();
  const parts = cleanedUp(t);
  for (const i of [11, 12]) {
    const s = await named(`127.77.2.${i}`, port, `r${i}`);
    parts.closers.push(() => new Promise<void>((r) => s.close(r)));
  }
  const good = [`srv-host=_rt._tcp.ldns.test,a.ldns.test,${port}`, `srv-host=_rt._tcp.ldns.test,b.ldns.test,${port}`];
  const dns = (parts.dns = await startDnsmasq(tempDir('lemonade-dnsf-'), DNS_IP, ['127.77.2.11 a.ldns.test', '127.77.2.12 b.ldns.test'], good));
  const lb = (parts.lb = await startBalancer(config(dns.server, '[[backends]]\nname = "rt"\nsrv = "_rt._tcp.ldns.test"', { runtime: 'workers = 2' })));
  assert.deepEqual(new Set(await lines(lb.port, 6)), new Set(['r11', 'r12']));

  // the targets move to names the server refuses (A and AAAA): the SRV query answers, every
  // target lookup fails
  await dns.restart([`srv-host=_rt._tcp.ldns.test,a.other.test,${port}`, `srv-host=_rt._tcp.ldns.test,b.other.test,${port}`]);
  await lb.waitForLog((l) => l['msg'] === 'DNS lookup failed: keeping the last answer (2 addresses)', 15_000, 'the failed lookup reported');
  const st = (await dnsRows(lb)).find((d) => d.query === 'srv:_rt._tcp.ldns.test')!;
  assert.match(String(st.last_error), /targets failed: a\.other\.test \(A EREFUSED, AAAA EREFUSED\)/, JSON.stringify(st));
  assert.deepEqual(st.addresses, [`127.77.2.11:${port}`, `127.77.2.12:${port}`]);
  assert.ok(alive(lb), 'the balancer is up');
  assert.deepEqual(new Set(await lines(lb.port, 6)), new Set(['r11', 'r12']));

  // stopped: every query times out; the answer stays
  await dns.stop();
  const failures = st.failures;
  await waitFor(async () => ((await dnsRows(lb)).find((d) => d.query === 'srv:_rt._tcp.ldns.test')?.failures ?? 0) > failures + 1, 20_000, 'lookups against the stopped server');
  assert.ok(alive(lb), 'the balancer is up');
  assert.deepEqual(new Set(await lines(lb.port, 6)), new Set(['r11', 'r12']));
  assert.match((await lb.admin('/metrics')).body, /lemonade_workers 2/);
});

// ---------------------------------------------------------------------------------------------
// A resolver that never answers AAAA; [dns] family

/** The name of a DNS question at `off` (no compression in questions), and where it ends. */
function readName(b: Buffer, off: number): { name: string; end: number } {
  const labels: string[] = [];
  while (off < b.length && b[off]! !== 0) {
    const n = b[off]!;
    labels.push(b.toString('latin1', off + 1, off + 1 + n));
    off += 1 + n;
  }
  return { name: labels.join('.').toLowerCase(), end: off + 1 };
}

function encodeName(name: string): Buffer {
  return Buffer.concat([...name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0])]);
}

/**
 * A DNS server on UDP that answers A and SRV questions from `a` and `srv` (TTL 1) and never
 * answers an AAAA question (it counts them): a resolver that drops AAAA queries.
 */
async function aOnlyServer(a: Record<string, string[]>, srv: Record<string, { target: string; port: number }[]>): Promise<{ server: string; aaaa: () => number; close(): Promise<void> }> {
  const sock = dgram.createSocket('udp4');
  let aaaa = 0;
  sock.on('message', (q, rinfo) => {
    if (q.length < 17) return;
    const { name, end } = readName(q, 12);
    const type = q.readUInt16BE(end);
    if (type === 28) {
      aaaa++;
      return; // dropped
    }
    const answers: Buffer[] = [];
    const rr = (rtype: number, rdata: Buffer): Buffer => {
      const h = Buffer.alloc(12);
      h.writeUInt16BE(0xc00c, 0);
      h.writeUInt16BE(rtype, 2);
      h.writeUInt16BE(1, 4);
      h.writeUInt32BE(1, 6);
      h.writeUInt16BE(rdata.length, 10);
      return Buffer.concat([h, rdata]);
    };
    if (type === 1) for (const ip of a[name] ?? []) answers.push(rr(1, Buffer.from(ip.split('.').map(Number))));
    if (type === 33) {
      for (const r of srv[name] ?? []) {
        const head = Buffer.alloc(6);
        head.writeUInt16BE(0, 0);
        head.writeUInt16BE(10, 2);
        head.writeUInt16BE(r.port, 4);
        answers.push(rr(33, Buffer.concat([head, encodeName(r.target)])));
      }
    }
    const known = name in a || name in srv;
    const header = Buffer.alloc(12);
    header.writeUInt16BE(q.readUInt16BE(0), 0);
    header.writeUInt16BE(0x8400 | (q.readUInt16BE(2) & 0x0100) | (known ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    sock.send(Buffer.concat([header, q.subarray(12, end + 4), ...answers]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.77.2.54', r));
  return { server: `127.77.2.54:${sock.address().port}`, aaaa: () => aaaa, close: () => new Promise((r) => sock.close(() => r())) };
}

test('a resolver that never answers AAAA: resolve = "dns" and srv keep the A answer; family = "ipv4" asks no AAAA at all', { timeout: 120_000 }, async (t) => {
  const port = await freePort();
  const parts = cleanedUp(t);
  for (const i of [21, 22, 23]) {
    const s = await named(`127.77.2.${i}`, port, `d${i}`);
    parts.closers.push(() => new Promise<void>((r) => s.close(r)));
  }
  const dns = await aOnlyServer(
    { 'web.drop.test': ['127.77.2.21'], 'x.drop.test': ['127.77.2.22'], 'y.drop.test': ['127.77.2.23'] },
    { '_s._tcp.drop.test': [{ target: 'x.drop.test', port }, { target: 'y.drop.test', port }] },
  );
  parts.closers.push(() => dns.close());
  const backends = `[[backends]]\nname = "web"\naddress = "web.drop.test:${port}"\nresolve = "dns"\n[[backends]]\nname = "s"\nsrv = "_s._tcp.drop.test"`;

  const lb = (parts.lb = await startBalancer(config(dns.server, backends)));
  const want = [`s/127.77.2.22:${port}`, `s/127.77.2.23:${port}`, `web/127.77.2.21:${port}`];
  await waitFor(async () => (await rows(lb)).map((r) => r.name).sort().join() === want.join(), 15_000, 'the endpoints of the A answers');
  assert.deepEqual(new Set(await lines(lb.port, 6)), new Set(['d21', 'd22', 'd23']));
  const web = (await dnsRows(lb)).find((d) => d.query === 'dns:web.drop.test')!;
  assert.deepEqual(web.addresses, ['127.77.2.21']);
  assert.match(web.notes.join('\n'), /AAAA ETIMEOUT: kept what answered/, JSON.stringify(web));
  assert.ok(dns.aaaa() > 0);
  assert.ok(alive(lb));
  await lb.stop();

  // family = "ipv4": A queries only; nothing is left out, nothing reported
  const before = dns.aaaa();
  const lb4 = (parts.lb = await startBalancer(config(dns.server, backends, { dns: 'family = "ipv4"' })));
  await waitFor(async () => (await rows(lb4)).map((r) => r.name).sort().join() === want.join(), 15_000, 'the endpoints');
  for (const d of await dnsRows(lb4)) assert.deepEqual(d.notes, [], JSON.stringify(d));
  assert.doesNotMatch((await lb4.admin('/metrics')).body, /lemonade_dns_lookups_total\{result="partial"\} [1-9]/);
  assert.equal(dns.aaaa(), before, 'no AAAA question asked');
});

// ---------------------------------------------------------------------------------------------
// Answers not taken: the balancer's own address, and past max_endpoints

test('an answer naming the balancer\'s own admin address is refused and reported; max_endpoints bounds one name\'s endpoints', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const adminPort = await freePort();
  const port = await freePort();
  const parts = cleanedUp(t);
  // a backend that happens to listen on the admin port number elsewhere, and the pool's servers
  const other = await named('127.77.2.31', adminPort, 'not-admin');
  parts.closers.push(() => new Promise<void>((r) => other.close(r)));
  for (let i = 40; i < 50; i++) {
    const s = await named(`127.77.2.${i}`, port, `m${i}`);
    parts.closers.push(() => new Promise<void>((r) => s.close(r)));
  }
  const hosts = ['127.0.0.1 evil.ldns.test', '127.77.2.31 evil.ldns.test', ...Array.from({ length: 10 }, (_, i) => `127.77.2.${40 + i} many.ldns.test`)];
  const conf = [`srv-host=_evil._tcp.ldns.test,evil.ldns.test,${adminPort}`];
  const dns = (parts.dns = await startDnsmasq(tempDir('lemonade-dnsf-'), DNS_IP, hosts, conf));
  const backends = [
    `[[backends]]\nname = "evil"\naddress = "evil.ldns.test:${adminPort}"\nresolve = "dns"`,
    '[[backends]]\nname = "evilsrv"\nsrv = "_evil._tcp.ldns.test"',
    `[[backends]]\nname = "many"\naddress = "many.ldns.test:${port}"\nresolve = "dns"\nweight = 0`,
  ].join('\n');
  const lb = (parts.lb = await startBalancer(config(dns.server, backends, { admin: `127.0.0.1:${adminPort}`, dns: 'max_endpoints = 4' })));
  const names = (await rows(lb)).map((r) => r.name);
  assert.ok(!names.some((n) => n.includes(`127.0.0.1:${adminPort}`)), names.join());
  assert.ok(names.includes(`evil/127.77.2.31:${adminPort}`) && names.includes(`evilsrv/127.77.2.31:${adminPort}`), names.join());
  assert.deepEqual(
    names.filter((n) => n.startsWith('many/')),
    [40, 41, 42, 43].map((i) => `many/127.77.2.${i}:${port}`),
  );
  const st = await dnsRows(lb);
  for (const q of ['dns:evil.ldns.test', 'srv:_evil._tcp.ldns.test']) {
    const d = st.find((x) => x.query === q)!;
    assert.match(d.notes.join('\n'), new RegExp(`refused 1 addresses that are the balancer's own listen or admin address: 127\\.0\\.0\\.1:${adminPort}`), JSON.stringify(d));
  }
  assert.match(st.find((x) => x.query === 'dns:many.ldns.test')!.notes.join('\n'), /6 more addresses not used \(\[dns\] max_endpoints = 4\)/);
  assert.ok(lb.logs.some((l) => l['msg'] === 'DNS answer: records not used'));

  // a client through the public port never reaches the admin API: an HTTP request gets the
  // other server's line, never an admin answer
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add(await firstLine(lb.port, 'POST /reload HTTP/1.0\r\n\r\n'));
  assert.deepEqual(seen, new Set(['not-admin']));
  assert.equal((await adminJson<{ config: { generation: number } }>(lb, '/status')).config.generation, 1, 'no reload was made');
});

// ---------------------------------------------------------------------------------------------
// Endpoints that come and go: what they leave is freed

/** The distinct backend label values of the /metrics text. */
function backendLabels(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/backend="([^"]*)"/g)) out.add(m[1]!);
  return out;
}

for (const workers of [1, 2]) {
  test(`addresses changing at TTL 1 (workers = ${workers}): endpoints, their ids and metric series stay bounded by what is live`, { timeout: 180_000 }, async (t) => {
    if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
    const port = await freePort();
    const parts = cleanedUp(t);
    let round = 0;
    // 8 addresses a round, all different from the last round's
    const answer = (): string[] => Array.from({ length: 8 }, (_, i) => `127.78.${round % 250}.${i + 1} churn.ldns.test`);
    const dns = (parts.dns = await startDnsmasq(tempDir('lemonade-dnsf-'), DNS_IP, answer()));
    const lb = (parts.lb = await startBalancer(
      config(dns.server, `[[backends]]\nname = "churn"\naddress = "churn.ldns.test:${port}"\nresolve = "dns"`, { runtime: `workers = ${workers}`, health: 'interval = "200ms"\ntimeout = "200ms"' }),
    ));
    const ROUNDS = 10;
    const everSeen = new Set<string>();
    for (round = 1; round <= ROUNDS; round++) {
      dns.rewriteHosts(answer());
      const want = answer().map((l) => `churn/${l.split(' ')[0]}:${port}`);
      await waitFor(async () => (await rows(lb)).map((r) => r.name).sort().join() === want.sort().join(), 15_000, `round ${round}'s endpoints`);
      // the health checks of these endpoints have run, so their series exist
      await waitFor(async () => {
        const text = (await lb.admin('/metrics')).body;
        return want.every((n) => text.includes(`lemonade_health_checks_total{service="default",backend="${n}"`));
      }, 10_000, `round ${round}'s health-check series`);
      for (const n of want) everSeen.add(n);
    }
    assert.equal(everSeen.size, 8 * ROUNDS);
    const live = new Set((await rows(lb)).map((r) => r.name));
    assert.equal(live.size, 8);
    // every backend label in /metrics is a live endpoint's (none of the 72 gone before)
    const labels = await waitFor(async () => {
      const l = backendLabels((await lb.admin('/metrics')).body);
      return [...l].every((n) => live.has(n)) ? l : null;
    }, 10_000, 'the metric series of the gone endpoints to go').catch(async () => backendLabels((await lb.admin('/metrics')).body));
    assert.deepEqual([...labels].filter((n) => !live.has(n)), [], `${labels.size} backend label values in /metrics for 8 live endpoints`);
    assert.ok(labels.size <= 8, `${labels.size}`);
  });
}

test('a host name without resolve whose addresses are the admin API\'s: refused, and a connect never looks the name up itself (both relays)', { timeout: 60_000 }, async (t) => {
  const parts = cleanedUp(t);
  for (const relay of ['raw', 'net.Socket']) {
    const adminPort = await freePort();
    // "localhost" is in /etc/hosts: the system's lookup gives 127.0.0.1 (and ::1, where nothing listens)
    const cfg = config('127.0.0.1:53', `[[backends]]\nname = "self"\naddress = "localhost:${adminPort}"`, { admin: `127.0.0.1:${adminPort}` }).replace('servers = ["127.0.0.1:53"]', '');
    const lb = (parts.lb = await startBalancer(cfg, { env: relay === 'raw' ? {} : { LEMONADE_LB_NET_SOCKETS: '1' } }));
    const d = (await dnsRows(lb)).find((x) => x.query === 'lookup:localhost')!;
    assert.match(d.notes.join('\n'), new RegExp(`refused 1 addresses that are the balancer's own listen or admin address: 127\\.0\\.0\\.1:${adminPort}`), JSON.stringify(d));
    assert.ok(!(d.addresses ?? []).includes('127.0.0.1'), JSON.stringify(d));
    for (let i = 0; i < 3; i++) {
      const line = await firstLine(lb.port, 'GET /status HTTP/1.0\r\n\r\n');
      assert.doesNotMatch(line, /HTTP/, `${relay}: the admin API answered through the public port`);
    }
    await lb.stop();
  }
});
