// Property tests (fast-check) of the three parsers that face untrusted or hand-written input:
// the config loader (generated and mutated TOML), the PROXY header encoder, and the admin API's
// request handling (raw HTTP requests to a real AdminServer). Each run prints its count and the
// slowest case (t.diagnostic). Seeds are printed by fast-check on failure; FUZZ_SEED replays one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { parseAndValidate, type Env } from '../../src/config/load';
import { bagDistance, editDistance } from '../../src/config/schema';
import { encodeProxyHeader } from '../../src/core/proxy-protocol';
import { AdminServer, type AdminApi } from '../../src/admin/server';
import type { BackendRow, StatusAnswer } from '../../src/admin/wire';

const SEED = process.env['FUZZ_SEED'] ? Number(process.env['FUZZ_SEED']) : undefined;
const params = (numRuns: number): fc.Parameters<unknown> => ({ numRuns, ...(SEED !== undefined ? { seed: SEED } : {}) });

/** fc.assert, with the counterexample cut short (a 60 KiB input would flood the test report) */
async function check<T>(prop: fc.IProperty<T> | fc.IAsyncProperty<T>, numRuns: number): Promise<void> {
  const r = await fc.check(prop as fc.IAsyncProperty<T>, { ...params(numRuns), endOnFailure: true });
  if (!r.failed) return;
  const ex = JSON.stringify(r.counterexample);
  const cause = r.errorInstance instanceof Error ? r.errorInstance.message : String(r.errorInstance);
  throw new Error(`property failed after ${r.numRuns} runs (seed ${r.seed}, FUZZ_SEED=${r.seed} replays it): ${cause.slice(0, 500)}\ncounterexample (${ex.length} chars): ${ex.slice(0, 600)}`);
}

// -------------------------------------------------------------------------------------------
// Config loader

const SAMPLE = readFileSync(join(__dirname, '..', '..', 'config', 'load-balancer.toml'), 'utf8');
const LIMIT_MS = 100;
const MAX_BYTES = 64 * 1024;

/** Time parseAndValidate; a case over the limit is timed three more times (GC pauses) and the best counts. */
function timedParse(text: string, env: Env): { ms: number; result: ReturnType<typeof parseAndValidate> } {
  let t0 = performance.now();
  const result = parseAndValidate(text, env);
  let ms = performance.now() - t0;
  for (let i = 0; i < 3 && ms > LIMIT_MS; i++) {
    t0 = performance.now();
    parseAndValidate(text, env);
    ms = Math.min(ms, performance.now() - t0);
  }
  return { ms, result };
}

function checkResult(r: ReturnType<typeof parseAndValidate>): void {
  assert.equal(typeof r, 'object');
  if (r.ok) {
    assert.equal(typeof r.config, 'object');
    assert.ok(r.config.backends.length >= 1);
  } else {
    assert.ok(Array.isArray(r.issues) && r.issues.length > 0, 'a failure names at least one issue');
    for (const i of r.issues) {
      assert.equal(typeof i.path, 'string');
      assert.equal(typeof i.message, 'string');
      assert.ok(i.message.length > 0);
      if (i.line !== undefined) assert.ok(Number.isInteger(i.line) && i.line >= 1, `line ${i.line}`);
    }
  }
}

const SECTIONS = ['runtime', 'proxy', 'strategy', 'health', 'metrics', 'access_log', 'admin', 'backends', 'proxi', '__proto__', 'constructor', 'prototype', 'toString', ''];
const KEYS = [
  'metrics_cap', 'health_cap', 'drain_timeout_millis', 'background_timeout_millis', 'accept_timeout_millis', 'config_watch_interval_millis', 'workers',
  'listen_address', 'max_connections', 'connect_timeout', 'idle_timeout', 'connect_retries', 'proxy_protocol', 'allow', 'deny', 'client_rate_limit', 'client_max_connections',
  'algorithm', 'id', 'name', 'address', 'weight', 'backup', 'interval', 'timeout', 'kind', 'path', 'healthy_threshold', 'unhealthy_threshold', 'slow_start', 'token', 'enabled', 'format', 'sample',
  'strategy', '__proto__', 'constructor', 'hasOwnProperty', 'valueOf', 'toString', 'length', 'wieght', 'a.b', '"quoted key"', "'lit'",
];
const STRINGS = [
  '0.0.0.0:8080', '127.0.0.1:0', '[::]:8080', '[::1]:65535', 'host:99999', 'example.com:80', ':80', '10.0.0.1', '[::1', '', ' ', '10s', '250ms', '2m', '1h', '0s', '-1s', '1e3ms', '99999999999999999999h',
  'v1', 'v2', 'off', 'V1', 'round_robin', 'round-robin', 'adaptive', 'fastest_response_time', 'nope', '100/s', '600/m', '0/s', '1/h', '/s', '10.0.0.0/8', '::/0', '1.2.3.4/33', 'fe80::%eth0/64',
  'tcp', 'http', '/health', 'héllo', '\u0000', '\ud800', 'a'.repeat(300), '"', '\\',
];

/** a TOML value, rendered as text */
const tomlValue: fc.Arbitrary<string> = fc.letrec<{ v: string }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.integer().map(String),
    fc.constantFrom('0', '-0', '1', '-1', '65535', '65536', '9007199254740993', '0x10', '0o7', '0b1', '1_000', '+inf', 'nan', '3.14', '1e400', 'true', 'false', '1979-05-27T07:32:00Z', '07:32:00'),
    fc.constantFrom(...STRINGS).map((s) => JSON.stringify(s)),
    fc.string({ maxLength: 20 }).map((s) => JSON.stringify(s)),
    fc.array(tie('v'), { maxLength: 4 }).map((a) => `[${a.join(', ')}]`),
    fc.array(fc.tuple(fc.constantFrom(...KEYS), tie('v')), { maxLength: 3 }).map((kv) => `{ ${kv.map(([k, v]) => `${k} = ${v}`).join(', ')} }`),
  ),
})).v;

const kvLine = fc.tuple(fc.constantFrom(...KEYS), tomlValue).map(([k, v]) => `${k} = ${v}`);
const header = fc.oneof(fc.constantFrom(...SECTIONS).map((s) => `[${s}]`), fc.constant('[[backends]]'), fc.constantFrom(...SECTIONS).map((s) => `[[${s}]]`));
const generated: fc.Arbitrary<string> = fc
  .array(fc.oneof({ weight: 1, arbitrary: header }, { weight: 4, arbitrary: kvLine }, { weight: 1, arbitrary: fc.constantFrom('', '# comment', '  ', 'strategy = "adaptive"') }), { maxLength: 40 })
  .map((lines) => lines.join('\n'));

/** valid-looking documents: the sample's structure with values swapped */
const sampleLines = SAMPLE.split('\n');
const swapped: fc.Arbitrary<string> = fc.array(fc.tuple(fc.nat(sampleLines.length - 1), tomlValue), { minLength: 1, maxLength: 6 }).map((edits) => {
  const lines = [...sampleLines];
  for (const [i, v] of edits) {
    const m = /^(\s*[\w"]+\s*=\s*)/.exec(lines[i]!);
    if (m) lines[i] = m[1] + v;
  }
  return lines.join('\n');
});

/** byte-level mutations of the sample */
type Mutation = { kind: 'delete' | 'insert' | 'dup' | 'swap' | 'flip' | 'truncate'; at: number; len: number; text: string };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom('delete', 'insert', 'dup', 'swap', 'flip', 'truncate'),
  at: fc.nat(),
  len: fc.integer({ min: 1, max: 40 }),
  text: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('[', ']', '"', "'", '=', '\n', '[[backends]]\n', '"""', "'''", '#', '\\u', '\r', '\t', '{', '}', ',', '.', '\u0000', '\ufeff')),
}) as fc.Arbitrary<Mutation>;
function mutate(text: string, ms: Mutation[]): string {
  let s = text;
  for (const m of ms) {
    const at = s.length === 0 ? 0 : m.at % s.length;
    switch (m.kind) {
      case 'delete':
        s = s.slice(0, at) + s.slice(at + m.len);
        break;
      case 'insert':
        s = s.slice(0, at) + m.text + s.slice(at);
        break;
      case 'dup':
        s = s.slice(0, at + m.len) + s.slice(at, at + m.len) + s.slice(at + m.len);
        break;
      case 'swap': {
        const lines = s.split('\n');
        const i = at % lines.length;
        const j = (at + m.len) % lines.length;
        [lines[i], lines[j]] = [lines[j]!, lines[i]!];
        s = lines.join('\n');
        break;
      }
      case 'flip':
        s = s.slice(0, at) + String.fromCharCode((s.charCodeAt(at) ^ (1 << (m.len % 7))) & 0xffff) + s.slice(at + 1);
        break;
      case 'truncate':
        s = s.slice(0, at);
        break;
    }
  }
  return s;
}
const mutated: fc.Arbitrary<string> = fc.array(mutation, { minLength: 1, maxLength: 8 }).map((ms) => mutate(SAMPLE, ms));

/** big documents near 64 KiB: many backends, long strings, deep arrays */
const big: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: 100, max: 500 }).map((n) => {
    const parts = ['[proxy]', 'listen_address = "127.0.0.1:8080"'];
    for (let i = 0; i < n; i++) parts.push('[[backends]]', `id = ${i % 450}`, `name = "b${i}"`, `address = "10.0.${i >> 8}.${i & 255}:80"`);
    return parts.join('\n').slice(0, MAX_BYTES - 1);
  }),
  fc.integer({ min: 1000, max: 60_000 }).map((n) => `[proxy]\nlisten_address = "${'a'.repeat(n)}:80"\n[[backends]]\nid = 0\nname = "x"\naddress = "1.2.3.4:5"\n`),
  // deep nesting: up to 5000 levels here (the test below takes 30,000)
  fc.integer({ min: 100, max: 5000 }).map((n) => `[proxy]\nallow = ${'['.repeat(n)}${']'.repeat(n)}\n`),
  fc.integer({ min: 100, max: 3000 }).map((n) => `[proxy]\nallow = [${Array.from({ length: n }, (_, i) => `"10.${i >> 8}.${i & 255}.0/24"`).join(',')}]\n[[backends]]\nid=0\nname="a"\naddress="1.2.3.4:5"\n`),
  fc.integer({ min: 1000, max: 30_000 }).map((n) => `${'#'.repeat(n)}\n${'\n'.repeat(n)}[proxy]`),
  // many unknown sections: up to 1000 here (the test below takes 8,000)
  fc.integer({ min: 100, max: 1000 }).map((n) => Array.from({ length: n }, (_, i) => `[s${i}]`).join('\n')),
);

const envArb: fc.Arbitrary<Env> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({}) },
  {
    weight: 1,
    arbitrary: fc.dictionary(
      fc.constantFrom('LEMONADE_LB_LISTEN_ADDRESS', 'LEMONADE_LB_STRATEGY', 'LEMONADE_LB_MAX_CONNECTIONS', 'LEMONADE_LB_BACKEND_ADDRESSES', 'LEMONADE_LB_HEALTH_INTERVAL_MS', 'LEMONADE_LOG', 'LEMONADE_LOG_FORMAT'),
      fc.oneof(fc.constantFrom(...STRINGS), fc.string({ maxLength: 10 }), fc.constant('127.0.0.1:1,127.0.0.1:2'), fc.constant('12')),
      { maxKeys: 3 },
    ),
  },
);

test('config loader: ≥ 10,000 generated and mutated files each give a config or a list of issues, never an exception, within 100 ms', async (t) => {
  const stats = { runs: 0, ok: 0, invalid: 0, maxMs: 0, maxBytes: 0, slowest: '' };
  const doc = fc.oneof({ weight: 3, arbitrary: generated }, { weight: 3, arbitrary: mutated }, { weight: 2, arbitrary: swapped }, { weight: 1, arbitrary: big });
  await check(
    fc.property(doc, envArb, (text, env) => {
      fc.pre(Buffer.byteLength(text) < MAX_BYTES);
      const { ms, result } = timedParse(text, env);
      stats.runs++;
      if (result.ok) stats.ok++;
      else stats.invalid++;
      stats.maxBytes = Math.max(stats.maxBytes, Buffer.byteLength(text));
      if (ms > stats.maxMs) {
        stats.maxMs = ms;
        stats.slowest = `${Buffer.byteLength(text)} bytes starting ${JSON.stringify(text.slice(0, 40))}`;
      }
      checkResult(result);
      assert.ok(ms <= LIMIT_MS, `${ms.toFixed(1)} ms for ${Buffer.byteLength(text)} bytes`);
    }),
    12_000,
  );
  // the unmodified sample is valid
  assert.ok(parseAndValidate(SAMPLE, {}).ok);
  t.diagnostic(`config fuzz: ${stats.runs} files (${stats.ok} valid, ${stats.invalid} invalid), largest ${stats.maxBytes} bytes, slowest ${stats.maxMs.toFixed(1)} ms (${stats.slowest})`);
  assert.ok(stats.runs >= 10_000);
});

test(
  'config loader: files near 64 KiB of 8,000 unknown sections, or arrays nested 30,000 deep, are answered within 100 ms',
  {},
  (t) => {
    const cases = {
      sections: Array.from({ length: 8000 }, (_, i) => `[s${i}]`).join('\n'),
      nesting: `[proxy]\nallow = ${'['.repeat(30_000)}${']'.repeat(30_000)}\n`,
    };
    const over: string[] = [];
    for (const [name, text] of Object.entries(cases)) {
      const { ms, result } = timedParse(text, {});
      t.diagnostic(`${name}: ${Buffer.byteLength(text)} bytes, ${result.ok ? 0 : result.issues.length} issues, best of 4: ${ms.toFixed(1)} ms`);
      checkResult(result);
      if (ms > LIMIT_MS) over.push(`${name} ${ms.toFixed(1)} ms`);
    }
    assert.deepEqual(over, []);
  },
);

test('did-you-mean: the quick lower bound never exceeds the edit distance, so it never hides a suggestion', async () => {
  const word = fc.oneof(fc.string({ maxLength: 12 }), fc.string({ unit: fc.constantFrom('a', 'b', 'c', '_', 'é'), maxLength: 10 }));
  await check(
    fc.property(word, word, (a, b) => {
      const lower = bagDistance(a, b);
      const d = editDistance(a, b);
      assert.ok(lower >= 0 && lower <= d, `bag ${lower} > edit ${d} for ${JSON.stringify([a, b])}`);
    }),
    20_000,
  );
});

// -------------------------------------------------------------------------------------------
// PROXY header encoder

const octet = fc.integer({ min: 0, max: 255 });
const v4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
const v6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':'));
/** any textual form: canonical (compressed), mapped, or not an address at all */
const address = fc.oneof(
  v4,
  v6,
  v6.map((a) => new URL(`http://[${a}]/`).hostname.slice(1, -1)),
  v4.map((a) => `::ffff:${a}`),
  fc.constantFrom('', 'localhost', '/run/x.sock', '::', '::1', '0.0.0.0', '1.2.3', '1.2.3.4.5', '256.1.1.1', 'fe80::1%eth0', ':::', '1::2::3'),
  fc.string({ maxLength: 40 }),
);
const port = fc.integer({ min: 0, max: 65535 });

/** 16 bytes of an address the encoder accepted, back to a comparable form (node's own canonical text) */
function canonical(a: string): { v4: boolean; text: string } | null {
  const plain = a.replace(/%.*$/, '');
  if (net.isIPv4(plain)) return { v4: true, text: plain.split('.').map(Number).join('.') };
  if (!net.isIPv6(plain)) return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(plain);
  if (mapped) return { v4: true, text: mapped[1]! };
  return { v4: false, text: new URL(`http://[${plain}]/`).hostname };
}

function v6FromBytes(b: Buffer): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return new URL(`http://[${g.join(':')}]/`).hostname;
}

test('PROXY encoder: any endpoints give a well-formed v1 line and v2 header that decode back to the same endpoints', async (t) => {
  let runs = 0;
  let maxMs = 0;
  let known = 0;
  await check(
    fc.property(address, port, address, port, (sa, sp, da, dp) => {
      runs++;
      const t0 = performance.now();
      const h1 = encodeProxyHeader('v1', { srcAddress: sa, srcPort: sp, dstAddress: da, dstPort: dp });
      const h2 = encodeProxyHeader('v2', { srcAddress: sa, srcPort: sp, dstAddress: da, dstPort: dp });
      maxMs = Math.max(maxMs, performance.now() - t0);
      const s = canonical(sa);
      const d = canonical(da);
      const same = s !== null && d !== null && s.v4 === d.v4;
      // v1: "PROXY …\r\n", at most 107 bytes, printable ASCII
      const line = h1.toString('latin1');
      assert.ok(h1.length <= 107 && line.startsWith('PROXY ') && line.endsWith('\r\n'));
      assert.ok(/^[\x20-\x7e]*\r\n$/.test(line));
      // v2: signature, version 2, length field = the rest
      assert.ok(h2.subarray(0, 12).equals(Buffer.from('0d0a0d0a000d0a515549540a', 'hex')));
      assert.equal(h2.readUInt16BE(14), h2.length - 16);
      if (!same) {
        assert.equal(line, 'PROXY UNKNOWN\r\n');
        assert.equal(h2[12], 0x20); // LOCAL
        assert.equal(h2[13], 0x00);
        return;
      }
      known++;
      const f = line.slice(6, -2).split(' ');
      assert.equal(f.length, 5);
      assert.equal(f[0], s.v4 ? 'TCP4' : 'TCP6');
      const dec = (x: string): string => (s.v4 ? x : new URL(`http://[${x}]/`).hostname);
      assert.equal(dec(f[1]!), s.text);
      assert.equal(dec(f[2]!), d.text);
      assert.deepEqual([Number(f[3]), Number(f[4])], [sp, dp]);
      assert.ok(f.slice(3).every((p) => /^(0|[1-9]\d*)$/.test(p)), 'ports without leading zeroes');
      assert.equal(h2[12], 0x21);
      if (s.v4) {
        assert.equal(h2[13], 0x11);
        assert.equal(h2.length, 16 + 12);
        assert.equal([...h2.subarray(16, 20)].join('.'), s.text);
        assert.equal([...h2.subarray(20, 24)].join('.'), d.text);
        assert.deepEqual([h2.readUInt16BE(24), h2.readUInt16BE(26)], [sp, dp]);
      } else {
        assert.equal(h2[13], 0x21);
        assert.equal(h2.length, 16 + 36);
        assert.equal(v6FromBytes(h2.subarray(16, 32)), s.text);
        assert.equal(v6FromBytes(h2.subarray(32, 48)), d.text);
        assert.deepEqual([h2.readUInt16BE(48), h2.readUInt16BE(50)], [sp, dp]);
      }
    }),
    20_000,
  );
  t.diagnostic(`PROXY encoder fuzz: ${runs} endpoint pairs (${known} with known addresses), slowest encode of both versions ${maxMs.toFixed(2)} ms`);
  assert.ok(maxMs < LIMIT_MS);
});

// -------------------------------------------------------------------------------------------
// Admin API request handling: a real AdminServer on a free port, raw requests

const fakeApi = (): AdminApi & { actions: number; reloads: number } => {
  const api = {
    actions: 0,
    reloads: 0,
    health: () => ({ status: 'healthy' as const, usable: 1, total: 1 }),
    ready: () => true,
    // only the HTTP layer is under test: the answers carry a field or two of their shapes
    status: () => ({ version: 'x' }) as StatusAnswer,
    backends: () => [{ name: 'b1', state: 'healthy' }] as BackendRow[],
    events: () => [],
    traffic: () => ({ interval_ms: 1000, services: [], terminations: [] }),
    services: () => [],
    backendAction: (_service: string | undefined, name: string) => {
      api.actions++;
      return name === 'b1' ? { kind: 'ok' as const, service: 'default', state: 'draining' as const } : { kind: 'not_found' as const, what: `backend named "${name}"` };
    },
    reload: async () => {
      api.reloads++;
      return { result: 'success' as const, generation: 2 };
    },
    metrics: async () => ({ contentType: 'text/plain', body: 'm 1\n' }),
    refresh: async () => undefined,
    token: () => 'sekret',
  };
  return api;
};

/** Send raw bytes, read until the server closes or a full response (by content-length) arrives. */
function raw(port: number, bytes: Buffer, timeoutMs = 3000): Promise<{ status: number; text: string; ms: number; timedOut: boolean }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const chunks: Buffer[] = [];
    let timedOut = false;
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (): void => {
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, text, ms: performance.now() - t0, timedOut });
    };
    const t = setTimeout(() => {
      timedOut = true;
      s.destroy();
    }, timeoutMs);
    s.on('connect', () => s.end(bytes));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      done();
    });
  });
}

const METHODS = ['GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'get', 'FOO', 'G\u00e9T', ''];
const SEGMENTS = ['', 'health', 'ready', 'status', 'backends', 'events', 'metrics', 'reload', 'b1', 'nope', 'drain', 'enable', 'disable', '%2F', '%', '%E0%A4%A', '%ff', '..', '.', '%00', '[', '?', '#', '//', 'a'.repeat(2000), '\u00e9'];
const pathArb = fc.oneof(
  fc.array(fc.constantFrom(...SEGMENTS), { maxLength: 5 }).map((p) => '/' + p.join('/')),
  fc.constantFrom('*', 'http://x/health', '//[', '//x/health', '/backends/b1/drain?x=1', '/health?', '/%', 'nopath', '/backends/%E0%A4%A/drain', '/backends/%/enable'),
  fc.string({ maxLength: 30 }).map((s) => '/' + s.replace(/[\s]/g, '')),
);
const headerArb = fc.array(
  fc.oneof(
    fc.constantFrom('Authorization: Bearer sekret', 'Authorization: Bearer wrong', 'Authorization: bearer   sekret  ', 'Authorization: Basic x', 'Authorization:', 'Content-Length: 5', 'Content-Length: -1',
      'Content-Length: 99999999999', 'Transfer-Encoding: chunked', 'Host: x', 'Connection: close', 'Expect: 100-continue', 'X: \u00ff', 'Content-Length: 1\r\nContent-Length: 2',
      'Origin: http://evil.example', 'Sec-Fetch-Site: cross-site'),
    fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,12}$/), fc.string({ maxLength: 20 })).map(([k, v]) => `${k}: ${v.replace(/[\r\n]/g, '')}`),
  ),
  { maxLength: 4 },
);
const requestArb = fc.tuple(fc.constantFrom(...METHODS), pathArb, fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 extra', ''), headerArb, fc.oneof(fc.constant(''), fc.string({ maxLength: 64 }), fc.constant('5\r\nhello\r\n0\r\n\r\n')));

test('admin API: random requests (methods, paths, headers, bodies) always get an answer below 500, mutations only with the token', async (t) => {
  const api = fakeApi();
  const admin = new AdminServer(api);
  await admin.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => admin.close());
  const port = Number(admin.address.split(':').pop());
  const stats = { runs: 0, byStatus: {} as Record<string, number>, maxMs: 0, serverErrors: [] as string[] };
  await check(
    fc.asyncProperty(requestArb, async ([method, path, version, headers, body]) => {
      const head = `${method} ${path} ${version}`.trim();
      // an IP literal: a name would be refused (421) before anything else on a loopback admin API
      const text = `${head}\r\n${['Host: 127.0.0.1', ...headers].join('\r\n')}\r\n\r\n${body}`;
      const before = api.actions + api.reloads;
      const r = await raw(port, Buffer.from(text, 'utf8'));
      stats.runs++;
      stats.byStatus[r.status] = (stats.byStatus[r.status] ?? 0) + 1;
      stats.maxMs = Math.max(stats.maxMs, r.ms);
      assert.ok(!r.timedOut, `no answer to ${JSON.stringify(text.slice(0, 120))}`);
      // 0 = closed without an answer (the HTTP parser refused the bytes outright)
      const badUrl = ((): boolean => {
        try {
          new URL(path, 'http://admin');
          return false;
        } catch {
          return true;
        }
      })();
      if (r.status >= 500) stats.serverErrors.push(`${badUrl ? '[invalid URL] ' : ''}${r.status} for ${JSON.stringify(head.slice(0, 80))}: ${r.text.split('\r\n\r\n')[1]?.replace(/\s+/g, ' ').slice(0, 80)}`);
      const mutated = api.actions + api.reloads > before;
      if (mutated) assert.ok(/authorization: bearer\s+sekret\s*(\r|$)/im.test(text), `a mutation without the token: ${JSON.stringify(text.slice(0, 120))}`);
      if (mutated) assert.ok(!/^(origin: http:\/\/evil|sec-fetch-site: cross-site)/im.test(text), `a cross-site mutation: ${JSON.stringify(text.slice(0, 120))}`);
    }),
    1500,
  );
  t.diagnostic(`admin fuzz: ${stats.runs} requests, statuses ${JSON.stringify(stats.byStatus)}, slowest ${stats.maxMs.toFixed(1)} ms, server errors ${stats.serverErrors.length}`);
  for (const e of [...new Set(stats.serverErrors)].slice(0, 5)) t.diagnostic(`  ${e}`);
  assert.ok(stats.maxMs < 1000);
  // no request may be answered 500
  assert.deepEqual(stats.serverErrors, []);
  // the server survives it all
  const ok = await raw(port, Buffer.from('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
  assert.equal(ok.status, 200);
  adminServerErrors = stats.serverErrors;
});

let adminServerErrors: string[] = [];

test(
  'admin API: a malformed URL is a client error (4xx), not a 500',
  {},
  async (t) => {
    const api = fakeApi();
    const admin = new AdminServer(api);
    await admin.listen({ host: '127.0.0.1', port: 0 });
    t.after(() => admin.close());
    const port = Number(admin.address.split(':').pop());
    const a = await raw(port, Buffer.from('GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
    const b = await raw(port, Buffer.from('POST /backends/%E0%A4%A/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sekret\r\n\r\n'));
    t.diagnostic(`GET //[ → ${a.status}; POST /backends/%E0%A4%A/drain → ${b.status}; fuzz server errors: ${adminServerErrors.length}`);
    assert.ok(a.status >= 400 && a.status < 500, `GET //[ → ${a.status}`);
    assert.ok(b.status >= 400 && b.status < 500, `bad percent-encoding → ${b.status}`);
  },
);
