// Unit tests of configuration validation: src/config/ (settings, fields, validate) through parseAndValidate()
// (src/config/load.ts), with no environment. Every rule of the file's validation, good and bad, with the key
// path, the line and the key words of each message.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseAndValidate, locateKeys, MAX_NESTING } from '../../src/config/load';
import { parseDuration, parseRate, normaliseAlgorithm, didYouMean, validate, type Config } from '../../src/config/schema';
import type { ConfigIssue } from '../../src/errors';

const LISTEN = '127.0.0.1:8080';

interface Parts {
  readonly top?: string;
  readonly runtime?: string;
  /** listen_address of [proxy]; null leaves it out */
  readonly listen?: string | null;
  readonly proxy?: string;
  readonly strategy?: string;
  /** the body of each [[backends]] entry */
  readonly backends?: readonly string[];
  readonly health?: string;
  readonly metrics?: string;
  readonly admin?: string;
}

/** A config text with a fixed layout; sections are written only when given. */
function toml(p: Parts = {}): string {
  const out: string[] = [];
  if (p.top !== undefined) out.push(p.top);
  if (p.runtime !== undefined) out.push('[runtime]', p.runtime);
  out.push('[proxy]');
  if (p.listen !== null) out.push(`listen_address = "${p.listen ?? LISTEN}"`);
  if (p.proxy !== undefined) out.push(p.proxy);
  if (p.strategy !== undefined) out.push('[strategy]', p.strategy);
  for (const b of p.backends ?? ['address = "10.0.0.1:80"']) out.push('[[backends]]', b);
  if (p.health !== undefined) out.push('[health]', p.health);
  if (p.metrics !== undefined) out.push('[metrics]', p.metrics);
  if (p.admin !== undefined) out.push('[admin]', p.admin);
  return out.join('\n') + '\n';
}

/** 1-based number of the first line of `text` that equals `needle` (after trimming). */
function lineOf(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => l.trim() === needle);
  assert.ok(i >= 0, `test setup: "${needle}" is not a line of the text`);
  return i + 1;
}

function ok(text: string): Config {
  const r = parseAndValidate(text, {});
  if (!r.ok) assert.fail(`expected a valid config, got ${JSON.stringify(r.issues)}`);
  return r.config;
}

function bad(text: string): ConfigIssue[] {
  const r = parseAndValidate(text, {});
  if (r.ok) assert.fail('expected validation errors, got a valid config');
  return r.issues;
}

/** The one issue at `path` (fails when there are none or several). */
function issueAt(issues: readonly ConfigIssue[], path: string): ConfigIssue {
  const hits = issues.filter((i) => i.path === path);
  assert.equal(hits.length, 1, `expected exactly one issue at ${path}, got ${JSON.stringify(issues)}`);
  return hits[0]!;
}

function hasWords(message: string, words: readonly string[]): void {
  for (const w of words) assert.ok(message.includes(w), `message ${JSON.stringify(message)} lacks ${JSON.stringify(w)}`);
}

// ---------------------------------------------------------------------------------------------

describe('defaults', () => {
  test('an almost empty file (listen_address and one backend) gives every documented default', () => {
    const c = ok('[proxy]\nlisten_address = "0.0.0.0:8080"\n\n[[backends]]\naddress = "10.0.1.10:8080"\n');
    assert.deepEqual(c, {
      runtime: {
        metricsCap: 10000,
        healthCap: 1000,
        drainTimeoutMs: 30000,
        backgroundTimeoutMs: 60000,
        acceptTimeoutMs: 120000,
        configWatchIntervalMs: 5000,
        workers: 1,
      },
      proxy: {
        listenAddress: '0.0.0.0:8080',
        listen: { host: '0.0.0.0', port: 8080 },
        maxConnections: 100000,
        connectTimeoutMs: 3000,
        idleTimeoutMs: 3600000,
        tcpKeepaliveMs: 0,
        connectRetries: 2,
        proxyProtocol: 'off',
        acceptProxy: 'off',
        acceptProxyFrom: [],
        allow: [],
        deny: [],
        clientRateLimit: null,
        clientMaxConnections: 0,
        queueTimeoutMs: 0,
        queueMax: 1000,
        inspectTimeoutMs: 5000,
        protocol: 'tcp',
        udpIdleTimeoutMs: 30000,
        udpResponses: 0,
        udpAffinity: 'flow',
      },
      strategy: 'adaptive',
      backends: [
        { id: 0, name: 'backend-1', address: '10.0.1.10:8080', host: '10.0.1.10', port: 8080, weight: 1, maxConnections: 0, backup: false, resolve: 'none', srv: '' },
      ],
      health: { intervalMs: 10000, timeoutMs: 3000, kind: 'tcp', port: 0, path: '/health', send: '', expect: '', expectRegex: '', steps: [], healthyThreshold: 2, unhealthyThreshold: 3, slowStartMs: 0, agentPort: 0, agentIntervalMs: 0 },
      dns: { servers: [], minTtlMs: 1000, maxTtlMs: 300000, timeoutMs: 2000, family: 'any', maxEndpoints: 64 },
      // the seed's layout is the one service "default", with the [proxy] and [health] values above
      services: [
        {
          name: 'default',
          listenAddress: '0.0.0.0:8080',
          listen: { host: '0.0.0.0', port: 8080 },
          sni: [],
          maxConnections: 0,
          algorithm: 'adaptive',
          hashKey: 'source_ip',
          hashBalanceFactor: 0,
          proxy: { connectTimeoutMs: 3000, idleTimeoutMs: 3600000, tcpKeepaliveMs: 0, connectRetries: 2, proxyProtocol: 'off', acceptProxy: 'off', acceptProxyFrom: [], allow: [], deny: [], clientRateLimit: null, clientMaxConnections: 0, queueTimeoutMs: 0, queueMax: 1000, inspectTimeoutMs: 5000, protocol: 'tcp', udpIdleTimeoutMs: 30000, udpResponses: 0, udpAffinity: 'flow' },
          health: { intervalMs: 10000, timeoutMs: 3000, kind: 'tcp', port: 0, path: '/health', send: '', expect: '', expectRegex: '', steps: [], healthyThreshold: 2, unhealthyThreshold: 3, slowStartMs: 0, agentPort: 0, agentIntervalMs: 0 },
          // no [tls] table: the service relays bytes as they come
          tls: null,
          // no [backend_tls] table: plaintext to the backends
          backendTls: null,
          backends: [{ id: 0, name: 'backend-1', address: '10.0.1.10:8080', host: '10.0.1.10', port: 8080, weight: 1, maxConnections: 0, backup: false, resolve: 'none', srv: '' }],
        },
      ],
      tls: { certificates: [], minVersion: 'TLSv1.2', alpn: [], clientCa: '', clientAuth: 'none', handshakeTimeoutMs: 10000 },
      backend_tls: { enabled: false, ca: '', verify: true, serverName: '', cert: '', key: '' },
      tls_tickets: { keyFile: '' },
      metrics: { intervalMs: 30000 },
      access_log: { enabled: false, path: '', format: 'json', sample: 1 },
      admin: { listenAddress: '127.0.0.1:9090', listen: { host: '127.0.0.1', port: 9090 }, token: '', allowedHosts: [], tlsCert: '', tlsKey: '' },
    });
  });

  test('the seed layout ([proxy], [strategy], [[backends]], [health], …), written out in full, is valid and read as written', () => {
    const text = `
[runtime]
metrics_cap = 500
health_cap = 50
drain_timeout_millis = 1000
background_timeout_millis = 2000
accept_timeout_millis = 3000
config_watch_interval_millis = 700
workers = 0

[proxy]
listen_address = "[::]:9000"
max_connections = 42
connect_timeout = "250ms"
idle_timeout = "2m"
connect_retries = 0
proxy_protocol = "v2"
allow = ["10.0.0.0/8", "2001:db8::/32"]
deny = ["10.1.0.0/16"]
client_rate_limit = "100/s"
client_max_connections = 5

[strategy]
algorithm = "least_connections"

[[backends]]
id = 7
name = "web-a"
address = "10.0.1.10:8080"
weight = 10
max_connections = 3
backup = true

[health]
interval = "10s"
timeout = "3s"
kind = "http"
path = "/ping"
healthy_threshold = 4
unhealthy_threshold = 5
slow_start = "1h"

[metrics]
interval = 15000

[admin]
listen_address = ""
token = "s3cret"
`;
    const c = ok(text);
    assert.deepEqual(c.runtime, {
      metricsCap: 500,
      healthCap: 50,
      drainTimeoutMs: 1000,
      backgroundTimeoutMs: 2000,
      acceptTimeoutMs: 3000,
      configWatchIntervalMs: 700,
      workers: 0,
    });
    assert.equal(c.proxy.listenAddress, '[::]:9000');
    assert.deepEqual(c.proxy.listen, { host: '::', port: 9000 });
    assert.equal(c.proxy.maxConnections, 42);
    assert.equal(c.proxy.connectTimeoutMs, 250);
    assert.equal(c.proxy.idleTimeoutMs, 120000);
    assert.equal(c.proxy.connectRetries, 0);
    assert.equal(c.proxy.proxyProtocol, 'v2');
    assert.deepEqual(c.proxy.allow.map((x) => [x.text, x.bits]), [['10.0.0.0/8', 104], ['2001:db8::/32', 32]]);
    assert.deepEqual(c.proxy.deny.map((x) => x.text), ['10.1.0.0/16']);
    assert.deepEqual(c.proxy.clientRateLimit, { count: 100, perMs: 1000, text: '100/s' });
    assert.equal(c.proxy.clientMaxConnections, 5);
    assert.equal(c.strategy, 'least_connections');
    assert.deepEqual(c.backends, [
      { id: 7, name: 'web-a', address: '10.0.1.10:8080', host: '10.0.1.10', port: 8080, weight: 10, maxConnections: 3, backup: true, resolve: 'none', srv: '' },
    ]);
    assert.deepEqual(c.health, { intervalMs: 10000, timeoutMs: 3000, kind: 'http', port: 0, path: '/ping', send: '', expect: '', expectRegex: '', steps: [], healthyThreshold: 4, unhealthyThreshold: 5, slowStartMs: 3600000, agentPort: 0, agentIntervalMs: 0 });
    assert.equal(c.metrics.intervalMs, 15000);
    assert.deepEqual(c.admin, { listenAddress: '', listen: null, token: 's3cret', allowedHosts: [], tlsCert: '', tlsKey: '' });
  });

  test('the returned config is deeply frozen', () => {
    const c = ok(toml({ proxy: 'allow = ["10.0.0.0/8"]\nclient_rate_limit = "5/s"' }));
    for (const o of [c, c.runtime, c.proxy, c.proxy.listen, c.proxy.allow, c.proxy.allow[0], c.proxy.clientRateLimit, c.backends, c.backends[0], c.health, c.metrics, c.admin]) {
      assert.ok(Object.isFrozen(o), `${JSON.stringify(o)} is not frozen`);
    }
    assert.equal(Reflect.set(c.proxy, 'maxConnections', 1), false);
    assert.equal(c.proxy.maxConnections, 100000);
    assert.equal(Reflect.set(c.backends as unknown as object, '1', c.backends[0]), false);
    assert.equal(c.backends.length, 1);
    assert.equal(Reflect.set(c.backends[0]!, 'weight', 99), false);
    assert.equal(c.backends[0]!.weight, 1);
  });

  test('backends without id or name get index-based ones (id = index, name = backend-<id+1>)', () => {
    const c = ok(toml({ backends: ['address = "10.0.0.1:80"', 'address = "10.0.0.2:80"', 'address = "10.0.0.3:80"'] }));
    assert.deepEqual(c.backends.map((b) => [b.id, b.name]), [[0, 'backend-1'], [1, 'backend-2'], [2, 'backend-3']]);
  });

  test('a backend with an id but no name is named after its id; a name without an id keeps the index id', () => {
    const c = ok(toml({ backends: ['id = 7\naddress = "10.0.0.1:80"', 'name = "web"\naddress = "10.0.0.2:80"'] }));
    assert.deepEqual(c.backends.map((b) => [b.id, b.name]), [[7, 'backend-8'], [1, 'web']]);
  });

  test('backends keep the order of the file', () => {
    const c = ok(toml({ backends: ['id = 5\naddress = "h5:1"', 'id = 2\naddress = "h2:1"', 'id = 9\naddress = "h9:1"'] }));
    assert.deepEqual(c.backends.map((b) => b.id), [5, 2, 9]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('TOML syntax errors', () => {
  const cases: { name: string; text: string; line: number; words: string[] }[] = [
    { name: 'a value that is not a value', text: '[proxy]\nlisten_address = "127.0.0.1:8080"\n\n[[backends]]\naddress = "10.0.0.1:80"\nweight = = 3\n', line: 6, words: ['TOML syntax error', 'column'] },
    { name: 'an unterminated string', text: '[proxy]\nlisten_address = "127.0.0.1:8080\n[[backends]]\naddress = "10.0.0.1:80"\n', line: 2, words: ['TOML syntax error'] },
    { name: 'a table defined twice', text: '[proxy]\nlisten_address = "127.0.0.1:8080"\n[proxy]\nmax_connections = 5\n', line: 3, words: ['TOML syntax error', 'redefine'] },
    { name: 'a key without a value', text: '[health]\ninterval\n', line: 2, words: ['TOML syntax error'] },
    { name: 'an unclosed table header', text: '# comment\n\n[proxy\n', line: 3, words: ['TOML syntax error'] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const issues = bad(c.text);
      assert.equal(issues.length, 1, JSON.stringify(issues));
      assert.equal(issues[0]!.path, '(syntax)');
      assert.equal(issues[0]!.line, c.line);
      hasWords(issues[0]!.message, c.words);
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('value rules: every bad value names its key path, line and problem', () => {
  type Bad = { section: keyof Parts; line: string; path: string; words: string[] };
  const cases: Bad[] = [
    // [runtime]: caps > 0, positive durations
    { section: 'runtime', line: 'metrics_cap = 0', path: 'runtime.metrics_cap', words: ['greater than 0', '0'] },
    { section: 'runtime', line: 'metrics_cap = "10"', path: 'runtime.metrics_cap', words: ['whole number', '"10"'] },
    { section: 'runtime', line: 'health_cap = -1', path: 'runtime.health_cap', words: ['greater than 0', '-1'] },
    { section: 'runtime', line: 'health_cap = 2.5', path: 'runtime.health_cap', words: ['whole number'] },
    { section: 'runtime', line: 'drain_timeout_millis = 0', path: 'runtime.drain_timeout_millis', words: ['greater than 0'] },
    { section: 'runtime', line: 'drain_timeout_millis = -5', path: 'runtime.drain_timeout_millis', words: ['duration', '-5'] },
    { section: 'runtime', line: 'background_timeout_millis = "soon"', path: 'runtime.background_timeout_millis', words: ['duration', '"soon"'] },
    { section: 'runtime', line: 'accept_timeout_millis = 1.5', path: 'runtime.accept_timeout_millis', words: ['duration', '1.5'] },
    { section: 'runtime', line: 'accept_timeout_millis = "169h"', path: 'runtime.accept_timeout_millis', words: ['at most 7 days'] },
    { section: 'runtime', line: 'config_watch_interval_millis = "5 days"', path: 'runtime.config_watch_interval_millis', words: ['duration', '5 days'] },
    { section: 'runtime', line: 'config_watch_interval_millis = true', path: 'runtime.config_watch_interval_millis', words: ['duration', 'boolean'] },
    { section: 'runtime', line: 'workers = -1', path: 'runtime.workers', words: ['at least 0'] },
    { section: 'runtime', line: 'workers = 257', path: 'runtime.workers', words: ['at most 256'] },
    // [proxy]
    { section: 'proxy', line: 'max_connections = 0', path: 'proxy.max_connections', words: ['greater than 0'] },
    { section: 'proxy', line: 'max_connections = -10', path: 'proxy.max_connections', words: ['greater than 0', '-10'] },
    { section: 'proxy', line: 'max_connections = "many"', path: 'proxy.max_connections', words: ['whole number', 'many'] },
    { section: 'proxy', line: 'connect_timeout = 0', path: 'proxy.connect_timeout', words: ['greater than 0'] },
    { section: 'proxy', line: 'connect_timeout = "0s"', path: 'proxy.connect_timeout', words: ['greater than 0'] },
    { section: 'proxy', line: 'connect_timeout = "3 seconds"', path: 'proxy.connect_timeout', words: ['duration', '3 seconds'] },
    { section: 'proxy', line: 'idle_timeout = "10d"', path: 'proxy.idle_timeout', words: ['duration', '10d'] },
    { section: 'proxy', line: 'idle_timeout = "-1s"', path: 'proxy.idle_timeout', words: ['duration'] },
    { section: 'proxy', line: 'connect_retries = -1', path: 'proxy.connect_retries', words: ['at least 0'] },
    { section: 'proxy', line: 'connect_retries = 101', path: 'proxy.connect_retries', words: ['at most 100'] },
    { section: 'proxy', line: 'proxy_protocol = "v3"', path: 'proxy.proxy_protocol', words: ['"off"', '"v1"', '"v2"', '"v3"'] },
    { section: 'proxy', line: 'proxy_protocol = "V2"', path: 'proxy.proxy_protocol', words: ['did you mean "v2"'] },
    { section: 'proxy', line: 'proxy_protocol = true', path: 'proxy.proxy_protocol', words: ['expected one of', 'boolean'] },
    { section: 'proxy', line: 'allow = "10.0.0.0/8"', path: 'proxy.allow', words: ['array', 'CIDR'] },
    { section: 'proxy', line: 'allow = ["10.0.0.0/33"]', path: 'proxy.allow', words: ['10.0.0.0/33', 'prefix length', '0 to 32'] },
    { section: 'proxy', line: 'allow = ["10.0.0.0/8", "bogus"]', path: 'proxy.allow', words: ['"bogus"', 'not an IP address'] },
    { section: 'proxy', line: 'deny = ["::/129"]', path: 'proxy.deny', words: ['::/129', '0 to 128'] },
    { section: 'proxy', line: 'deny = ["10.0.0.0/"]', path: 'proxy.deny', words: ['prefix length'] },
    { section: 'proxy', line: 'deny = ["300.0.0.0/8"]', path: 'proxy.deny', words: ['not an IP address'] },
    { section: 'proxy', line: 'deny = [10]', path: 'proxy.deny', words: ['CIDR strings'] },
    { section: 'proxy', line: 'client_rate_limit = "fast"', path: 'proxy.client_rate_limit', words: ['rate', '"fast"'] },
    { section: 'proxy', line: 'client_rate_limit = "100/d"', path: 'proxy.client_rate_limit', words: ['rate', '100/d'] },
    { section: 'proxy', line: 'client_rate_limit = "0/s"', path: 'proxy.client_rate_limit', words: ['at least 1'] },
    { section: 'proxy', line: 'client_rate_limit = "-1/s"', path: 'proxy.client_rate_limit', words: ['rate'] },
    { section: 'proxy', line: 'client_rate_limit = 100', path: 'proxy.client_rate_limit', words: ['rate string'] },
    { section: 'proxy', line: 'client_max_connections = -1', path: 'proxy.client_max_connections', words: ['at least 0'] },
    { section: 'proxy', line: 'queue_max = 0', path: 'proxy.queue_max', words: ['greater than 0'] },
    { section: 'proxy', line: 'queue_timeout = "-1s"', path: 'proxy.queue_timeout', words: ['duration'] },
    { section: 'proxy', line: 'queue_timeout = "soon"', path: 'proxy.queue_timeout', words: ['duration', 'soon'] },
    // [strategy]
    { section: 'strategy', line: 'algorithm = "random"', path: 'strategy.algorithm', words: ['expected one of', '"round_robin"', '"adaptive"', '"random"'] },
    { section: 'strategy', line: 'algorithm = "round_robbin"', path: 'strategy.algorithm', words: ['did you mean "round_robin"'] },
    { section: 'strategy', line: 'algorithm = "least_conections"', path: 'strategy.algorithm', words: ['did you mean "least_connections"'] },
    { section: 'strategy', line: 'algorithm = 3', path: 'strategy.algorithm', words: ['expected one of'] },
    // [health]
    { section: 'health', line: 'interval = 0', path: 'health.interval', words: ['greater than 0'] },
    { section: 'health', line: 'timeout = "0ms"', path: 'health.timeout', words: ['greater than 0'] },
    { section: 'health', line: 'kind = "udp"', path: 'health.kind', words: ['"tcp"', '"http"', '"udp"'] },
    { section: 'health', line: 'kind = "htp"', path: 'health.kind', words: ['did you mean "http"'] },
    { section: 'health', line: 'path = 5', path: 'health.path', words: ['string'] },
    { section: 'health', line: 'healthy_threshold = 0', path: 'health.healthy_threshold', words: ['greater than 0'] },
    { section: 'health', line: 'unhealthy_threshold = 1001', path: 'health.unhealthy_threshold', words: ['at most 1000'] },
    { section: 'health', line: 'slow_start = -1', path: 'health.slow_start', words: ['duration'] },
    // [metrics]
    { section: 'metrics', line: 'interval = "30"', path: 'metrics.interval', words: ['duration', '"30"'] },
    { section: 'metrics', line: 'interval = 0', path: 'metrics.interval', words: ['greater than 0'] },
    // [admin]
    { section: 'admin', line: 'listen_address = "localhost"', path: 'admin.listen_address', words: ['host:port', 'localhost'] },
    { section: 'admin', line: 'listen_address = "127.0.0.1:0"', path: 'admin.listen_address', words: ['1 to 65535'] },
    { section: 'admin', line: 'listen_address = 9090', path: 'admin.listen_address', words: ['host:port', 'string'] },
    { section: 'admin', line: 'token = 123', path: 'admin.token', words: ['string'] },
  ];
  for (const c of cases) {
    test(`[${c.section}] ${c.line}`, () => {
      const text = toml({ [c.section]: c.line });
      const issues = bad(text);
      assert.equal(issues.length, 1, JSON.stringify(issues));
      const i = issueAt(issues, c.path);
      assert.equal(i.line, lineOf(text, c.line));
      hasWords(i.message, c.words);
    });
  }
});

describe('every timeout and interval must be positive', () => {
  const fields: [keyof Parts, string, (c: Config) => number][] = [
    ['runtime', 'drain_timeout_millis', (c) => c.runtime.drainTimeoutMs],
    ['runtime', 'background_timeout_millis', (c) => c.runtime.backgroundTimeoutMs],
    ['runtime', 'accept_timeout_millis', (c) => c.runtime.acceptTimeoutMs],
    ['runtime', 'config_watch_interval_millis', (c) => c.runtime.configWatchIntervalMs],
    ['proxy', 'connect_timeout', (c) => c.proxy.connectTimeoutMs],
    ['proxy', 'idle_timeout', (c) => c.proxy.idleTimeoutMs],
    ['health', 'interval', (c) => c.health.intervalMs],
    ['health', 'timeout', (c) => c.health.timeoutMs],
    ['metrics', 'interval', (c) => c.metrics.intervalMs],
  ];
  for (const [section, key, get] of fields) {
    for (const v of ['0', '"0ms"', '"0s"', '-1']) {
      test(`${section}.${key} = ${v}`, () => {
        const line = `${key} = ${v}`;
        const text = toml({ [section]: line });
        const i = issueAt(bad(text), `${section}.${key}`);
        assert.equal(i.line, lineOf(text, line));
        assert.ok(/greater than 0|duration/.test(i.message), i.message);
      });
    }
    test(`${section}.${key} = 1 is the smallest value`, () => {
      assert.equal(get(ok(toml({ [section]: `${key} = 1` }))), 1);
      assert.equal(get(ok(toml({ [section]: `${key} = "1ms"` }))), 1);
    });
  }
});

describe('backend rules', () => {
  type Bad = { name: string; backends: string[]; path: string; needle: string; words: string[] };
  const cases: Bad[] = [
    { name: 'missing address', backends: ['weight = 2'], path: 'backends[0].address', needle: '[[backends]]', words: ['needs an address', 'host:port'] },
    { name: 'address without port', backends: ['address = "10.0.0.1"'], path: 'backends[0].address', needle: 'address = "10.0.0.1"', words: ['host:port', '10.0.0.1'] },
    { name: 'address with empty port', backends: ['address = "10.0.0.1:"'], path: 'backends[0].address', needle: 'address = "10.0.0.1:"', words: ['port', '1 to 65535'] },
    { name: 'address without host', backends: ['address = ":80"'], path: 'backends[0].address', needle: 'address = ":80"', words: ['host'] },
    { name: 'port 0', backends: ['address = "10.0.0.1:0"'], path: 'backends[0].address', needle: 'address = "10.0.0.1:0"', words: ['1 to 65535', '0'] },
    { name: 'port 65536', backends: ['address = "10.0.0.1:65536"'], path: 'backends[0].address', needle: 'address = "10.0.0.1:65536"', words: ['1 to 65535', '65536'] },
    { name: 'non-numeric port', backends: ['address = "10.0.0.1:http"'], path: 'backends[0].address', needle: 'address = "10.0.0.1:http"', words: ['port', '"http"'] },
    { name: 'IPv6 without brackets', backends: ['address = "::1:80"'], path: 'backends[0].address', needle: 'address = "::1:80"', words: ['IPv6', 'brackets', '[::1]:80'] },
    { name: 'IPv6 in brackets without port', backends: ['address = "[::1]"'], path: 'backends[0].address', needle: 'address = "[::1]"', words: ['[ipv6]:port'] },
    { name: 'not an IPv6 address in brackets', backends: ['address = "[fe80::zz]:80"'], path: 'backends[0].address', needle: 'address = "[fe80::zz]:80"', words: ['not an IPv6 address'] },
    { name: 'a host with a space', backends: ['address = "my host:80"'], path: 'backends[0].address', needle: 'address = "my host:80"', words: ['not a valid host'] },
    { name: 'address as a number', backends: ['address = 8080'], path: 'backends[0].address', needle: 'address = 8080', words: ['host:port', 'string'] },
    { name: 'negative weight', backends: ['address = "10.0.0.1:80"\nweight = -1'], path: 'backends[0].weight', needle: 'weight = -1', words: ['at least 0', '-1'] },
    { name: 'fractional weight', backends: ['address = "10.0.0.1:80"\nweight = 1.5'], path: 'backends[0].weight', needle: 'weight = 1.5', words: ['whole number'] },
    { name: 'weight as a string', backends: ['address = "10.0.0.1:80"\nweight = "10"'], path: 'backends[0].weight', needle: 'weight = "10"', words: ['whole number'] },
    { name: 'negative max_connections', backends: ['address = "10.0.0.1:80"\nmax_connections = -1'], path: 'backends[0].max_connections', needle: 'max_connections = -1', words: ['at least 0'] },
    { name: 'backup not a boolean', backends: ['address = "10.0.0.1:80"\nbackup = "yes"'], path: 'backends[0].backup', needle: 'backup = "yes"', words: ['true or false'] },
    { name: 'negative id', backends: ['id = -1\naddress = "10.0.0.1:80"'], path: 'backends[0].id', needle: 'id = -1', words: ['at least 0'] },
    { name: 'id as a string', backends: ['id = "a"\naddress = "10.0.0.1:80"'], path: 'backends[0].id', needle: 'id = "a"', words: ['whole number'] },
    { name: 'empty name', backends: ['name = ""\naddress = "10.0.0.1:80"'], path: 'backends[0].name', needle: 'name = ""', words: ['non-empty'] },
    { name: 'name as a number', backends: ['name = 5\naddress = "10.0.0.1:80"'], path: 'backends[0].name', needle: 'name = 5', words: ['string'] },
    { name: 'unknown key in a backend, with a hint', backends: ['address = "10.0.0.1:80"\nwieght = 3'], path: 'backends[0].wieght', needle: 'wieght = 3', words: ['unknown key "wieght"', '[backends]', 'did you mean "weight"'] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const text = toml({ backends: c.backends });
      const issues = bad(text);
      assert.equal(issues.length, 1, JSON.stringify(issues));
      const i = issueAt(issues, c.path);
      assert.equal(i.line, lineOf(text, c.needle));
      hasWords(i.message, c.words);
    });
  }

  test('the error of the second backend names backends[1] and its line', () => {
    const text = toml({ backends: ['address = "10.0.0.1:80"', 'address = "10.0.0.2"'] });
    const i = issueAt(bad(text), 'backends[1].address');
    assert.equal(i.line, lineOf(text, 'address = "10.0.0.2"'));
  });

  const good: { address: string; host: string; port: number; shown: string }[] = [
    { address: '10.0.0.1:80', host: '10.0.0.1', port: 80, shown: '10.0.0.1:80' },
    { address: 'localhost:8080', host: 'localhost', port: 8080, shown: 'localhost:8080' },
    { address: 'web-1.example.com:65535', host: 'web-1.example.com', port: 65535, shown: 'web-1.example.com:65535' },
    { address: '[::1]:80', host: '::1', port: 80, shown: '[::1]:80' },
    { address: '[2001:db8::1]:443', host: '2001:db8::1', port: 443, shown: '[2001:db8::1]:443' },
    { address: '10.0.0.1:1', host: '10.0.0.1', port: 1, shown: '10.0.0.1:1' },
    { address: ' 10.0.0.1:080 ', host: '10.0.0.1', port: 80, shown: '10.0.0.1:80' },
  ];
  for (const g of good) {
    test(`address ${JSON.stringify(g.address)} is accepted`, () => {
      const b = ok(toml({ backends: [`address = "${g.address}"`] })).backends[0]!;
      assert.equal(b.host, g.host);
      assert.equal(b.port, g.port);
      assert.equal(b.address, g.shown);
    });
  }

  test('weight 0 is allowed (no new connections), as are max_connections and backup', () => {
    const b = ok(toml({ backends: ['address = "10.0.0.1:80"\nweight = 0\nmax_connections = 4\nbackup = true'] })).backends[0]!;
    assert.equal(b.weight, 0);
    assert.equal(b.maxConnections, 4);
    assert.equal(b.backup, true);
  });

  test('at least one backend: none at all', () => {
    const text = '[proxy]\nlisten_address = "127.0.0.1:8080"\n';
    const issues = bad(text);
    assert.equal(issues.length, 1);
    const i = issueAt(issues, 'backends');
    assert.equal(i.line, undefined);
    hasWords(i.message, ['at least one', '[[backends]]', 'LEMONADE_LB_BACKEND_ADDRESSES']);
  });

  test('at least one backend: an empty array', () => {
    const text = 'backends = []\n[proxy]\nlisten_address = "127.0.0.1:8080"\n';
    const i = issueAt(bad(text), 'backends');
    assert.equal(i.line, 1);
    hasWords(i.message, ['at least one']);
  });

  test('backends as a plain table is an error', () => {
    const text = '[proxy]\nlisten_address = "127.0.0.1:8080"\n[backends]\naddress = "10.0.0.1:80"\n';
    const i = issueAt(bad(text), 'backends');
    assert.equal(i.line, 3);
    hasWords(i.message, ['array of tables', '[[backends]]']);
  });

  test('a backend entry that is not a table is an error', () => {
    const text = 'backends = [1]\n[proxy]\nlisten_address = "127.0.0.1:8080"\n';
    const i = issueAt(bad(text), 'backends[0]');
    hasWords(i.message, ['expected a table']);
    assert.equal(i.line, 1);
  });

  const dups: { name: string; backends: string[]; path: string; needle: string; words: string[] }[] = [
    { name: 'duplicate ids', backends: ['id = 3\nname = "a"\naddress = "10.0.0.1:80"', 'id = 3\nname = "b"\naddress = "10.0.0.2:80"'], path: 'backends[1].id', needle: 'id = 3', words: ['duplicate id 3', 'backends[0]'] },
    { name: 'duplicate names', backends: ['name = "web"\naddress = "10.0.0.1:80"', 'name = "web"\naddress = "10.0.0.2:80"'], path: 'backends[1].name', needle: 'name = "web"', words: ['duplicate name "web"', 'backends[0]'] },
    { name: 'duplicate addresses', backends: ['address = "10.0.0.1:80"', 'address = "10.0.0.1:80"'], path: 'backends[1].address', needle: 'address = "10.0.0.1:80"', words: ['duplicate address "10.0.0.1:80"', 'backends[0]'] },
    { name: 'duplicate addresses written differently (port 080)', backends: ['address = "10.0.0.1:80"', 'address = "10.0.0.1:080"'], path: 'backends[1].address', needle: 'address = "10.0.0.1:080"', words: ['duplicate address'] },
    { name: 'an explicit name equal to a generated one', backends: ['address = "10.0.0.1:80"', 'name = "backend-1"\naddress = "10.0.0.2:80"'], path: 'backends[1].name', needle: 'name = "backend-1"', words: ['duplicate name "backend-1"'] },
  ];
  for (const c of dups) {
    test(c.name, () => {
      const text = toml({ backends: c.backends });
      const issues = bad(text);
      assert.equal(issues.length, 1, JSON.stringify(issues));
      const i = issueAt(issues, c.path);
      // the second occurrence of the needle is the duplicate (when the needle appears twice)
      const lines = text.split('\n');
      const hits = lines.map((l, n) => (l.trim() === c.needle ? n + 1 : 0)).filter((n) => n > 0);
      assert.equal(i.line, hits[hits.length - 1]);
      hasWords(i.message, c.words);
    });
  }

  test('a third duplicate points at the first occurrence', () => {
    const text = toml({ backends: ['id = 1\naddress = "a:1"', 'id = 2\naddress = "b:1"', 'id = 1\naddress = "c:1"'] });
    const i = issueAt(bad(text), 'backends[2].id');
    hasWords(i.message, ['duplicate id 1', 'also backends[0]']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('accepted values', () => {
  const durations: { v: string; ms: number }[] = [
    { v: '250', ms: 250 },
    { v: '"250ms"', ms: 250 },
    { v: '"10s"', ms: 10000 },
    { v: '"2m"', ms: 120000 },
    { v: '"1h"', ms: 3600000 },
    { v: '"1.5s"', ms: 1500 },
    { v: '"168h"', ms: 7 * 24 * 3600000 },
  ];
  for (const d of durations) {
    test(`duration ${d.v} = ${d.ms} ms`, () => {
      const c = ok(toml({ proxy: `connect_timeout = ${d.v}\nidle_timeout = ${d.v}`, health: `interval = ${d.v}\ntimeout = ${d.v}\nslow_start = ${d.v}`, metrics: `interval = ${d.v}`, runtime: `drain_timeout_millis = ${d.v}` }));
      assert.equal(c.proxy.connectTimeoutMs, d.ms);
      assert.equal(c.proxy.idleTimeoutMs, d.ms);
      assert.equal(c.health.intervalMs, d.ms);
      assert.equal(c.health.timeoutMs, d.ms);
      assert.equal(c.health.slowStartMs, d.ms);
      assert.equal(c.metrics.intervalMs, d.ms);
      assert.equal(c.runtime.drainTimeoutMs, d.ms);
    });
  }

  test('slow_start may be 0 ("0s" or 0); other durations may not', () => {
    assert.equal(ok(toml({ health: 'slow_start = "0s"' })).health.slowStartMs, 0);
    assert.equal(ok(toml({ health: 'slow_start = 0' })).health.slowStartMs, 0);
  });

  const algorithms: { v: string; want: string }[] = [
    { v: 'round_robin', want: 'round_robin' },
    { v: 'round-robin', want: 'round_robin' },
    { v: 'Round-Robin', want: 'round_robin' },
    { v: 'roundRobin', want: 'round_robin' },
    { v: 'weighted_round_robin', want: 'weighted_round_robin' },
    { v: 'weighted-round-robin', want: 'weighted_round_robin' },
    { v: 'least_connections', want: 'least_connections' },
    { v: 'least-connections', want: 'least_connections' },
    { v: 'fastest_response', want: 'fastest_response' },
    { v: 'fastest_response_time', want: 'fastest_response' },
    { v: 'fastest-response-time', want: 'fastest_response' },
    { v: 'adaptive', want: 'adaptive' },
  ];
  for (const a of algorithms) {
    test(`[strategy] algorithm = "${a.v}" → ${a.want}`, () => {
      assert.equal(ok(toml({ strategy: `algorithm = "${a.v}"` })).strategy, a.want);
    });
    test(`top-level strategy = "${a.v}" (older lemonade files) → ${a.want}`, () => {
      assert.equal(ok(toml({ top: `strategy = "${a.v}"` })).strategy, a.want);
    });
  }

  test('an unknown top-level strategy string is an error at strategy.algorithm', () => {
    const text = toml({ top: 'strategy = "adaptiv"' });
    const i = issueAt(bad(text), 'strategy.algorithm');
    assert.equal(i.line, 1);
    hasWords(i.message, ['expected one of', '"adaptiv"', 'did you mean "adaptive"']);
  });

  const rates: { v: string; count: number; perMs: number }[] = [
    { v: '100/s', count: 100, perMs: 1000 },
    { v: '600/m', count: 600, perMs: 60000 },
    { v: '10/minute', count: 10, perMs: 60000 },
    { v: '5/hour', count: 5, perMs: 3600000 },
    { v: '7/h', count: 7, perMs: 3600000 },
    { v: '3/sec', count: 3, perMs: 1000 },
    { v: ' 20 / second ', count: 20, perMs: 1000 },
  ];
  for (const r of rates) {
    test(`client_rate_limit = "${r.v}"`, () => {
      const got = ok(toml({ proxy: `client_rate_limit = "${r.v}"` })).proxy.clientRateLimit;
      assert.deepEqual(got, { count: r.count, perMs: r.perMs, text: r.v.trim() });
    });
  }

  test('client_rate_limit = "" is off', () => {
    assert.equal(ok(toml({ proxy: 'client_rate_limit = ""' })).proxy.clientRateLimit, null);
  });

  test('listen address forms: IPv6 [::]:8080, hostname, port 65535', () => {
    assert.deepEqual(ok(toml({ listen: '[::]:8080' })).proxy.listen, { host: '::', port: 8080 });
    assert.equal(ok(toml({ listen: '[::]:8080' })).proxy.listenAddress, '[::]:8080');
    assert.deepEqual(ok(toml({ listen: 'localhost:65535' })).proxy.listen, { host: 'localhost', port: 65535 });
  });

  test('admin listen_address "" disables the admin API', () => {
    const c = ok(toml({ admin: 'listen_address = ""' }));
    assert.equal(c.admin.listen, null);
    assert.equal(c.admin.listenAddress, '');
  });

  test('enums: proxy_protocol v1/v2/off and health kind http', () => {
    for (const v of ['off', 'v1', 'v2'] as const) assert.equal(ok(toml({ proxy: `proxy_protocol = "${v}"` })).proxy.proxyProtocol, v);
    assert.equal(ok(toml({ health: 'kind = "http"' })).health.kind, 'http');
  });

  test('range edges that are allowed: workers 0 and 256, retries 0 and 100, caps 1, thresholds 1 and 1000', () => {
    const c = ok(toml({ runtime: 'workers = 256\nmetrics_cap = 1\nhealth_cap = 1', proxy: 'connect_retries = 100\nmax_connections = 1', health: 'healthy_threshold = 1\nunhealthy_threshold = 1000' }));
    assert.equal(c.runtime.workers, 256);
    assert.equal(c.runtime.metricsCap, 1);
    assert.equal(c.runtime.healthCap, 1);
    assert.equal(c.proxy.connectRetries, 100);
    assert.equal(c.proxy.maxConnections, 1);
    assert.equal(c.health.healthyThreshold, 1);
    assert.equal(c.health.unhealthyThreshold, 1000);
    assert.equal(ok(toml({ runtime: 'workers = 0', proxy: 'connect_retries = 0' })).runtime.workers, 0);
  });

  test('CIDR lists keep their text and prefix (IPv4 prefixes counted over the mapped 128-bit form)', () => {
    const c = ok(toml({ proxy: 'allow = ["0.0.0.0/0", "192.168.1.7", "::/0", "fd00::/8"]' }));
    assert.deepEqual(c.proxy.allow.map((x) => [x.text, x.bits]), [['0.0.0.0/0', 96], ['192.168.1.7', 128], ['::/0', 0], ['fd00::/8', 8]]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('listen_address, unknown keys and sections', () => {
  test('a missing [proxy] listen_address is an error at the [proxy] line', () => {
    const text = toml({ listen: null, proxy: 'max_connections = 5' });
    const i = issueAt(bad(text), 'proxy.listen_address');
    assert.equal(i.line, lineOf(text, '[proxy]'));
    hasWords(i.message, ['required', 'LEMONADE_LB_LISTEN_ADDRESS']);
  });

  test('a missing [proxy] section is an error without a line', () => {
    const i = issueAt(bad('[[backends]]\naddress = "10.0.0.1:80"\n'), 'proxy.listen_address');
    assert.equal(i.line, undefined);
  });

  const listenBad: { v: string; words: string[] }[] = [
    { v: '0.0.0.0', words: ['host:port'] },
    { v: ':::8080', words: ['brackets'] },
    { v: '[::]', words: ['[ipv6]:port'] },
    { v: '0.0.0.0:0', words: ['1 to 65535'] },
    { v: '', words: ['host:port'] },
  ];
  for (const l of listenBad) {
    test(`listen_address = "${l.v}" is an error`, () => {
      const text = toml({ listen: l.v });
      const i = issueAt(bad(text), 'proxy.listen_address');
      assert.equal(i.line, lineOf(text, `listen_address = "${l.v}"`));
      hasWords(i.message, l.words);
    });
  }

  const unknown: { name: string; parts: Parts; path: string; needle: string; words: string[]; hint: boolean }[] = [
    { name: 'a misspelt section', parts: { top: '[helth]\ninterval = "1s"' }, path: 'helth', needle: '[helth]', words: ['unknown section or key "helth"', 'did you mean "health"'], hint: true },
    { name: 'a misspelt top-level key', parts: { top: 'backend = 1' }, path: 'backend', needle: 'backend = 1', words: ['unknown section or key "backend"', 'did you mean "backends"'], hint: true },
    { name: 'a far-off section', parts: { top: '[frobnicate]' }, path: 'frobnicate', needle: '[frobnicate]', words: ['unknown section or key "frobnicate"'], hint: false },
    { name: 'a misspelt [proxy] key', parts: { proxy: 'max_conections = 5' }, path: 'proxy.max_conections', needle: 'max_conections = 5', words: ['unknown key "max_conections"', '[proxy]', 'did you mean "max_connections"'], hint: true },
    { name: 'a misspelt [runtime] key', parts: { runtime: 'metric_cap = 5' }, path: 'runtime.metric_cap', needle: 'metric_cap = 5', words: ['unknown key "metric_cap"', '[runtime]', 'did you mean "metrics_cap"'], hint: true },
    { name: 'a misspelt [health] key', parts: { health: 'intervall = "1s"' }, path: 'health.intervall', needle: 'intervall = "1s"', words: ['unknown key', 'did you mean "interval"'], hint: true },
    { name: 'a misspelt [strategy] key', parts: { strategy: 'algoritm = "adaptive"' }, path: 'strategy.algoritm', needle: 'algoritm = "adaptive"', words: ['unknown key', 'did you mean "algorithm"'], hint: true },
    { name: 'a misspelt [admin] key', parts: { admin: 'tokn = "x"' }, path: 'admin.tokn', needle: 'tokn = "x"', words: ['unknown key', 'did you mean "token"'], hint: true },
    { name: 'a misspelt [metrics] key', parts: { metrics: 'interva = 5' }, path: 'metrics.interva', needle: 'interva = 5', words: ['unknown key', 'did you mean "interval"'], hint: true },
    { name: 'an unrelated [proxy] key', parts: { proxy: 'colour = "blue"' }, path: 'proxy.colour', needle: 'colour = "blue"', words: ['unknown key "colour"'], hint: false },
  ];
  for (const u of unknown) {
    test(`unknown: ${u.name}`, () => {
      const text = toml(u.parts);
      const issues = bad(text);
      assert.equal(issues.length, 1, JSON.stringify(issues));
      const i = issueAt(issues, u.path);
      assert.equal(i.line, lineOf(text, u.needle));
      hasWords(i.message, u.words);
      assert.equal(i.message.includes('did you mean'), u.hint);
    });
  }

  test('a section that is not a table is an error', () => {
    const text = 'health = 5\n' + toml();
    const issues = bad(text);
    assert.equal(issues.length, 1, JSON.stringify(issues));
    const i = issueAt(issues, 'health');
    assert.equal(i.line, 1);
    hasWords(i.message, ['expected a table [health]', 'number 5']);
  });

  test('[proxy] that is not a table is reported once', () => {
    const text = 'proxy = 5\n[[backends]]\naddress = "10.0.0.1:80"\n';
    const issues = bad(text);
    assert.equal(issues.filter((i) => i.path === 'proxy').length, 1, JSON.stringify(issues));
  });
});

// ---------------------------------------------------------------------------------------------

describe('all errors are collected', () => {
  test('several problems in several sections are reported together, each with its line', () => {
    const text = [
      '[runtime]',
      'metrics_cap = 0', // 2
      '[proxy]',
      'listen_address = "0.0.0.0"', // 4
      'max_connections = -1', // 5
      'allow = ["10.0.0.0/40"]', // 6
      'client_rate_limit = "lots"', // 7
      '[strategy]',
      'algorithm = "fastest"', // 9
      '[[backends]]',
      'id = 1',
      'address = "::1:80"', // 12
      '[[backends]]',
      'id = 1', // 14 (name given, so only the id clashes)
      'address = "10.0.0.2:80"',
      'weight = -3', // 16
      'name = "second"',
      '[health]',
      'timeout = 0', // 19
      'kind = "icmp"', // 20
      '[typo]', // 21
      '',
    ].join('\n');
    const issues = bad(text);
    const want: [string, number][] = [
      ['runtime.metrics_cap', 2],
      ['proxy.listen_address', 4],
      ['proxy.max_connections', 5],
      ['proxy.allow', 6],
      ['proxy.client_rate_limit', 7],
      ['strategy.algorithm', 9],
      ['backends[0].address', 12],
      ['backends[1].id', 14],
      ['backends[1].weight', 16],
      ['health.timeout', 19],
      ['health.kind', 20],
      ['typo', 21],
    ];
    assert.deepEqual(
      issues.map((i) => [i.path, i.line]).sort(),
      want.sort(),
    );
  });

  test('an empty file: no service at all is reported (listen_address is required only with top-level backends)', () => {
    const issues = bad('');
    assert.deepEqual(issues.map((i) => i.path).sort(), ['backends']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('helpers of the config layer (suggest.ts, fields.ts)', () => {
  test('parseDuration', () => {
    const cases: [unknown, number][] = [
      [0, 0],
      [1, 1],
      [250, 250],
      ['250ms', 250],
      ['10s', 10000],
      ['2m', 120000],
      ['1h', 3600000],
      ['0.25s', 250],
      [' 3s ', 3000],
      [10n, 10],
    ];
    for (const [v, ms] of cases) assert.equal(parseDuration(v), ms, String(v));
    for (const v of [-1, 1.5, '10', '10x', '1d', 's', '', '-1s', true, null, [1], {}]) {
      assert.equal(typeof parseDuration(v), 'string', `${JSON.stringify(v)} should be an error`);
    }
  });

  test('parseRate', () => {
    assert.equal(parseRate(''), null);
    assert.equal(parseRate('   '), null);
    assert.deepEqual(parseRate('100/s'), { count: 100, perMs: 1000, text: '100/s' });
    assert.deepEqual(parseRate('2/min'), { count: 2, perMs: 60000, text: '2/min' });
    assert.deepEqual(parseRate('9/hour'), { count: 9, perMs: 3600000, text: '9/hour' });
    for (const v of ['100', '/s', '1.5/s', '0/s', '100/day', '100 per second', 'x/s']) assert.equal(typeof parseRate(v), 'string', v);
  });

  test('normaliseAlgorithm', () => {
    const cases: [string, string][] = [
      ['round-robin', 'round_robin'],
      ['RoundRobin', 'round_robin'],
      ['roundrobin', 'round_robin'],
      [' least conn ', 'least_connections'],
      ['leastconn', 'least_connections'],
      ['weightedRoundRobin', 'weighted_round_robin'],
      ['weighted-roundrobin', 'weighted_round_robin'],
      ['FastestResponseTime', 'fastest_response'],
      ['ADAPTIVE', 'adaptive'],
      ['random', 'random'],
    ];
    for (const [v, want] of cases) assert.equal(normaliseAlgorithm(v), want, v);
  });

  test('didYouMean: close words get a hint, far ones none', () => {
    assert.equal(didYouMean('helth', ['runtime', 'health']), ' (did you mean "health"?)');
    assert.equal(didYouMean('WEIGHT', ['weight', 'name']), ' (did you mean "weight"?)');
    assert.equal(didYouMean('xyz', ['weight', 'name']), '');
    assert.equal(didYouMean('anything', []), '');
  });

  test('validate() without a locator reports no lines', () => {
    const r = validate({ proxy: { listen_address: 'x' }, backends: [{ address: 'a:1' }] });
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.deepEqual(r.issues.map((i) => [i.path, i.line]), [['proxy.listen_address', undefined]]);
    }
  });
});

describe('locateKeys', () => {
  test('sections, keys, arrays of tables and multi-line strings', () => {
    const text = [
      'top = 1', // 1
      '# a comment', // 2
      '[proxy]', // 3
      '  listen_address = "x:1"', // 4
      'token = """', // 5
      'fake = 1', // 6 (inside the string)
      '"""', // 7
      'after = 2', // 8
      '[[backends]]', // 9
      'id = 1', // 10
      '[[backends]]', // 11
      'id = 2', // 12
      '',
    ].join('\n');
    const m = locateKeys(text);
    assert.deepEqual([...m.entries()], [
      ['top', 1],
      ['proxy', 3],
      ['proxy.listen_address', 4],
      ['proxy.token', 5],
      ['proxy.after', 8],
      ['backends', 9],
      ['backends[0]', 9],
      ['backends[0].id', 10],
      ['backends[1]', 11],
      ['backends[1].id', 12],
    ]);
  });

  test('CRLF line endings count lines the same way', () => {
    const m = locateKeys('[proxy]\r\nlisten_address = "x:1"\r\n\r\n[health]\r\ninterval = 5\r\n');
    assert.equal(m.get('proxy.listen_address'), 2);
    assert.equal(m.get('health.interval'), 5);
  });
});

describe('nesting limit', () => {
  const nested = (n: number): string => `${'['.repeat(n)}${']'.repeat(n)}`;
  const deepIssue = (text: string): ConfigIssue | undefined => {
    const r = parseAndValidate(text, {});
    return r.ok ? undefined : r.issues.find((i) => i.message.includes('nested more than'));
  };

  test(`arrays nested ${MAX_NESTING} deep reach the parser and the schema; one more is refused with its line`, () => {
    const at = `[proxy]\nlisten_address = "127.0.0.1:1"\nallow = ${nested(MAX_NESTING)}\n`;
    assert.equal(deepIssue(at), undefined);
    const r = parseAndValidate(at, {});
    assert.ok(!r.ok && r.issues.some((i) => i.path === 'proxy.allow'), 'the schema saw the value');
    const over = deepIssue(`[proxy]\n# a comment\nallow = ${nested(MAX_NESTING + 1)}\n`);
    assert.deepEqual(over, { path: '(syntax)', line: 3, message: `arrays or inline tables nested more than ${MAX_NESTING} deep (no setting nests more than 2)` });
    assert.ok(deepIssue(`x = ${'{ a = '.repeat(MAX_NESTING + 1)}1${'}'.repeat(MAX_NESTING + 1)}\n`), 'inline tables count too');
  });

  test('brackets inside strings and comments do not count, and lines after multi-line strings stay right', () => {
    const many = '['.repeat(MAX_NESTING * 2);
    const text = [
      '[proxy]',
      `listen_address = "127.0.0.1:1" # ${many}`,
      '[[backends]]',
      `name = "${many}\\"${many}"`,
      `address = '${many}'`,
      '[[backends]]',
      'name = """',
      `${many}""`,
      '"""',
      `address = '''${many}`,
      "'''",
    ].join('\n');
    assert.equal(deepIssue(text), undefined);
    const r = parseAndValidate(text, {});
    assert.ok(!r.ok && !r.issues.some((i) => i.path === '(syntax)'), `the parser took it: ${JSON.stringify(r.ok ? null : r.issues[0])}`);
    assert.equal(deepIssue(`${text}\nx = ${nested(MAX_NESTING + 1)}\n`)?.line, 12);
  });
});

describe('tcp_keepalive', () => {
  test('off by default; a duration is kept in milliseconds (the relay rounds it up to seconds), at most 32767 s', () => {
    assert.equal(ok(toml()).proxy.tcpKeepaliveMs, 0);
    for (const [v, ms] of [['"0s"', 0], ['"500ms"', 500], ['"30s"', 30000], ['"2h"', 7200000], ['"32767s"', 32767000]] as const) {
      assert.equal(ok(toml({ proxy: `tcp_keepalive = ${v}` })).proxy.tcpKeepaliveMs, ms, v);
    }
    for (const v of ['"32768s"', '"10h"']) {
      const text = toml({ proxy: `tcp_keepalive = ${v}` });
      const i = issueAt(bad(text), 'proxy.tcp_keepalive');
      assert.equal(i.line, lineOf(text, `tcp_keepalive = ${v}`));
      assert.match(i.message, /at most 32767s/);
    }
    assert.match(issueAt(bad(toml({ proxy: 'tcp_keepalive = "soon"' })), 'proxy.tcp_keepalive').message, /expected a duration/);
  });

  test('a service inherits [proxy]\'s and may set its own', () => {
    const c = ok(`${toml({ proxy: 'tcp_keepalive = "45s"' })}[[services]]
name = "own"
listen_address = "127.0.0.1:8081"
tcp_keepalive = "10s"
[[services.backends]]
address = "10.0.0.2:80"
[[services]]
name = "inherits"
listen_address = "127.0.0.1:8082"
[[services.backends]]
address = "10.0.0.3:80"
`);
    const by = new Map(c.services.map((s) => [s.name, s.proxy.tcpKeepaliveMs]));
    assert.deepEqual([...by], [['default', 45000], ['own', 10000], ['inherits', 45000]]);
  });
});
