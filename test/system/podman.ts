// podman for the container and Kubernetes tests: bounded commands, the image built by
// scripts/images.sh, and the checks a kubelet makes (HTTP GET and TCP connect from outside the
// container, against the pod's own address).
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { join } from 'node:path';
import { ROOT, requireTool } from '../helpers';

export const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** What scripts/images.sh builds (it also tags the package version, the tag deploy/kubernetes names). */
export const IMAGE = process.env['LEMONADE_IMAGE'] ?? 'localhost/lemonade-lb:latest';

export interface Out {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A command under `timeout`, to completion. */
export function run(cmd: string, args: string[], timeoutSec = 60, input?: string): Out {
  const r = spawnSync('timeout', ['-k', '5', String(timeoutSec), cmd, ...args], { encoding: 'utf8', input, maxBuffer: 16 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Same, asserting exit 0; returns stdout. */
export function must(cmd: string, args: string[], timeoutSec = 60, input?: string): string {
  const r = run(cmd, args, timeoutSec, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** A command under `timeout` in the background: resolves when it ends. */
export function runAsync(cmd: string, args: string[], timeoutSec = 60): Promise<Out> {
  const p = spawn('timeout', ['-k', '5', String(timeoutSec), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((r) => p.on('close', (code) => r({ code, stdout, stderr })));
}

export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/**
 * podman, root, and the image: true when the test can run. A missing one skips naming it (a
 * failure under LEMONADE_REQUIRE_SYSTEM_TESTS=1).
 */
export function podmanReady(t: { skip(msg: string): void }): boolean {
  if (!requireTool(t, 'podman', hasTool('podman'))) return false;
  if (process.getuid?.() !== 0 && !requireTool(t, 'root (rootful podman: the CI host setup is for root)', false)) return false;
  const built = run('podman', ['image', 'exists', IMAGE], 30).code === 0;
  if (!built && !requireTool(t, 'debootstrap (scripts/images.sh makes the base images with it)', hasTool('debootstrap'))) return false;
  return requireTool(t, `the image ${IMAGE} (scripts/images.sh build)`, built);
}

/** `podman inspect` of one object, one Go template. */
export function inspect(what: string, format: string): string {
  return must('podman', ['inspect', what, '--format', format], 30).trim();
}

/** The kubelet's HTTP probe: GET from outside the container; 200-399 within the timeout passes. */
export function httpProbe(host: string, port: number, path: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    let buf = '';
    const t = setTimeout(() => (s.destroy(), resolve(0)), timeoutMs);
    s.on('connect', () => s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n`));
    s.on('data', (d: Buffer) => (buf += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      resolve(Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf)?.[1] ?? 0));
    });
  });
}

/** The kubelet's TCP probe: a connect that succeeds within the timeout. */
export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => (s.destroy(), resolve(false)), timeoutMs);
    s.on('connect', () => (clearTimeout(t), s.destroy(), resolve(true)));
    s.on('error', () => (clearTimeout(t), resolve(false)));
  });
}

/** The effective uid of a process, from /proc. */
export function uidOf(pid: number): number {
  return Number(/^Uid:\s+\d+\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? -1);
}

/** One HTTP request on a fresh connection: status and body, or the connection's error (status 0). */
export function get(host: string, port: number, path = '/', timeoutMs = 5000): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', (e) => resolve({ status: 0, body, error: e.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, body: '', error: e.code ?? e.message }));
  });
}
