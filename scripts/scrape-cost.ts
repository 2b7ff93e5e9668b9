// CPU cost of one GET /metrics: starts the built balancer (dist/lemonade.js) with 3 backends,
// relays some traffic, then times N scrapes (keep-alive, like Prometheus) and reads the
// balancer's utime+stime from /proc/PID/stat before and after. The CPU the balancer spends
// idle over the same wall time (health checks, timers) is measured first and subtracted.
//
//   npm run build && node --import tsx scripts/scrape-cost.ts [--scrapes 200] [--connections 300]

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { startBalancer, startEcho, testConfig, tcpExchange, type Balancer, type TestServer } from '../test/helpers';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

const SCRAPES = arg('scrapes', 200);
const CONNECTIONS = arg('connections', 300);
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** utime + stime of a process, in microseconds */
function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // the command name (field 2) may contain spaces: count fields after its closing parenthesis
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  return ((utime + stime) * 1e6) / CLK_TCK;
}

function get(agent: http.Agent, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', agent }, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => (n += d.length));
      res.on('end', () => (res.statusCode === 200 ? resolve(n) : reject(new Error(`HTTP ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('scrape timed out')));
    req.on('error', reject);
  });
}

async function main(): Promise<void> {
  const backends: TestServer[] = [];
  let lb: Balancer | undefined;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 3; i++) backends.push(await startEcho());
    lb = await startBalancer(testConfig(backends.map((b, i) => ({ address: b.address, name: `backend-${i + 1}` }))));
    const pid = lb.proc.pid!;
    for (let i = 0; i < CONNECTIONS; i += 10) {
      await Promise.all(Array.from({ length: Math.min(10, CONNECTIONS - i) }, (_, k) => tcpExchange(lb!.port, `payload ${i + k}\n`.repeat(20))));
    }
    for (let i = 0; i < 20; i++) await get(agent, lb.adminPort); // warm up (JIT, first-scrape allocations)

    // scrapes
    const c0 = cpuMicros(pid);
    const t0 = process.hrtime.bigint();
    let bytes = 0;
    for (let i = 0; i < SCRAPES; i++) bytes = await get(agent, lb.adminPort);
    const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const scrapeCpu = cpuMicros(pid) - c0;

    // idle baseline over the same wall time
    const i0 = cpuMicros(pid);
    await new Promise((r) => setTimeout(r, Math.max(50, wallMs)));
    const idleCpu = cpuMicros(pid) - i0;

    const per = (scrapeCpu - idleCpu) / SCRAPES;
    console.log(
      JSON.stringify(
        {
          scrapes: SCRAPES,
          backends: backends.length,
          connections_relayed: CONNECTIONS,
          body_bytes: bytes,
          wall_ms: Math.round(wallMs),
          wall_us_per_scrape: Math.round((wallMs * 1000) / SCRAPES),
          balancer_cpu_us_during_scrapes: Math.round(scrapeCpu),
          balancer_cpu_us_idle_same_time: Math.round(idleCpu),
          cpu_us_per_scrape: Math.round(per),
          clock_tick_us: Math.round(1e6 / CLK_TCK),
        },
        null,
        2,
      ),
    );
  } finally {
    agent.destroy();
    await lb?.stop();
    await Promise.all(backends.map((b) => b.close()));
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
