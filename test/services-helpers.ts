// Helpers of the services tests (test/e2e/services.test.ts, test/e2e/services-reload.test.ts): a
// [[services]] file with explicit ports, a named backend's greeting through a port, a connection
// held through the proxy, a metric sample sum, and the /services and /backends rows.

import net from 'node:net';
import { adminJson, freePort, type Balancer } from './helpers';

// A services config, every listen address explicit (a reload may add ports the first file lacks)

export interface SvcSpec {
  readonly name: string;
  readonly port: number;
  /** more keys of the [[services]] table, as TOML lines */
  readonly lines?: readonly string[];
  /** keys of its [services.health] table */
  readonly health?: readonly string[];
  readonly backends: readonly { readonly name: string; readonly address: string; readonly weight?: number; readonly id?: number }[];
}

export interface FileSpec {
  readonly services: readonly SvcSpec[];
  /** the default service: top-level [proxy] listen_address and [[backends]] */
  readonly default?: { readonly port: number; readonly backends: SvcSpec['backends'] };
  readonly runtime?: readonly string[];
  readonly proxy?: readonly string[];
  readonly algorithm?: string;
  readonly health?: readonly string[];
  /** more tables, whole (headers included), before the backends */
  readonly tables?: readonly string[];
}

const backendLines = (header: string, list: SvcSpec['backends']): string[] =>
  list.flatMap((b, i) => [header, `id = ${b.id ?? i}`, `name = "${b.name}"`, `address = "${b.address}"`, ...(b.weight !== undefined ? [`weight = ${b.weight}`] : [])]);

/** The TOML text; the admin API listens on "127.0.0.1:0" (startBalancer fills it in). */
export function servicesFile(f: FileSpec): string {
  return [
    '[runtime]',
    ...(f.runtime ?? ['drain_timeout_millis = 5000', 'config_watch_interval_millis = 60000']),
    '[proxy]',
    ...(f.default ? [`listen_address = "127.0.0.1:${f.default.port}"`] : []),
    // past the kernel's SYN retransmissions (1 s, then 2 s more): a SYN dropped on a loaded host does not end the connection
    'connect_timeout = "5s"',
    ...(f.proxy ?? []),
    '[strategy]',
    `algorithm = "${f.algorithm ?? 'round_robin'}"`,
    '[health]',
    ...(f.health ?? ['interval = "500ms"', 'timeout = "300ms"']),
    '[admin]',
    'listen_address = "127.0.0.1:0"',
    ...(f.tables ?? []),
    ...(f.default ? backendLines('[[backends]]', f.default.backends) : []),
    ...f.services.flatMap((s) => [
      '[[services]]',
      `name = "${s.name}"`,
      `listen_address = "127.0.0.1:${s.port}"`,
      ...(s.lines ?? []),
      ...(s.health ? ['[services.health]', ...s.health] : []),
      ...backendLines('[[services.backends]]', s.backends),
    ]),
    '',
  ].join('\n');
}

export async function ports(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await freePort());
  return out;
}

/**
 * Connect, read the greeting line of a named backend, hang up: the name, the error, "closed", or
 * "timeout" when nothing came for `timeoutMs` (told apart: a hang is no refusal).
 */
export function greeting(port: number, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let got = '';
    s.setTimeout(timeoutMs, () => {
      got ||= 'timeout';
      s.destroy();
    });
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('\n')) s.end();
    });
    s.on('error', (e: NodeJS.ErrnoException) => (got ||= e.code ?? 'error'));
    s.on('close', () => resolve(got.trim() || 'closed'));
  });
}

/** A connection through the proxy to an echo backend, proven to flow; null when it was refused or closed. */
export function holdEcho(port: number, t: { after(f: () => void): void }): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    t.after(() => s.destroy());
    s.on('error', () => resolve(null));
    s.on('close', () => resolve(null));
    s.once('data', () => resolve(s));
    s.write('ping');
  });
}

/** Sum of the samples of `name` whose labels include every `label="value"` given. */
export function metric(text: string, name: string, labels: readonly string[] = []): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',');
    if (labels.every((l) => have.includes(l))) sum += Number(m[3]);
  }
  return sum;
}

export interface ServiceRow {
  name: string;
  listen_address: string;
  sni: string[];
  algorithm: string;
  active: number;
  total: number;
  rejected: number;
  usable: number;
  backends: number;
}
export interface BackendRow {
  service: string;
  name: string;
  state: string;
  active: number;
  total: number;
  weight: number;
}

export const services = (lb: Balancer): Promise<ServiceRow[]> => adminJson<ServiceRow[]>(lb, '/services');
export const backends = (lb: Balancer): Promise<BackendRow[]> => adminJson<BackendRow[]>(lb, '/backends');
