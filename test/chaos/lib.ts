// Shared pieces of the chaos suite (npm run test:chaos): a load generator that records every
// request's outcome with timestamps, /proc readers for the balancer's RSS, CPU and descriptors,
// a Prometheus text reader, and a black-holed backend.
//
// Every loop here is bounded in time and count and talks to 127.0.0.1 only.

import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import type { Balancer } from '../helpers';

// -------------------------------------------------------------------------------------------
// One request: a fresh TCP connection, "GET /work" to a `lemonade worker` through the balancer,
// read until the server closes. ok = a complete 200 answer.

export interface Outcome {
  readonly start: number;
  /** when the client's TCP connect completed (0 = never) */
  readonly connectedAt: number;
  readonly end: number;
  readonly ok: boolean;
  /** ECONNREFUSED, ECONNRESET, "closed" (closed without a complete answer), "timeout", "status 500"… */
  readonly error?: string;
  /** the worker's name (the body) when ok */
  readonly body?: string;
}

export function httpOnce(port: number, opts: { timeoutMs?: number; path?: string; host?: string } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const start = Date.now();
    let connectedAt = 0;
    let error: string | undefined;
    const chunks: Buffer[] = [];
    const s = net.connect({ host: opts.host ?? '127.0.0.1', port });
    const t = setTimeout(() => {
      error = 'timeout';
      s.destroy();
    }, opts.timeoutMs ?? 10_000);
    s.on('connect', () => {
      connectedAt = Date.now();
      s.write(`GET ${opts.path ?? '/work'} HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n`);
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message;
    });
    s.on('close', () => {
      clearTimeout(t);
      const end = Date.now();
      const text = Buffer.concat(chunks).toString('latin1');
      const head = text.indexOf('\r\n\r\n');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      const len = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, head));
      const body = head >= 0 ? text.slice(head + 4) : '';
      const complete = m !== null && head >= 0 && len !== null && body.length === Number(len[1]);
      if (complete && m[1] === '200') resolve({ start, connectedAt, end, ok: true, body: body.trim() });
      else resolve({ start, connectedAt, end, ok: false, error: error ?? (m && complete ? `status ${m[1]}` : 'closed') });
    });
  });
}

export interface Load {
  readonly outcomes: Outcome[];
  /** requests started and not yet finished */
  inflight(): number;
  /** stop starting new requests; resolves when every running one has finished */
  stop(): Promise<Outcome[]>;
}

/** `concurrency` loops, each running one request after another until stop() or `maxMs`. */
export function startLoad(port: number, concurrency: number, opts: { maxMs?: number; timeoutMs?: number; pauseMs?: number; host?: string } = {}): Load {
  const outcomes: Outcome[] = [];
  let running = 0;
  let stopped = false;
  const until = Date.now() + (opts.maxMs ?? 120_000);
  const loops: Promise<void>[] = [];
  for (let i = 0; i < concurrency; i++) {
    loops.push(
      (async () => {
        while (!stopped && Date.now() < until) {
          running++;
          const o = await httpOnce(port, { timeoutMs: opts.timeoutMs, host: opts.host });
          running--;
          outcomes.push(o);
          if (!o.ok || opts.pauseMs) await sleep(opts.pauseMs ?? 5); // do not spin on refusals
        }
      })(),
    );
  }
  return {
    outcomes,
    inflight: () => running,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
      return outcomes;
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** errors by kind, e.g. { ECONNRESET: 2, closed: 1 } */
export function tally(outcomes: readonly Outcome[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const o of outcomes) if (!o.ok) t[o.error ?? '?'] = (t[o.error ?? '?'] ?? 0) + 1;
  return t;
}

// -------------------------------------------------------------------------------------------
// The balancer process, seen from /proc

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** user + system CPU time of the process, in clock ticks (1/100 s on Linux) */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

// -------------------------------------------------------------------------------------------
// Prometheus text

/** The value of one sample of /metrics, e.g. metric(text, 'lemonade_connections_rejected_total', { reason: 'acl' }); 0 if absent. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls: Record<string, string> = {};
    for (const p of (m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) ls[p[1]!] = p[2]!;
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) return Number(m[4]);
  }
  return 0;
}

export async function metrics(lb: Balancer): Promise<string> {
  return (await lb.admin('/metrics')).body;
}

// -------------------------------------------------------------------------------------------
// A black-holed backend: a listening socket whose accept queue is full, so the kernel drops new
// SYNs and a connect never completes (the client retransmits until its own timeout). A child
// process listens with backlog 1 and is stopped with SIGSTOP, so it never accepts; two
// connections fill the queue. This needs no root, iptables or network namespace.

export interface BlackHole {
  readonly address: string;
  readonly port: number;
  close(): void;
}

export async function startBlackHole(): Promise<BlackHole> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['-e', `const s=require('net').createServer(()=>{});s.listen({port:0,host:'127.0.0.1',backlog:1},()=>process.stdout.write(s.address().port+'\\n'))`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((res, rej) => {
    const t = setTimeout(() => rej(new Error('black hole did not start')), 10_000);
    child.stdout!.once('data', (d: Buffer) => {
      clearTimeout(t);
      res(Number(String(d).trim()));
    });
  });
  child.stdout!.destroy();
  child.unref();
  child.kill('SIGSTOP');
  const fillers: net.Socket[] = [];
  // fill the accept queue (backlog 1 holds 2 on Linux); later connects hang
  for (let i = 0; i < 2; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    fillers.push(s);
    await new Promise<void>((r) => {
      s.once('connect', () => r());
      setTimeout(r, 1000);
    });
  }
  // prove it: a further connect does not complete within 500 ms
  const probe = net.connect({ host: '127.0.0.1', port });
  probe.on('error', () => {});
  const completed = await new Promise<boolean>((r) => {
    probe.once('connect', () => r(true));
    setTimeout(() => r(false), 500);
  });
  probe.destroy();
  if (completed) {
    child.kill('SIGKILL');
    throw new Error('black hole: a connect completed although the accept queue should be full');
  }
  return {
    address: `127.0.0.1:${port}`,
    port,
    close: () => {
      for (const s of fillers) s.destroy();
      child.kill('SIGKILL');
    },
  };
}

/** Hold `n` client connections open through the proxy; resolves once each connected or failed. */
export async function holdConnections(port: number, n: number): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  await Promise.all(
    Array.from({ length: n }, () => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.on('error', () => {});
      out.push(s);
      return new Promise<void>((r) => {
        s.once('connect', () => r());
        s.once('close', () => r());
        setTimeout(r, 3000);
      });
    }),
  );
  return out;
}
