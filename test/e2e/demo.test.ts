// `lemonade demo` (npm start) as a new user meets it: it prints where to point curl, serves
// through three demo backends (the last one slow), and Ctrl-C stops everything it started.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE, ROOT, cleanEnv, freePort, tempDir, waitFor, httpRequest } from '../helpers';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('demo: three workers behind the balancer, a curl line, and a clean stop on Ctrl-C', async (t) => {
  // the shipped demo configuration, moved to free ports
  let text = readFileSync(join(ROOT, 'config', 'demo.toml'), 'utf8');
  for (const port of ['8080', '9090', '9101', '9102', '9103']) text = text.replace(`127.0.0.1:${port}"`, `127.0.0.1:${await freePort()}"`);
  const config = join(tempDir(), 'demo.toml');
  writeFileSync(config, text);
  const child = spawn(process.execPath, [BUNDLE, 'demo', '--config', config], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => /try:\s+curl http:\/\/127\.0\.0\.1:(\d+)\//.test(out), 15_000, 'the curl line');
  const port = Number(/try:\s+curl http:\/\/127\.0\.0\.1:(\d+)\//.exec(out)![1]);
  assert.match(out, /3 backends \(worker-3-slow answers after 50 ms\)/);
  const seen = new Map<string, number>();
  for (let i = 0; i < 30; i++) {
    const r = await httpRequest(port, '/');
    assert.equal(r.status, 200);
    seen.set(r.body.trim(), (seen.get(r.body.trim()) ?? 0) + 1);
  }
  t.diagnostic(`demo: ${JSON.stringify(Object.fromEntries(seen))}`);
  assert.ok([...seen.keys()].every((k) => /^worker-[123]/.test(k)));
  assert.ok((seen.get('worker-1') ?? 0) > 0 && (seen.get('worker-2') ?? 0) > 0, 'both fast workers serve');
  // the workers it started, by their ports
  const workerPids = (readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)).map(Number);
  assert.equal(workerPids.length, 3);
  child.kill('SIGINT');
  const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
  assert.equal(code, 0, out);
  await waitFor(() => workerPids.every((p) => !alive(p)), 5000, 'the workers to exit');
  assert.match(out, /stopped: \d+ connections drained, 0 cut/);
});
