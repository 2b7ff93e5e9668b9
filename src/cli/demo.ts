// `lemonade demo` (npm start): three demo backends on loopback, one of them slow, behind a balancer
// run from config/demo.toml. Ctrl-C stops everything.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { loadConfig } from '../config/load';
import { PROCESS_ENV } from '../config/environment';
import { App } from '../app';
import { createLogger } from '../obs/logger';
import { VERSION } from '../version';
import { BindError } from '../errors';

/** config/demo.toml beside the bundle (dist/../config) or in the working directory. */
export function findDemoConfig(): string {
  const candidates = [resolve(dirname(process.argv[1] ?? '.'), '..', 'config', 'demo.toml'), resolve('config', 'demo.toml')];
  return candidates.find((p) => existsSync(p)) ?? candidates[1]!;
}

export const SLOW_BACKEND_DELAY_MS = 50;

export async function runDemo(configPath: string, out: (s: string) => void): Promise<number> {
  const env = { ...process.env };
  const loaded = loadConfig(configPath, env);
  const children: ChildProcess[] = [];
  const script = process.argv[1]!;
  const backends = loaded.config.backends;
  // one `lemonade demo-backend` per configured backend; the last one is slow
  await Promise.all(
    backends.map(
      (b, i) =>
        new Promise<void>((ok, fail) => {
          const delay = i === backends.length - 1 ? SLOW_BACKEND_DELAY_MS : 0;
          const child = spawn(process.execPath, [script, 'demo-backend', '--listen', b.address, '--name', b.name, '--delay', String(delay)], {
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          children.push(child);
          // the backend's errors until it listens make the demo's one-line error; then they pass through
          let said = '';
          const collect = (d: Buffer): void => {
            if (said.length < 4096) said += d.toString('utf8');
          };
          child.stderr!.on('data', collect);
          child.stdout!.once('data', () => {
            child.stderr!.off('data', collect);
            child.stderr!.pipe(process.stderr);
            ok();
          });
          child.once('error', (e) => fail(new BindError(`demo backend ${b.name}`, b.address, e.message)));
          child.once('exit', (code) => {
            const reason = /cannot listen on \S+: (.+)/.exec(said)?.[1] ?? `the demo backend exited with code ${code}`;
            fail(new BindError(`demo backend ${b.name}`, b.address, reason.trim()));
          });
        }),
    ),
  ).catch((e: unknown) => {
    for (const c of children) c.kill('SIGTERM');
    throw e;
  });
  const logger = createLogger({ format: process.env[PROCESS_ENV.logFormat.name] || 'pretty' });
  const app = new App({ loaded, logger, version: VERSION, configPath, env });
  const exited = app.exited();
  try {
    await app.start();
  } catch (e) {
    for (const c of children) c.kill('SIGTERM');
    throw e;
  }
  const [host, port] = [loaded.config.services[0]!.listen.host, loaded.config.services[0]!.listen.port];
  out('');
  out(`lemonade demo: ${backends.length} backends (${backends[backends.length - 1]!.name} answers after ${SLOW_BACKEND_DELAY_MS} ms) behind ${loaded.config.strategy}`);
  out(`  try:        curl http://${host}:${port}/        (or: for i in $(seq 10); do curl -s http://${host}:${port}/; done)`);
  if (app.adminAddress) {
    out(`  status:     http://${app.adminAddress}/   (or: node ${script} status --admin http://${app.adminAddress})`);
    out(`  metrics:    curl http://${app.adminAddress}/metrics`);
  }
  out(`  config:     ${configPath} (edit and save: it reloads)`);
  out('  stop:       Ctrl-C');
  out('');
  const code = await exited;
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((r) => {
          if (c.exitCode !== null) return r();
          c.once('exit', () => r());
          c.kill('SIGTERM');
        }),
    ),
  );
  return code;
}
