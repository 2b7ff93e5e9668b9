// `lemonade demo-backend` (alias `worker`, its former name): a demo/test backend, not one of the
// balancer's data-plane worker processes. An HTTP/1.1 server (keep-alive) that answers every
// request with 200 and the body "NAME\n" after --delay ms (plus up to --jitter ms); a share
// --fail-rate of requests get 500 instead. GET /health answers 200 at once.
//
// Tests and benchmarks steer a running backend through POST /_control?delay=MS&jitter=MS&health=CODE
// (health: the status /health answers with from then on).

import http from 'node:http';
import { parseHostPort, formatHostPort } from '../config/address';

export interface DemoBackendOptions {
  readonly listen: string;
  readonly name: string;
  readonly delayMs: number;
  readonly jitterMs: number;
  readonly failRate: number;
}

export interface RunningDemoBackend {
  readonly address: string;
  close(): Promise<void>;
}

/** "host:port", ":port" or "port" (loopback); port 0 picks a free one. Returns an error message on bad input. */
export function parseListen(s: string): { host: string; port: number } | string {
  if (/^\d+$/.test(s)) return parseHostPort(`127.0.0.1:${s}`, true);
  if (s.startsWith(':')) return parseHostPort(`127.0.0.1${s}`, true);
  return parseHostPort(s, true);
}

export function startDemoBackend(o: DemoBackendOptions): Promise<RunningDemoBackend> {
  const addr = parseListen(o.listen);
  if (typeof addr === 'string') return Promise.reject(new Error(`--listen: ${addr}`));
  let delay = o.delayMs;
  let jitter = o.jitterMs;
  let healthCode = 200;
  const body = Buffer.from(`${o.name}\n`);
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (req.method === 'POST' && url.startsWith('/_control')) {
      const q = new URL(url, 'http://x').searchParams;
      if (q.has('delay')) delay = Number(q.get('delay')) || 0;
      if (q.has('jitter')) jitter = Number(q.get('jitter')) || 0;
      if (q.has('health')) healthCode = Number(q.get('health')) || 200;
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: o.name, delay, jitter, health: healthCode }) + '\n');
      return;
    }
    if (url === '/health') {
      req.resume();
      res.writeHead(healthCode, { 'content-type': 'text/plain', 'content-length': 3 });
      res.end(healthCode < 400 ? 'ok\n' : 'no\n');
      return;
    }
    req.resume();
    const wait = delay + (jitter > 0 ? Math.random() * jitter : 0);
    const answer = (): void => {
      if (o.failRate > 0 && Math.random() < o.failRate) {
        res.writeHead(500, { 'content-type': 'text/plain', 'content-length': 6 });
        res.end('error\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, 'x-worker': o.name });
      res.end(body);
    };
    if (wait > 0) setTimeout(answer, wait);
    else answer();
  });
  server.keepAliveTimeout = 60_000;
  server.headersTimeout = 65_000;
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${formatHostPort(addr)}: ${e.code ?? e.message}`)));
    server.listen({ host: addr.host, port: addr.port }, () => {
      const a = server.address();
      const address = a && typeof a === 'object' ? formatHostPort({ host: a.address, port: a.port }) : formatHostPort(addr);
      resolve({
        address,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections();
          }),
      });
    });
  });
}
