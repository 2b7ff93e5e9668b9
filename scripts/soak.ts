// Soak test (npm run soak; not in CI): the real balancer for --minutes N (default 30) under churn —
// short connections from concurrent clients, a reload every few seconds, a backend killed and
// restarted every 30 s. RSS, heap and open descriptors are sampled every minute (--sample-seconds).
// Fails (exit 1) when RSS grows more than 10% past the sample taken after the warm-up (5 minutes,
// or a fifth of a shorter run), or when descriptors at rest at the end exceed those at rest
// after the warm-up (a leak). Talks to 127.0.0.1 only; every loop stops by itself.
//
//   npm run soak -- --minutes 5
//   node --import tsx scripts/soak.ts --minutes 2 --sample-seconds 15 --json soak.json

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { startBalancer, testConfig, freePort, BUNDLE, cleanEnv, adminJson, waitFor, type Balancer } from '../test/helpers';
import { startLoad, rssBytes, openFds, metric, sleep, tally, type Load } from '../test/chaos/lib';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`--${name} needs a positive number`);
    process.exit(2);
  }
  return v;
}
const MINUTES = arg('minutes', 30);
const SAMPLE_S = arg('sample-seconds', 60);
const WARMUP_MIN = Math.min(5, MINUTES / 5);
const CONCURRENCY = arg('concurrency', 16);
const jsonOut = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;

interface Worker {
  proc: ChildProcess;
  port: number;
  name: string;
}

async function startWorkerOn(name: string, port: number): Promise<Worker> {
  const proc = spawn(process.execPath, [BUNDLE, 'demo-backend', '--listen', `127.0.0.1:${port}`, '--name', name, '--delay', '2', '--jitter', '8'], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`worker ${name} did not start`)), 10_000);
    proc.stdout!.on('data', (d: Buffer) => {
      if (/listening on/.test(String(d))) {
        clearTimeout(t);
        res();
      }
    });
    proc.once('exit', (c) => rej(new Error(`worker ${name} exited ${c}`)));
  });
  proc.stdout!.resume();
  return { proc, port, name };
}

function stopWorker(w: Worker, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (w.proc.exitCode !== null || w.proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => {
    w.proc.once('exit', () => r());
    w.proc.kill(signal);
  });
}

interface Sample {
  minute: number;
  rss_mb: number;
  heap_used_mb: number;
  fds: number;
  active: number;
  requests: number;
  failed: number;
}

async function main(): Promise<void> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const workers = await Promise.all(ports.map((p, i) => startWorkerOn(`w${i + 1}`, p)));
  const cfg = (w: number): string =>
    testConfig(
      workers.map((x, i) => ({ address: `127.0.0.1:${x.port}`, name: x.name, id: i, weight: i === w % 3 ? 3 : 1 })),
      { strategy: 'adaptive', health: 'interval = "500ms"\ntimeout = "300ms"\nunhealthy_threshold = 2', runtime: 'drain_timeout_millis = 5000\nconfig_watch_interval_millis = 1000' },
    );
  const lb: Balancer = await startBalancer(cfg(0));
  const pid = lb.proc.pid!;
  const started = Date.now();
  const deadline = started + MINUTES * 60_000;
  console.log(`soak: ${MINUTES} min, ${CONCURRENCY} clients, balancer pid ${pid} on :${lb.port}; samples every ${SAMPLE_S} s, warm-up ${WARMUP_MIN} min`);

  const samples: Sample[] = [];
  let load: Load = startLoad(lb.port, CONCURRENCY, { maxMs: MINUTES * 60_000 + 60_000, timeoutMs: 10_000 });
  const done: { ok: number; failed: number; errors: Record<string, number> } = { ok: 0, failed: 0, errors: {} };
  /** move finished outcomes into the totals, so the client's own memory stays flat */
  const harvest = (): void => {
    const o = load.outcomes.splice(0);
    for (const x of o) if (x.ok) done.ok++;
    else done.failed++;
    for (const [k, v] of Object.entries(tally(o))) done.errors[k] = (done.errors[k] ?? 0) + v;
  };
  const sample = async (): Promise<Sample> => {
    harvest();
    const m = (await lb.admin('/metrics')).body;
    const st = await adminJson<{ connections: { active: number } }>(lb, '/status');
    const s: Sample = {
      minute: Math.round(((Date.now() - started) / 60_000) * 100) / 100,
      rss_mb: Math.round((rssBytes(pid) / 1048576) * 10) / 10,
      heap_used_mb: Math.round((metric(m, 'nodejs_heap_size_used_bytes') / 1048576) * 10) / 10,
      fds: openFds(pid),
      active: st.connections.active,
      requests: done.ok + done.failed,
      failed: done.failed,
    };
    samples.push(s);
    console.log(JSON.stringify(s));
    return s;
  };
  /** stop the load, let connections finish, count descriptors at rest, start the load again */
  const atRest = async (restart: boolean): Promise<number> => {
    await load.stop();
    harvest();
    await waitFor(async () => (await adminJson<{ connections: { active: number } }>(lb, '/status')).connections.active === 0, 15_000, 'connections to finish');
    await sleep(1500); // health-check sockets come and go; take the lowest of a few looks
    let fds = Infinity;
    for (let i = 0; i < 5; i++) {
      fds = Math.min(fds, openFds(pid));
      await sleep(200);
    }
    if (restart) load = startLoad(lb.port, CONCURRENCY, { maxMs: Math.max(0, deadline - Date.now()) + 60_000, timeoutMs: 10_000 });
    return fds;
  };

  // churn: reload every 3 s, a backend killed (SIGKILL) and restarted every 30 s
  let reloads = 0;
  let restarts = 0;
  let stop = false;
  const reloader = (async () => {
    while (!stop) {
      await sleep(3000);
      if (stop) break;
      lb.writeConfig(cfg(++reloads));
      await lb.admin('/reload', 'POST').catch(() => undefined);
    }
  })();
  const restarter = (async () => {
    let i = 0;
    while (!stop) {
      await sleep(30_000);
      if (stop) break;
      const k = i++ % 3;
      await stopWorker(workers[k]!, 'SIGKILL');
      await sleep(2000);
      workers[k] = await startWorkerOn(workers[k]!.name, workers[k]!.port);
      restarts++;
    }
  })();

  await sample();
  let baseline: Sample | null = null;
  let restFdsBase = 0;
  let nextSample = started + SAMPLE_S * 1000;
  while (Date.now() < deadline) {
    await sleep(Math.max(0, Math.min(nextSample, deadline) - Date.now()));
    if (Date.now() >= deadline) break;
    nextSample += SAMPLE_S * 1000;
    const s = await sample();
    if (!baseline && s.minute >= WARMUP_MIN) {
      baseline = s;
      restFdsBase = await atRest(true);
      console.log(`warm-up over: baseline RSS ${s.rss_mb} MB, descriptors at rest ${restFdsBase}`);
    }
  }
  stop = true;
  const last = await sample();
  await Promise.all([reloader, restarter]);
  // all workers up for the final at-rest count
  for (let k = 0; k < 3; k++) if (workers[k]!.proc.exitCode !== null || workers[k]!.proc.signalCode !== null) workers[k] = await startWorkerOn(workers[k]!.name, workers[k]!.port);
  const restFdsEnd = await atRest(false);
  const gen = (await adminJson<{ config: { generation: number } }>(lb, '/status')).config.generation;

  const base = baseline ?? samples[0]!;
  const peakAfter = Math.max(...samples.filter((s) => s.minute >= base.minute).map((s) => s.rss_mb));
  const growth = (last.rss_mb - base.rss_mb) / base.rss_mb;
  const peakGrowth = (peakAfter - base.rss_mb) / base.rss_mb;
  const fdLeak = restFdsEnd > restFdsBase;
  const summary = {
    minutes: MINUTES,
    requests: done.ok + done.failed,
    ok: done.ok,
    failed: done.failed,
    errors: done.errors,
    reloads,
    generation: gen,
    backend_restarts: restarts,
    rss_mb: { first: samples[0]!.rss_mb, baseline: base.rss_mb, baseline_minute: base.minute, last: last.rss_mb, peak_after_baseline: peakAfter },
    rss_growth_pct: Math.round(growth * 1000) / 10,
    rss_peak_growth_pct: Math.round(peakGrowth * 1000) / 10,
    heap_used_mb: { baseline: base.heap_used_mb, last: last.heap_used_mb },
    fds_at_rest: { baseline: restFdsBase, end: restFdsEnd },
    samples,
    pass: growth <= 0.1 && !fdLeak,
  };
  console.log(`soak summary: ${JSON.stringify({ ...summary, samples: undefined })}`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(summary, null, 2) + '\n');
  await lb.stop();
  await Promise.all(workers.map((w) => stopWorker(w)));
  if (!summary.pass) {
    console.error(`soak FAILED: ${growth > 0.1 ? `RSS grew ${summary.rss_growth_pct}% after the warm-up (limit 10%)` : ''} ${fdLeak ? `descriptors at rest ${restFdsBase} → ${restFdsEnd}` : ''}`);
    process.exit(1);
  }
  console.log('soak passed');
  process.exit(0);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
