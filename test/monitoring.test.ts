// packaging/monitoring against real tools: promtool checks and unit-tests the alert rules, a real
// Prometheus scrapes a running balancer and loads the rules, and every metric the rules and the
// Grafana dashboard use is exported by a balancer that has proxied traffic.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  freePort,
  stopProcess,
  ROOT,
  startBalancer,
  startEcho,
  testConfig,
  tcpExchange,
  tempDir,
  requireTool,
  waitFor,
  httpRequest,
  type Balancer,
  type TestServer,
} from './helpers';

const DIR = join(ROOT, 'packaging', 'monitoring');
const RULES = join(DIR, 'lemonade-alerts.yml');
const RULE_TESTS = join(DIR, 'lemonade-alerts.test.yml');
const DASHBOARD = join(DIR, 'lemonade-dashboard.json');

/** Series Prometheus makes itself, not read from /metrics. */
const SYNTHETIC = new Set(['up']);
/**
 * Metrics the rules use that the balancer does not export yet (proposed in the monitoring
 * README). Each gets a todo subtest until it shows up in /metrics; then remove it from here.
 */
const PROPOSED = new Set<string>([]);

function hasTool(name: string): boolean {
  const r = spawnSync(name, ['--version'], { stdio: 'ignore', timeout: 10_000 });
  return r.error === undefined && r.status === 0;
}

function run(cmd: string, args: string[], cwd: string): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

test('promtool check rules and test rules pass on the alert rules', { timeout: 40_000 }, (t) => {
  if (!requireTool(t, 'promtool (Debian package prometheus)', hasTool('promtool'))) return;
  const check = run('promtool', ['check', 'rules', RULES], DIR);
  assert.equal(check.code, 0, check.out);
  assert.match(check.out, /SUCCESS: \d+ rules found/);
  const unit = run('promtool', ['test', 'rules', RULE_TESTS], DIR);
  assert.equal(unit.code, 0, unit.out);
  assert.match(unit.out, /SUCCESS/);

  // every alert in the rules has a unit test
  const alerts = [...readFileSync(RULES, 'utf8').matchAll(/^\s*- alert:\s*(\S+)/gm)].map((m) => m[1]!);
  const tested = new Set([...readFileSync(RULE_TESTS, 'utf8').matchAll(/^\s*alertname:\s*(\S+)/gm)].map((m) => m[1]!));
  assert.ok(alerts.length >= 6, `alerts: ${alerts.join(', ')}`);
  for (const a of alerts) assert.ok(tested.has(a), `alert ${a} has no promtool unit test`);
});

// -------------------------------------------------------------------------------------------
// Metric names in PromQL

const FUNCTIONS_AND_KEYWORDS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'group', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values',
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'atan2',
  'inf', 'nan',
]);

/** Metric names used by a PromQL expression (functions, keywords, labels and strings left out). */
export function metricNames(expr: string): string[] {
  const e = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
    .replace(/\$\{?\w+\}?/g, ' '); // Grafana variables
  const names = new Set<string>();
  for (const m of e.matchAll(/(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, id, call] = m;
    if (call || FUNCTIONS_AND_KEYWORDS.has(id!.toLowerCase())) continue;
    names.add(id!);
  }
  return [...names];
}

/** A histogram's series name to the metric family name. */
function family(name: string): string {
  return name.replace(/_(bucket|sum|count)$/, '');
}

interface Dashboard {
  panels: { title?: string; targets?: { expr?: string }[] }[];
  templating: { list: { query?: string | { query?: string } }[] };
  annotations: { list: { expr?: string }[] };
}

/** Every PromQL expression of the dashboard: panel targets, annotations, template variables. */
function dashboardQueries(): { panelExprs: string[]; otherExprs: string[]; names: string[] } {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
  const panelExprs = d.panels.flatMap((p) => (p.targets ?? []).map((x) => x.expr ?? '')).filter((x) => x !== '');
  const otherExprs = d.annotations.list.map((a) => a.expr ?? '').filter((x) => x !== '');
  const names = new Set<string>();
  for (const x of [...panelExprs, ...otherExprs]) for (const n of metricNames(x)) names.add(n);
  for (const v of d.templating.list) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    const m = q ? /^label_values\(\s*([a-zA-Z_:][\w:]*)/.exec(q) : null;
    if (m) names.add(m[1]!);
  }
  return { panelExprs, otherExprs, names: [...names] };
}

test('metricNames finds the metrics of an expression', () => {
  assert.deepEqual(
    metricNames('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x="y{z}"}[5m]))) / on (job) group_left b > 0.9 unless c offset 5m'),
    ['a_bucket', 'b', 'c'],
  );
  assert.deepEqual(metricNames('sum(rate(x_total{job=~"$job"}[$__rate_interval])) and up == 0'), ['x_total', 'up']);
});

// -------------------------------------------------------------------------------------------
// Prometheus scraping a live balancer



interface PromProc {
  proc: ChildProcess;
  port: number;
  log: () => string;
}

/** Start prometheus on a free loopback port (retried if another process takes the port first). */
async function startPrometheus(dir: string, configFile: string): Promise<PromProc> {
  let lastLog = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const data = join(dir, `data-${attempt}`);
    const proc = spawn(
      'prometheus',
      [`--config.file=${configFile}`, `--storage.tsdb.path=${data}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=info'],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    const ready = await Promise.race([
      waitFor(async () => (await httpRequest(port, '/-/ready', { timeoutMs: 1000 })).status === 200, 20_000, 'prometheus /-/ready', 100).then(
        () => true,
        () => false,
      ),
      exited.then(() => false),
    ]);
    if (ready) return { proc, port, log: () => log };
    lastLog = log;
    await stopProcess(proc);
  }
  throw new Error(`prometheus did not start; its log:\n${lastLog}`);
}

async function promQuery(port: number, query: string): Promise<{ status: string; data?: { result: unknown[] }; error?: string }> {
  const r = await httpRequest(port, `/api/v1/query?query=${encodeURIComponent(query)}`);
  return JSON.parse(r.body) as { status: string; data?: { result: unknown[] }; error?: string };
}

test('Prometheus scrapes the balancer and loads the rules; the rules and dashboard use only exported metrics', { timeout: 50_000 }, async (t) => {
  if (!requireTool(t, 'prometheus (Debian package prometheus)', hasTool('prometheus'))) return;

  const backends: TestServer[] = [];
  let lb: Balancer | undefined;
  let prom: PromProc | undefined;
  const dir = tempDir('lemonade-prometheus-');
  t.after(async () => {
    if (prom) await stopProcess(prom.proc);
    await lb?.stop();
    await Promise.all(backends.map((b) => b.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  for (let i = 0; i < 2; i++) backends.push(await startEcho());
  // a third backend nobody listens on: connect errors and failed health checks
  const dead = await freePort();
  lb = await startBalancer(
    testConfig([
      { address: backends[0]!.address, name: 'alpha' },
      { address: backends[1]!.address, name: 'beta' },
      { address: `127.0.0.1:${dead}`, name: 'gamma' },
    ]),
  );
  for (let i = 0; i < 12; i++) {
    const r = await tcpExchange(lb.port, `hello ${i}\n`);
    assert.equal(r.data.toString(), `hello ${i}\n`);
  }
  const balancer = lb;
  // health checks have run (so lemonade_health_checks_total has series) before reading /metrics
  await waitFor(async () => /^lemonade_health_checks_total\{[^}]*backend="gamma"/m.test((await balancer.admin('/metrics')).body), 10_000, 'a health check of gamma');
  const metricsText = (await lb.admin('/metrics')).body;
  const exported = new Set([...metricsText.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
  assert.ok(exported.has('lemonade_connections_total'));

  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${JSON.stringify(RULES)}`,
      'scrape_configs:',
      '  - job_name: lemonade',
      '    static_configs:',
      `      - targets: ["127.0.0.1:${lb.adminPort}"]`,
      '',
    ].join('\n'),
  );
  prom = await startPrometheus(dir, join(dir, 'prometheus.yml'));
  const p = prom;

  // the balancer's counters arrive in Prometheus
  const got = await waitFor(
    async () => {
      const r = await promQuery(p.port, 'lemonade_connections_total{job="lemonade"}');
      return r.status === 'success' && (r.data?.result.length ?? 0) > 0 ? r.data!.result : null;
    },
    20_000,
    'lemonade_connections_total in Prometheus',
    200,
  );
  const backendsSeen = (got as { metric: { backend: string } }[]).map((s) => s.metric.backend).sort();
  assert.deepEqual(backendsSeen, ['alpha', 'beta', 'gamma']);

  // the rules are loaded and evaluate without error
  type RuleGroups = { data: { groups: { rules: { name: string; query: string; health: string; lastError?: string; lastEvaluation: string }[] }[] } };
  const rules = await waitFor(
    async () => {
      const r = JSON.parse((await httpRequest(p.port, '/api/v1/rules')).body) as RuleGroups;
      const all = r.data.groups.flatMap((g) => g.rules);
      return all.length > 0 && all.every((x) => x.health !== 'unknown') ? all : null;
    },
    15_000,
    'the rules to be evaluated',
    200,
  );
  for (const r of rules) assert.equal(r.health, 'ok', `rule ${r.name}: ${r.lastError ?? ''}`);

  const dash = dashboardQueries();

  // every metric the rules and the dashboard name is exported by the balancer
  const used = new Set<string>(dash.names);
  for (const r of rules) for (const n of metricNames(r.query)) used.add(n);
  assert.ok(used.size >= 10, [...used].join(', '));
  const missing: string[] = [];
  for (const n of used) {
    if (SYNTHETIC.has(n)) continue;
    const f = family(n);
    if (PROPOSED.has(f)) continue;
    if (!exported.has(f)) missing.push(n);
  }
  assert.deepEqual(missing, [], `metrics used by packaging/monitoring that /metrics lacks: ${missing.join(', ')}`);

  // every dashboard query is valid PromQL, and the panels' queries return data
  const concrete = (x: string): string => x.replace(/\$__rate_interval/g, '1m').replace(/\$job|\$instance/g, '.*');
  await waitFor(
    async () => {
      for (const x of dash.panelExprs) {
        const r = await promQuery(p.port, concrete(x));
        assert.equal(r.status, 'success', `${x}: ${r.error ?? ''}`);
        if ((r.data?.result.length ?? 0) === 0) throw new Error(`no data yet for ${x}`);
      }
      return true;
    },
    15_000,
    'every dashboard panel query to return data',
    500,
  );
  for (const x of dash.otherExprs) {
    const r = await promQuery(p.port, concrete(x));
    assert.equal(r.status, 'success', `${x}: ${r.error ?? ''}`);
  }

  for (const n of PROPOSED) {
    await t.test(`proposed metric ${n} is exported`, { todo: `${n} is not exported yet (see packaging/monitoring/README.md)` }, () => {
      assert.ok(exported.has(n), `${n} is not in /metrics`);
    });
  }
});
