// Helpers of the access log tests: the log file's lines, a connection held open or reset through
// the proxy, the backends that end a connection each their own way, and a counter's samples.

import net from 'node:net';
import { readFileSync, existsSync } from 'node:fs';
import { freePort, startBalancer, startEcho, waitFor, startTcpServer, type Balancer, type TestServer } from './helpers';
import { servicesFile } from './services-helpers';

export type Line = Record<string, unknown>;

/** The JSON lines of a file ([] when it does not exist yet). */
export function jsonLines(path: string): Line[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Line);
}

/** Wait until `path` holds a line that passes `pred`; resolves with it. */
export function waitLine(path: string, pred: (l: Line) => boolean, what: string, timeoutMs = 10_000): Promise<Line> {
  return waitFor(() => jsonLines(path).find(pred), timeoutMs, `an access log line: ${what}`);
}

/** Wait until `path` holds at least `n` lines; resolves with them. */
export function waitLines(path: string, n: number, timeoutMs = 20_000): Promise<Line[]> {
  return waitFor(
    () => {
      const l = jsonLines(path);
      return l.length >= n ? l : null;
    },
    timeoutMs,
    `${n} access log lines in ${path}`,
  );
}

/**
 * A connection through the proxy, connected (its local port is the log's client port). It
 * answers the proxy's end with its own at once, and swallows errors once connected.
 */
export function open(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => {
      s.off('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
    s.on('error', reject);
    s.on('end', () => s.end());
  });
}

/** Resolves once the socket is closed (it is read to its end). */
export function closed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    s.resume();
    if (s.destroyed && s.closed) resolve();
    else s.once('close', () => resolve());
  });
}

/**
 * The host's connection tracking, for a failure's message: a full table drops new SYNs, so that
 * connects time out and health checks fail ('' where the kernel tracks nothing).
 */
function conntrack(): string {
  try {
    const read = (f: string): string => readFileSync(`/proc/sys/net/netfilter/${f}`, 'utf8').trim();
    return `; nf_conntrack holds ${read('nf_conntrack_count')} of ${read('nf_conntrack_max')} entries`;
  } catch {
    return '';
  }
}

/**
 * Send `data`, read until the peer echoed `data.length` bytes back. A connection that ends first
 * fails at once, naming the client's port (its access log line says why the proxy closed it).
 */
export async function roundTrip(s: net.Socket, data: Buffer): Promise<void> {
  let got = 0;
  const port = s.localPort;
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(t);
      s.off('data', onData);
      s.off('end', onEnd);
      s.off('close', onEnd);
      if (err) reject(err);
      else resolve();
    };
    const t = setTimeout(() => done(new Error(`echo: ${got} of ${data.length} bytes after 10 s (client port ${port}${conntrack()})`)), 10_000);
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got >= data.length) done();
    };
    const onEnd = (): void => done(new Error(`echo: ${got} of ${data.length} bytes, then the connection was closed (client port ${port}${conntrack()})`));
    s.on('data', onData);
    s.once('end', onEnd);
    s.once('close', onEnd);
    s.write(data);
  });
}

/** A backend that writes `greeting` and closes its side at once (the backend ends first). */
export function startGreeter(greeting: string): Promise<TestServer> {
  return startTcpServer((s) => {
    s.on('data', () => {});
    s.end(greeting);
  });
}

/** A backend that resets the connection when the first bytes arrive. */
export function startResetter(): Promise<TestServer> {
  return startTcpServer((s) => s.once('data', () => s.resetAndDestroy()));
}

/** A backend that accepts and says nothing, ever. */
export function startSilent(): Promise<TestServer> {
  return startTcpServer((s) => s.on('data', () => {}));
}

/** The samples of one metric family from /metrics text, with their labels. */
export function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const p of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[p[1]!] = p[2]!;
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

/** lemonade_connection_terminations_total of one service and termination. */
export async function terminations(lb: Balancer, service: string, termination: string): Promise<number> {
  const m = await lb.admin('/metrics');
  return samples(m.body, 'lemonade_connection_terminations_total').find((x) => x.labels['service'] === service && x.labels['termination'] === termination)?.value ?? 0;
}

/** The [access_log] table: on, to `path`, with more TOML lines. */
export function accessLogTable(path: string, more: readonly string[] = []): string {
  return ['[access_log]', 'enabled = true', `path = "${path}"`, ...more, ''].join('\n');
}

/** One connection through the proxy: `data` echoed back, then the client closes first. Resolves with its port once closed. */
export async function exchange(port: number, data = 'ping'): Promise<number> {
  const s = await open(port);
  const p = s.localPort!;
  await roundTrip(s, Buffer.from(data));
  s.end();
  await closed(s);
  return p;
}

/**
 * An echo backend behind a balancer of one service "echo" (backend "echo-1") on `port`, the file
 * ending with `tail` (its [access_log] table); both are stopped when the test ends.
 */
export async function echoBalancer(
  t: { after(f: () => unknown): void },
  tail: (port: number, echo: TestServer) => string,
  runtime?: readonly string[],
): Promise<{ lb: Balancer; port: number; echo: TestServer; file: (tail: string) => string }> {
  const echo = await startEcho();
  t.after(() => echo.close());
  const port = await freePort();
  const file = (end: string): string => servicesFile({ ...(runtime ? { runtime } : {}), services: [{ name: 'echo', port, backends: [{ name: 'echo-1', address: echo.address }] }] }) + end;
  const lb = await startBalancer(file(tail(port, echo)));
  t.after(() => lb.stop());
  return { lb, port, echo, file };
}
