// The access log's pieces without a balancer: the [access_log] rows (validation and the reload
// diff's names), both line formats of one connection, the writer's bounded queue against a
// destination that refuses every write (/dev/full), and the status page chart's percentiles.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { parseAndValidate } from '../../src/config/load';
import { diff, summarize } from '../../src/config/diff';
import type { Config } from '../../src/config/schema';
import { AccessLog, MAX_QUEUED_LINES, jsonLine, textLine } from '../../src/obs/access-log';
import { LiveChart, quantile } from '../../src/obs/live-chart';
import { LATENCY_BOUNDS_MS, TrafficFigures } from '../../src/obs/metrics';
import type { SessionEnd } from '../../src/proxy/events';
import type { SnapshotBackend } from '../../src/core/snapshot';
import { spawn, spawnSync } from 'node:child_process';
import { requireTool, tempDir, waitFor } from '../helpers';

const BASE = '[proxy]\nlisten_address = "127.0.0.1:8080"\n[[backends]]\naddress = "127.0.0.1:9001"\nname = "web-1"\n';

function config(accessLog: string): Config {
  const r = parseAndValidate(`${BASE}[access_log]\n${accessLog}\n`, {});
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  return r.config;
}

function issues(accessLog: string): string[] {
  const r = parseAndValidate(`${BASE}[access_log]\n${accessLog}\n`, {});
  assert.ok(!r.ok, 'refused');
  return r.issues.map((i) => `${i.path}: ${i.message}`);
}

test('[access_log] defaults, and each key refused with the key and what was expected', () => {
  assert.deepEqual(config('').access_log, { enabled: false, path: '', format: 'json', sample: 1 });
  assert.deepEqual(config('enabled = true\npath = "/var/log/x.log"\nformat = "text"\nsample = 0.25').access_log, { enabled: true, path: '/var/log/x.log', format: 'text', sample: 0.25 });
  assert.match(issues('sample = 0')[0]!, /^access_log\.sample: must be greater than 0 and at most 1, got 0$/);
  assert.match(issues('sample = 1.5')[0]!, /^access_log\.sample: must be greater than 0 and at most 1, got 1\.5$/);
  assert.match(issues('sample = "half"')[0]!, /^access_log\.sample: expected a number/);
  assert.match(issues('format = "jsno"')[0]!, /^access_log\.format: expected one of "json", "text", got "jsno" \(did you mean "json"\?\)$/);
  assert.match(issues('enabled = "yes"')[0]!, /^access_log\.enabled: expected true or false/);
  assert.match(issues('pth = "x"')[0]!, /^access_log\.pth: unknown key "pth" in \[access_log\] \(did you mean "path"\?\)$/);
});

test('a reload names the [access_log] keys it changes', () => {
  const a = config('');
  const b = config('enabled = true\npath = "/tmp/a.log"\nsample = 0.5');
  assert.equal(summarize(diff(a, b)), 'access_log.enabled false→true access_log.path ""→/tmp/a.log access_log.sample 1→0.5');
});

const BACKEND = { name: 'web-1', spec: { address: '10.0.0.11:8080' } } as unknown as SnapshotBackend;

function end(over: Partial<SessionEnd>): SessionEnd {
  return { service: 'web', pickedBackend: BACKEND, connected: true, connectMs: 1, durationMs: 153, bytesIn: 78, bytesOut: 1024, retries: 0, termination: 'client_closed', latencyMs: 3, logClient: '203.0.113.7:51234', ...over };
}

test('the JSON line and the text line of a connection, and of a rejection (nulls, "-")', () => {
  const at = Date.parse('2026-12-02T12:40:01.532Z');
  assert.equal(
    jsonLine(end({}), at),
    '{"time":"2026-12-02T12:40:01.532Z","client":"203.0.113.7:51234","service":"web","backend":"web-1","backend_address":"10.0.0.11:8080","connect_ms":1,"duration_ms":153,"bytes_in":78,"bytes_out":1024,"retries":0,"queue_ms":0,"termination":"client_closed"}\n',
  );
  assert.equal(textLine(end({}), at), '2026-12-02T12:40:01.532Z 203.0.113.7:51234 web/web-1 10.0.0.11:8080 1/153 78 1024 0 client_closed\n');
  const rejected = end({ pickedBackend: null, connected: false, durationMs: 0, bytesIn: 0, bytesOut: 0, termination: 'rejected_acl' });
  assert.deepEqual(JSON.parse(jsonLine(rejected, at)), { time: '2026-12-02T12:40:01.532Z', client: '203.0.113.7:51234', service: 'web', backend: null, backend_address: null, connect_ms: null, duration_ms: 0, bytes_in: 0, bytes_out: 0, retries: 0, queue_ms: 0, termination: 'rejected_acl' });
  assert.equal(textLine(rejected, at), '2026-12-02T12:40:01.532Z 203.0.113.7:51234 web/- - -/0 0 0 0 rejected_acl\n');
  // docs/operations.md's examples are these lines
  const ops = readFileSync(join(__dirname, '..', '..', 'docs', 'operations.md'), 'utf8');
  assert.ok(ops.includes(jsonLine(end({}), at).trim()), 'docs/operations.md shows the JSON example');
  assert.ok(ops.includes(textLine(end({}), at).trim()), 'docs/operations.md shows the text example');
  assert.ok(ops.includes('web/- - -/0 0 0 0 rejected_acl'), 'docs/operations.md shows the rejected text example');
});

test('a destination that refuses every write (/dev/full): every line is dropped and counted, the failure said', async () => {
  let dropped = 0;
  const warnings: string[] = [];
  const log = new AccessLog({ now: Date.now, warn: (what, error) => warnings.push(`${what}: ${error}`), dropped: (n) => (dropped += n) });
  log.configure({ enabled: true, path: '/dev/full', format: 'json', sample: 1 });
  const n = MAX_QUEUED_LINES * 3;
  for (let i = 0; i < n; i++) log.write(end({}), Date.now());
  await waitFor(() => dropped === n, 20_000, `${n} lines dropped (${dropped})`);
  assert.match(warnings[0]!, /cannot write the access log \/dev\/full: ENOSPC/);
  log.configure({ enabled: false, path: '', format: 'json', sample: 1 });
  await log.flushed(1000);
});

test('a FIFO with no reader yet (opened non-blocking: ENXIO) is opened again until one comes; the lines queued meanwhile arrive', async (t) => {
  if (!requireTool(t, 'mkfifo (Debian package coreutils)', spawnSync('sh', ['-c', 'command -v mkfifo']).status === 0)) return;
  const fifo = join(tempDir(), 'access.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const warnings: string[] = [];
  const log = new AccessLog({ now: Date.now, warn: (what, error) => warnings.push(`${what}: ${error}`), dropped: () => assert.fail('nothing is dropped') });
  log.configure({ enabled: true, path: fifo, format: 'json', sample: 1 });
  for (let i = 0; i < 10; i++) log.write(end({ bytesIn: i }), Date.now());
  await waitFor(() => warnings.length > 0, 5000, 'the open to fail');
  assert.match(warnings[0]!, /cannot open the access log .*access\.fifo: ENXIO/);
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => reader.kill('SIGKILL'));
  let text = '';
  reader.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  await waitFor(() => text.split('\n').length === 11, 10_000, `10 lines through the FIFO (${text.length} bytes)`);
  assert.deepEqual(text.trim().split('\n').map((l) => (JSON.parse(l) as { bytes_in: number }).bytes_in), Array.from({ length: 10 }, (_, i) => i));
  log.configure({ enabled: false, path: '', format: 'json', sample: 1 });
  await log.flushed(1000);
});

test('lines written to a file in order; off, then a new file', async () => {
  const dir = tempDir();
  const log = new AccessLog({ now: Date.now, warn: () => {}, dropped: () => assert.fail('nothing is dropped') });
  const a = join(dir, 'a.log');
  log.configure({ enabled: true, path: a, format: 'text', sample: 1 });
  for (let i = 0; i < 1000; i++) log.write(end({ bytesIn: i }), Date.now());
  await waitFor(() => readFileSync(a, 'utf8').split('\n').length === 1001, 10_000, '1000 lines');
  assert.deepEqual(readFileSync(a, 'utf8').trim().split('\n').map((l) => Number(l.split(' ')[5])), Array.from({ length: 1000 }, (_, i) => i));
  log.configure({ enabled: false, path: a, format: 'text', sample: 1 });
  log.write(end({}), Date.now());
  assert.equal(log.sampleRate, 0);
  const b = join(dir, 'b.log');
  log.configure({ enabled: true, path: b, format: 'json', sample: 0.5 });
  assert.equal(log.sampleRate, 0.5);
  log.write(end({}), Date.now());
  await waitFor(() => readFileSync(b, 'utf8').length > 0, 10_000, 'a line in the new file');
  assert.equal(readFileSync(a, 'utf8').split('\n').length, 1001, 'nothing more in the old file');
  log.configure({ enabled: false, path: '', format: 'json', sample: 1 });
  await log.flushed(1000);
});

test('chart percentiles: read inside their bucket; none without samples', () => {
  const counts = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  assert.equal(quantile(counts, 0.5), null);
  const at = (ms: number): number => LATENCY_BOUNDS_MS.indexOf(ms);
  counts[at(2)] = 100; // (1, 2] ms
  assert.equal(quantile(counts, 0.5), 1.5);
  counts[at(100)] = 2; // (75, 100] ms: the slowest 2 of 102
  assert.equal(quantile(counts, 0.5), 1.51);
  assert.ok(quantile(counts, 0.99)! > 75 && quantile(counts, 0.99)! <= 100, String(quantile(counts, 0.99)));
  counts[counts.length - 1] = 1000; // beyond the last bound
  assert.equal(quantile(counts, 0.99), LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]);
});

test('the chart keeps per-second differences of the cumulative figures, 300 points per service', () => {
  const t = new TrafficFigures();
  const chart = new LiveChart();
  chart.sample(0, t, ['web']);
  for (let i = 0; i < 10; i++) t.ended('web', 'client_closed', 'web-1', null, 5, 500);
  t.ended('web', 'backend_reset', 'web-1', null, 5, 500);
  t.observeLatency('web', 1.5);
  chart.sample(2000, t, ['web']);
  assert.deepEqual(chart.view().services, [{ name: 'web', points: [[2000, 5.5, 0.5, 1.5, 1.99]] }]);
  for (let s = 3; s < 400; s++) chart.sample(s * 1000, t, ['web']);
  assert.equal(chart.view().services[0]!.points.length, 300);
  assert.deepEqual(chart.view().services[0]!.points.at(-1), [399_000, 0, 0, null, null]);
  chart.sample(400_000, t, []);
  assert.deepEqual(chart.view().services, [], 'a removed service leaves the chart');
});
