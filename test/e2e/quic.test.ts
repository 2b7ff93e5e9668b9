// udp_affinity = "quic": real QUIC through lemonade to two real ngtcp2 HTTP/3 servers, each
// serving /who with its own name, so an answer says which backend served it. The QUIC peers run
// in a Debian 13 chroot (scripts/quic-chroot.sh: ngtcp2-client, ngtcp2-server, python3-aioquic;
// it shares the host's network). A client whose NAT rebinds (ngtcp2-client --change-local-addr
// --nat-rebinding: a new port, the same connection ID) and an aioquic client that moves to a new
// address between two requests keep their connection and their backend: the balancer routes by
// the connection ID the backend chose, one flow, one access log line. The same ngtcp2 client
// through nginx's stream module (UDP, round robin) is recorded for comparison: there the new port
// is a new session, sent to the other backend, and the connection breaks. A client that moves
// to a connection ID the backend handed out inside the encrypted stream (ngtcp2's active
// migration) is a new flow: the documented limit.
// Without the chroot, crafted headers from node's dgram: backends that choose IDs of different
// lengths, a move to a denied address, and malformed datagrams of every kind.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { freePort, requireTool, startBalancer, stopProcess, waitFor, type Balancer, type Ends } from '../helpers';

const CHROOT = process.env['LEMONADE_QUIC_CHROOT'] ?? '/var/cache/lemonade-trixie';
const HAVE_CHROOT =
  existsSync(join(CHROOT, 'usr/bin/gtlsclient')) &&
  existsSync(join(CHROOT, 'usr/sbin/gtlsserver')) &&
  existsSync(join(CHROOT, 'usr/lib/python3/dist-packages/aioquic')) &&
  process.getuid?.() === 0;
const CHROOT_TOOL = `the QUIC chroot ${CHROOT} (ngtcp2-client, ngtcp2-server, python3-aioquic; made by scripts/quic-chroot.sh, as root)`;
const OPENSSL = spawnSync('sh', ['-c', 'command -v openssl'], { encoding: 'utf8' }).stdout.trim();
const NGINX = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).stdout.trim();
const STREAM_MODULE = ['/usr/lib/nginx/modules', '/usr/share/nginx/modules'].map((d) => join(d, 'ngx_stream_module.so')).find((p) => existsSync(p)) ?? '';
const NAMES = ['quic1', 'quic2'];

/** A datagram no QUIC version: a server answers it with a Version Negotiation packet (version 0). */
const PROBE = ((): Buffer => {
  const b = Buffer.alloc(1200);
  b[0] = 0xc0;
  b.writeUInt32BE(0x1a2a3a4a, 1);
  b[5] = 8;
  b.fill(1, 6, 14);
  b[14] = 8;
  b.fill(2, 15, 23);
  return b;
})();
/** The same probe as send_expect's escapes write it. */
const PROBE_TEXT = [...PROBE].map((x) => `\\x${x.toString(16).padStart(2, '0')}`).join('');

/** A directory inside the chroot: its path outside and inside; removed when the test ends. */
function workDir(t: Ends): { outer: string; inner: string } {
  const outer = mkdtempSync(join(CHROOT, 'tmp', 'lemonade-quic-'));
  t.after(() => rmSync(outer, { recursive: true, force: true }));
  return { outer, inner: `/tmp/${basename(outer)}` };
}

function versionNegotiation(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 300);
    s.on('message', (m) => done(m.length >= 5 && m.readUInt32BE(1) === 0));
    s.send(PROBE, port, '127.0.0.1');
  });
}

/** Two ngtcp2 HTTP/3 servers, each serving /who with its name; stopped when the test ends. */
async function quicBackends(t: Ends, w: { outer: string; inner: string }): Promise<number[]> {
  const r = spawnSync(OPENSSL, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(w.outer, 'key.pem'), '-out', join(w.outer, 'cert.pem'), '-days', '2', '-subj', '/CN=localhost'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const ports: number[] = [];
  const procs: ChildProcess[] = [];
  t.after(() => Promise.all(procs.map((p) => stopProcess(p))));
  for (const [i, name] of NAMES.entries()) {
    mkdirSync(join(w.outer, `h${i}`));
    writeFileSync(join(w.outer, `h${i}`, 'who'), `${name}\n`);
    const port = await freePort();
    procs.push(spawn('chroot', [CHROOT, 'gtlsserver', '-q', '-d', `${w.inner}/h${i}`, '127.0.0.1', String(port), `${w.inner}/key.pem`, `${w.inner}/cert.pem`], { stdio: 'ignore' }));
    await waitFor(() => versionNegotiation(port), 10_000, `gtlsserver on ${port}`);
    ports.push(port);
  }
  return ports;
}

interface Run {
  code: number | null;
  out: string;
}

/** A command in the chroot, its output (both streams), killed at boundMs. */
function inChroot(args: string[], boundMs: number): Promise<Run> {
  const child = spawn('chroot', [CHROOT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const kill = setTimeout(() => child.kill('SIGKILL'), boundMs);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearTimeout(kill);
      resolve({ code, out });
    }),
  );
}

interface Rebound extends Run {
  /** what /who answered (the backend's name), or null when nothing was downloaded */
  who: string | null;
  /** the client's local ports before and after the rebinding */
  ports: [number, number] | null;
}

/**
 * ngtcp2's client: the handshake, then 300 ms after it a new local port with the same connection
 * ID (a NAT rebinding), then GET /who (delayed to 800 ms) on the rebound path.
 */
async function rebindingGet(w: { outer: string; inner: string }, port: number, tag: string, how: 'nat-rebinding' | 'migration' = 'nat-rebinding'): Promise<Rebound> {
  const dl = `dl-${tag}`;
  mkdirSync(join(w.outer, dl));
  const r = await inChroot(
    ['gtlsclient', '--exit-on-all-streams-close', '--no-quic-dump', '--no-http-dump', `--download=${w.inner}/${dl}`, '--change-local-addr=300ms', ...(how === 'nat-rebinding' ? ['--nat-rebinding'] : []), '--delay-stream=800ms', '--timeout=4s', '127.0.0.1', String(port), `https://localhost:${port}/who`],
    15_000,
  );
  const file = join(w.outer, dl, 'who');
  const who = existsSync(file) ? readFileSync(file, 'utf8').trim() || null : null;
  const first = /Sent packet: local=\[127\.0\.0\.1\]:(\d+)/.exec(r.out);
  const moved = /Local address is now \[127\.0\.0\.1\]:(\d+)/.exec(r.out);
  return { ...r, who, ports: first && moved ? [Number(first[1]), Number(moved[1])] : null };
}

function config(ports: readonly number[], idle = '1500ms'): string {
  return `[proxy]
listen_address = "127.0.0.1:0"
protocol = "udp"
udp_affinity = "quic"
udp_idle_timeout = "${idle}"
[strategy]
algorithm = "round_robin"
[health]
kind = "send_expect"
interval = "1s"
send = '${PROBE_TEXT}'
expect = '\\x00\\x00\\x00\\x00'
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
${ports.map((p, i) => `[[backends]]\nname = "${NAMES[i]}"\naddress = "127.0.0.1:${p}"\n`).join('')}`;
}

const flowLines = (lb: Balancer): Record<string, unknown>[] => lb.logs.filter((l) => typeof l['termination'] === 'string' && 'datagrams_in' in l);

/** The balancer, once both backends pass their health check (a Version Negotiation answer). */
async function balancer(t: Ends, ports: readonly number[]): Promise<Balancer> {
  const lb = await startBalancer(t, config(ports));
  await waitFor(async () => {
    const b = JSON.parse((await lb.admin('/backends')).body) as { state: string; last_check: { ok: boolean } | null }[];
    return b.length === 2 && b.every((x) => x.state === 'healthy' && x.last_check?.ok === true);
  }, 15_000, 'both QUIC backends healthy');
  return lb;
}

test('NAT rebinding (a new port, the same address): the connection keeps its backend through lemonade, one flow', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, CHROOT_TOOL, HAVE_CHROOT)) return;
  if (!requireTool(t, 'openssl', OPENSSL !== '')) return;
  const w = workDir(t);
  const ports = await quicBackends(t, w);
  const lb = await balancer(t, ports);
  const seen: string[] = [];
  // two connections: round robin gives each its own backend, and each keeps it when it rebinds
  for (const tag of ['a', 'b']) {
    const before = flowLines(lb).length;
    const r = await rebindingGet(w, lb.port, tag);
    assert.ok(r.ports !== null, `the client rebound:\n${r.out.slice(-2000)}`);
    assert.notEqual(r.ports[0], r.ports[1], 'a new local port');
    assert.equal(r.code, 0, `gtlsclient through lemonade:\n${r.out.slice(-2000)}`);
    assert.ok(r.who !== null && NAMES.includes(r.who), `answered by ${r.who}`);
    seen.push(r.who);
    // the flow moved with the client: one access log line, from the backend that answered
    const lines = await waitFor(() => (flowLines(lb).length > before ? flowLines(lb).slice(before) : null), 8000, 'the flow ending');
    assert.equal(lines.length, 1, JSON.stringify(lines));
    const l = lines[0]!;
    assert.equal(l['backend'], r.who, JSON.stringify(l));
    assert.equal(l['termination'], 'udp_idle');
    assert.equal(l['client'], `127.0.0.1:${r.ports[0]}`, 'the line names the address that opened the flow');
    assert.ok((l['datagrams_in'] as number) > 3 && (l['datagrams_out'] as number) > 3, JSON.stringify(l));
  }
  assert.deepEqual(new Set(seen), new Set(NAMES), `round robin: ${seen.join(', ')}`);
});

/** aioquic's client: GET /who, then the same connection from a new socket on `moveTo` (a new address and port), GET /who again. */
const MOVING_CLIENT = String.raw`
import asyncio, socket, ssl, sys
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

class Client(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}
        self.bodies = {}

    def quic_event_received(self, event):
        for e in self.h3.handle_event(event):
            if isinstance(e, DataReceived):
                self.bodies[e.stream_id] = self.bodies.get(e.stream_id, b"") + e.data
            if isinstance(e, (DataReceived, HeadersReceived)) and e.stream_ended and e.stream_id in self.waiting:
                self.waiting.pop(e.stream_id).set_result(self.bodies.get(e.stream_id, b""))

    async def get(self, authority, path):
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()), (b":path", path.encode())], end_stream=True)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[sid] = fut
        self.transmit()
        return (await asyncio.wait_for(fut, 5)).decode().strip()

async def main(port, move_to):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE, server_name="localhost")
    async with connect("127.0.0.1", port, configuration=cfg, create_protocol=Client) as c:
        print("before", await c.get("localhost", "/who"), c._transport.get_extra_info("sockname")[0], c._transport.get_extra_info("sockname")[1], flush=True)
        # the same connection, the same connection ID, from another address and port
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::ffff:" + move_to, 0))
        old = c._transport
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: c, sock=s)
        old.close()
        print("after", await c.get("localhost", "/who"), s.getsockname()[0], s.getsockname()[1], flush=True)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
`;

test('a client that moves to a new address and port mid-connection (aioquic) is answered by the same backend', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, CHROOT_TOOL, HAVE_CHROOT)) return;
  if (!requireTool(t, 'openssl', OPENSSL !== '')) return;
  const w = workDir(t);
  writeFileSync(join(w.outer, 'moving.py'), MOVING_CLIENT);
  const ports = await quicBackends(t, w);
  const lb = await balancer(t, ports);
  const r = await inChroot(['python3', `${w.inner}/moving.py`, String(lb.port), '127.0.0.2'], 20_000);
  // before: the socket aioquic bound (on "::", sending from 127.0.0.1); after: the new one on 127.0.0.2
  const before = /^before (\S+) \S+ (\d+)$/m.exec(r.out);
  const after = /^after (\S+) \S*?(127\.0\.0\.2) (\d+)$/m.exec(r.out);
  assert.ok(before !== null, `the first request:\n${r.out.slice(-2000)}`);
  assert.ok(after !== null, `the request from the new address:\n${r.out.slice(-2000)}`);
  assert.equal(r.code, 0, r.out.slice(-2000));
  assert.ok(NAMES.includes(before[1]!));
  assert.equal(after[1], before[1], 'the same backend answered before and after the move');
  const line = await lb.waitForLog((l) => l['termination'] === 'udp_idle' && 'datagrams_in' in l, 8000, 'the flow ending');
  assert.equal(line['backend'], before[1]);
  assert.equal(line['client'], `127.0.0.1:${before[2]}`);
  // one flow: the move is no new one
  assert.equal(flowLines(lb).length, 1, JSON.stringify(flowLines(lb)));
});

test('for the record: nginx stream (UDP, round robin) sends the rebound client to the other backend, and the connection breaks', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, CHROOT_TOOL, HAVE_CHROOT)) return;
  if (!requireTool(t, 'openssl', OPENSSL !== '')) return;
  if (NGINX === '' || STREAM_MODULE === '') {
    t.skip('nginx with its stream module (nginx-light, libnginx-mod-stream) is not installed: nothing to compare with');
    return;
  }
  const w = workDir(t);
  const ports = await quicBackends(t, w);
  const port = await freePort();
  const log = join(w.outer, 'sessions.log');
  const conf = join(w.outer, 'nginx.conf');
  writeFileSync(
    conf,
    `load_module ${STREAM_MODULE};
daemon off;
master_process off;
pid ${join(w.outer, 'nginx.pid')};
error_log ${join(w.outer, 'error.log')} error;
events { worker_connections 64; }
stream {
  log_format q '$remote_port $upstream_addr $upstream_bytes_received';
  access_log ${log} q;
  upstream quic { ${ports.map((p) => `server 127.0.0.1:${p};`).join(' ')} }
  server { listen 127.0.0.1:${port} udp; proxy_pass quic; proxy_timeout 1500ms; }
}
`,
  );
  const nginx = spawn(NGINX, ['-p', w.outer, '-c', conf, '-e', join(w.outer, 'error.log')], { stdio: 'ignore' });
  t.after(() => stopProcess(nginx));
  await waitFor(() => versionNegotiation(port), 10_000, 'nginx on its UDP port');
  // the readiness probes were sessions too: wait for their lines, then count from there
  await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').trim() !== '', 5000, 'the probes logged');
  const probes = readFileSync(log, 'utf8').trim().split('\n').length;
  const r = await rebindingGet(w, port, 'nginx');
  assert.ok(r.ports !== null, `the client rebound:\n${r.out.slice(-2000)}`);
  assert.equal(r.who, null, `no answer after the rebinding:\n${r.out.slice(-1500)}`);
  // two sessions, one per client port, each to its own backend
  const sessions = await waitFor(() => {
    const lines = readFileSync(log, 'utf8').trim().split('\n').slice(probes).map((l) => l.split(' '));
    return lines.length >= 2 ? lines : null;
  }, 8000, 'the two sessions logged');
  const byPort = new Map(sessions.map(([p, up]) => [Number(p), up]));
  assert.ok(byPort.has(r.ports[0]) && byPort.has(r.ports[1]), JSON.stringify(sessions));
  assert.notEqual(byPort.get(r.ports[0]), byPort.get(r.ports[1]), `sessions: ${JSON.stringify(sessions)}`);
});

test('a client that switches to a connection ID the backend handed out encrypted (NEW_CONNECTION_ID, ngtcp2\'s active migration) is routed as a new flow', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, CHROOT_TOOL, HAVE_CHROOT)) return;
  if (!requireTool(t, 'openssl', OPENSSL !== '')) return;
  const w = workDir(t);
  const ports = await quicBackends(t, w);
  const lb = await balancer(t, ports);
  // an active migration: a new port and, as RFC 9000 requires of it, a new connection ID, which
  // the backend sent inside the encrypted stream: the balancer cannot know it
  const r = await rebindingGet(w, lb.port, 'migration', 'migration');
  assert.ok(r.ports !== null, `the client migrated:\n${r.out.slice(-2000)}`);
  assert.match(r.out, /PATH_CHALLENGE/);
  const lines = await waitFor(() => (flowLines(lb).length >= 2 ? flowLines(lb) : null), 10_000, 'two flows');
  assert.equal(lines[0]!['client'], `127.0.0.1:${r.ports[0]}`);
  assert.equal(lines[1]!['client'], `127.0.0.1:${r.ports[1]}`, JSON.stringify(lines));
  // a new flow is picked by the algorithm: round robin's next is the other backend
  assert.notEqual(lines[1]!['backend'], lines[0]!['backend'], JSON.stringify(lines));
});

// ---- crafted QUIC headers (no chroot): backends that choose IDs of different lengths, the
// allow/deny of a moved flow, and datagrams of any bytes thrown at a "quic" socket

/** A long header, version 1, type `type` (0 Initial): first byte, version, DCID, SCID, then `payload`. */
function longPacket(type: number, dcid: Buffer, scid: Buffer, payload: string): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(1);
  return Buffer.concat([Buffer.from([0xc0 | (type << 4)]), v, Buffer.from([dcid.length]), dcid, Buffer.from([scid.length]), scid, Buffer.from(payload)]);
}
const shortPacket = (dcid: Buffer, payload: string): Buffer => Buffer.concat([Buffer.from([0x40]), dcid, Buffer.from(payload)]);

/**
 * A fake QUIC server: it answers a long header with a long header whose SCID is its own ID (of
 * `idLength` bytes, made per client ID), and any other datagram with its name and what it got.
 */
async function fakeBackend(t: Ends, name: string, idLength: number): Promise<number> {
  const s = dgram.createSocket('udp4');
  t.after(() => new Promise<void>((r) => s.close(() => r())));
  s.on('message', (m, r) => {
    if (m.length > 7 && (m[0]! & 0x80) !== 0) {
      const scid = m.subarray(7 + m[5]!, 7 + m[5]! + m[6 + m[5]!]!);
      const mine = Buffer.alloc(idLength, name.charCodeAt(name.length - 1));
      scid.copy(mine, 0, 0, Math.min(scid.length, idLength));
      s.send(longPacket(0, scid, mine, `${name} hello`), r.port, r.address);
    } else s.send(Buffer.from(`${name} got ${m.toString('latin1')}`), r.port, r.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s.address().port;
}

/** A client socket on `address`; `ask` sends one datagram and resolves with the next reply (or null after 1 s). */
async function clientOn(t: Ends, address: string): Promise<{ ask(d: Buffer, port: number): Promise<Buffer | null>; port: number }> {
  const s = dgram.createSocket('udp4');
  t.after(() => new Promise<void>((r) => s.close(() => r())));
  await new Promise<void>((r) => s.bind(0, address, () => r()));
  return {
    port: s.address().port,
    ask: (d, port) =>
      new Promise((resolve) => {
        const timer = setTimeout(() => {
          s.off('message', on);
          resolve(null);
        }, 1000);
        const on = (m: Buffer): void => {
          clearTimeout(timer);
          s.off('message', on);
          resolve(m);
        };
        s.on('message', on);
        s.send(d, port, '127.0.0.1');
      }),
  };
}

function craftedConfig(ports: readonly number[], proxy = ''): string {
  return `[proxy]
listen_address = "127.0.0.1:0"
protocol = "udp"
udp_affinity = "quic"
udp_idle_timeout = "3s"
${proxy}
[strategy]
algorithm = "round_robin"
[health]
kind = "send_expect"
send = "ping"
expect = "got ping"
interval = "1h"
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
${ports.map((p, i) => `[[backends]]\nname = "fake${i + 1}"\naddress = "127.0.0.1:${p}"\n`).join('')}`;
}

/** A handshake from `c`: its Initial, and the ID the backend chose (the SCID of the answer). */
async function handshake(c: { ask(d: Buffer, port: number): Promise<Buffer | null> }, lbPort: number, clientId: string): Promise<{ id: Buffer; who: string }> {
  const a = await c.ask(longPacket(0, Buffer.from('initial!'), Buffer.from(clientId), 'x'.repeat(100)), lbPort);
  assert.ok(a !== null && (a[0]! & 0x80) !== 0, `a long header back: ${a?.toString("hex")}`);
  const at = 7 + a[5]!;
  return { id: Buffer.from(a.subarray(at, at + a[at - 1]!)), who: a.subarray(at + a[at - 1]!).toString().split(' ')[0]! };
}

test('backends choosing IDs of different lengths (8 and 18 bytes): each connection\'s short headers find their backend from any port', { timeout: 30_000 }, async (t) => {
  const ports = [await fakeBackend(t, 'fake1', 8), await fakeBackend(t, 'fake2', 18)];
  const lb = await startBalancer(t, craftedConfig(ports));
  const conns: { id: Buffer; who: string }[] = [];
  for (const cid of ['client-a', 'client-b']) conns.push(await handshake(await clientOn(t, '127.0.0.1'), lb.port, cid));
  assert.deepEqual(conns.map((c) => [c.who, c.id.length]), [['fake1', 8], ['fake2', 18]]);
  for (const c of conns) {
    // a new socket (a new port) and another address: the short header goes by its ID
    for (const from of ['127.0.0.1', '127.0.0.2']) {
      const moved = await clientOn(t, from);
      const reply = await moved.ask(shortPacket(c.id, '1rtt'), lb.port);
      assert.equal(reply?.toString('latin1').split(' ')[0], c.who, `${c.who}'s connection from ${from}:${moved.port}`);
    }
  }
  // a datagram of no known ID from a new port is a new flow, picked by round robin (fake1 next)
  const stranger = await clientOn(t, '127.0.0.1');
  assert.equal((await stranger.ask(shortPacket(Buffer.alloc(18, 0x77), 'who?'), lb.port))?.toString().split(' ')[0], 'fake1');
  const lines = await waitFor(() => (flowLines(lb).length >= 3 ? flowLines(lb) : null), 10_000, 'three flows ending');
  assert.equal(lines.length, 3, 'the moves made no flows of their own');
});

test('a flow does not move to an address the service\'s deny list refuses; its packets from there are dropped', { timeout: 30_000 }, async (t) => {
  const ports = [await fakeBackend(t, 'fake1', 8)];
  const lb = await startBalancer(t, craftedConfig(ports, 'deny = ["127.0.0.3/32"]'));
  const home = await clientOn(t, '127.0.0.1');
  const c = await handshake(home, lb.port, 'client-a');
  const denied = await clientOn(t, '127.0.0.3');
  assert.equal(await denied.ask(shortPacket(c.id, 'from a denied address'), lb.port), null);
  // the flow stayed where it was
  assert.equal((await home.ask(shortPacket(c.id, 'still here'), lb.port))?.toString(), `fake1 got ${shortPacket(c.id, 'still here').toString('latin1')}`);
  const line = await lb.waitForLog((l) => l['termination'] === 'udp_idle' && 'datagrams_in' in l, 10_000, 'the flow ending');
  assert.equal(line['datagrams_dropped'], 1, JSON.stringify(line));
});

test('datagrams of any bytes, QUIC-looking or not, some with a known ID: the balancer keeps routing by ID', { timeout: 60_000 }, async (t) => {
  const ports = [await fakeBackend(t, 'fake1', 8), await fakeBackend(t, 'fake2', 18)];
  const lb = await startBalancer(t, craftedConfig(ports, 'max_connections = 64\nclient_max_connections = 0'));
  const home = await clientOn(t, '127.0.0.1');
  const c = await handshake(home, lb.port, 'client-a');
  const noise = dgram.createSocket('udp4');
  t.after(() => new Promise<void>((r) => noise.close(() => r())));
  await new Promise<void>((r) => noise.bind(0, '127.0.0.1', () => r()));
  const crafted = (i: number): Buffer => {
    const b = Buffer.alloc(1 + (i % 60));
    for (let j = 0; j < b.length; j++) b[j] = (i * 131 + j * 17) & 0xff;
    if (i % 3 === 0) b[0] = 0xc0; // a long header form bit
    if (i % 6 === 0 && b.length > 6) {
      b.writeUInt32BE(i % 12 === 0 ? 1 : 0x6b3343cf, 1);
      b[5] = i & 0xff; // a DCID length, often past the datagram
    }
    if (i % 5 === 0 && b.length > 8) c.id.copy(b, 1); // a known ID at a short header's place
    return b;
  };
  for (let i = 0; i < 3000; i++) {
    noise.send(crafted(i), lb.port, '127.0.0.1');
    if (i % 200 === 0) await new Promise((r) => setImmediate(r));
  }
  // the connection's short header still finds its backend, from the home socket
  const reply = await waitFor(() => home.ask(shortPacket(c.id, 'after the noise'), lb.port), 10_000, 'an answer after the noise');
  assert.match(reply.toString('latin1'), new RegExp(`^${c.who} got `));
  assert.equal(lb.proc.exitCode, null, 'the balancer is running');
});
