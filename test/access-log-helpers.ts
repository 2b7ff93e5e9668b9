// Helpers of the access log tests: the log file's lines, a connection held open or reset through
// the proxy, the backends that end a connection each their own way, and a counter's samples.

import net from 'node:net';
import { readFileSync, existsSync } from 'node:fs';
import { waitFor, startTcpServer, type Balancer, type TestServer } from './helpers';

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

/** Send `data`, read until the peer echoed `data.length` bytes back. */
export async function roundTrip(s: net.Socket, data: Buffer): Promise<void> {
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`echo: ${got} of ${data.length} bytes`)), 10_000);
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= data.length) {
        clearTimeout(t);
        resolve();
      }
    });
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
