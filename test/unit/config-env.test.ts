// Environment overrides (LEMONADE_LB_*) through parseAndValidate(text, env), and loadConfig() on real
// files in a temporary directory.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAndValidate, loadConfig, resolveConfigPath, DEFAULT_CONFIG_PATH, ENV_VARIABLES, type Env } from '../../src/config/load';
import type { Config } from '../../src/config/schema';
import { ConfigInvalidError, ConfigMissingError, ConfigReadError, type ConfigIssue } from '../../src/errors';

/** A file whose every overridable value differs from both the defaults and the env values used. */
const FILE = `[runtime]
metrics_cap = 11
health_cap = 12
drain_timeout_millis = 13
background_timeout_millis = 14
accept_timeout_millis = 15
config_watch_interval_millis = 16

[proxy]
listen_address = "127.0.0.1:1000"
max_connections = 17

[strategy]
algorithm = "round_robin"

[[backends]]
id = 40
name = "file-a"
address = "10.9.9.1:80"
weight = 5

[[backends]]
id = 41
name = "file-b"
address = "10.9.9.2:80"

[health]
interval = 18
timeout = 19

[metrics]
interval = 20

[admin]
listen_address = "127.0.0.1:2000"
`;

function ok(text: string, env: Env): Config {
  const r = parseAndValidate(text, env);
  if (!r.ok) assert.fail(`expected a valid config, got ${JSON.stringify(r.issues)}`);
  return r.config;
}

function bad(text: string, env: Env): ConfigIssue[] {
  const r = parseAndValidate(text, env);
  if (r.ok) assert.fail('expected validation errors, got a valid config');
  return r.issues;
}

function only(issues: readonly ConfigIssue[], path: string): ConfigIssue {
  assert.equal(issues.length, 1, JSON.stringify(issues));
  assert.equal(issues[0]!.path, path);
  return issues[0]!;
}

describe('each LEMONADE_LB_* variable overrides the file', () => {
  test('the file alone gives the file values (baseline)', () => {
    const c = ok(FILE, {});
    assert.equal(c.runtime.metricsCap, 11);
    assert.equal(c.proxy.listenAddress, '127.0.0.1:1000');
    assert.equal(c.strategy, 'round_robin');
    assert.equal(c.admin.listenAddress, '127.0.0.1:2000');
    assert.deepEqual(c.backends.map((b) => b.name), ['file-a', 'file-b']);
  });

  const cases: { name: string; value: string; get: (c: Config) => unknown; want: unknown }[] = [
    { name: 'LEMONADE_LB_LISTEN_ADDRESS', value: '[::]:8443', get: (c) => [c.proxy.listenAddress, c.proxy.listen!.host, c.proxy.listen!.port], want: ['[::]:8443', '::', 8443] },
    { name: 'LEMONADE_LB_STRATEGY', value: 'least-connections', get: (c) => c.strategy, want: 'least_connections' },
    { name: 'LEMONADE_LB_MAX_CONNECTIONS', value: '777', get: (c) => c.proxy.maxConnections, want: 777 },
    { name: 'LEMONADE_LB_ADMIN_ADDRESS', value: '0.0.0.0:9999', get: (c) => [c.admin.listenAddress, c.admin.listen], want: ['0.0.0.0:9999', { host: '0.0.0.0', port: 9999 }] },
    { name: 'LEMONADE_LB_ADMIN_ADDRESS', value: '', get: (c) => [c.admin.listenAddress, c.admin.listen], want: ['', null] },
    { name: 'LEMONADE_LB_METRICS_CAP', value: '501', get: (c) => c.runtime.metricsCap, want: 501 },
    { name: 'LEMONADE_LB_HEALTH_CAP', value: '502', get: (c) => c.runtime.healthCap, want: 502 },
    { name: 'LEMONADE_LB_DRAIN_TIMEOUT_MS', value: '1503', get: (c) => c.runtime.drainTimeoutMs, want: 1503 },
    { name: 'LEMONADE_LB_BACKGROUND_TIMEOUT_MS', value: '1504', get: (c) => c.runtime.backgroundTimeoutMs, want: 1504 },
    { name: 'LEMONADE_LB_ACCEPT_TIMEOUT_MS', value: '1505', get: (c) => c.runtime.acceptTimeoutMs, want: 1505 },
    { name: 'LEMONADE_LB_CONFIG_WATCH_INTERVAL_MS', value: '1506', get: (c) => c.runtime.configWatchIntervalMs, want: 1506 },
    { name: 'LEMONADE_LB_WORKERS', value: '3', get: (c) => c.runtime.workers, want: 3 },
    { name: 'LEMONADE_LB_HEALTH_INTERVAL_MS', value: '1507', get: (c) => c.health.intervalMs, want: 1507 },
    { name: 'LEMONADE_LB_HEALTH_TIMEOUT_MS', value: '1508', get: (c) => c.health.timeoutMs, want: 1508 },
    { name: 'LEMONADE_LB_METRICS_INTERVAL_MS', value: '1509', get: (c) => c.metrics.intervalMs, want: 1509 },
    { name: 'LEMONADE_LB_MAX_CONNECTIONS', value: ' 42 ', get: (c) => c.proxy.maxConnections, want: 42 },
  ];
  for (const c of cases) {
    test(`${c.name}=${JSON.stringify(c.value)}`, () => {
      const base = ok(FILE, {});
      const got = ok(FILE, { [c.name]: c.value });
      assert.deepEqual(c.get(got), c.want);
      assert.notDeepEqual(c.get(base), c.want, 'test setup: the file must hold a different value');
    });
  }

  test('every override also applies when its section is absent from the file', () => {
    const env: Env = {
      LEMONADE_LB_LISTEN_ADDRESS: '127.0.0.1:7000',
      LEMONADE_LB_STRATEGY: 'weighted_round_robin',
      LEMONADE_LB_METRICS_CAP: '3',
      LEMONADE_LB_HEALTH_INTERVAL_MS: '4',
      LEMONADE_LB_METRICS_INTERVAL_MS: '5',
      LEMONADE_LB_ADMIN_ADDRESS: '127.0.0.1:7001',
    };
    const c = ok('[[backends]]\naddress = "10.0.0.1:80"\n', env);
    assert.equal(c.proxy.listenAddress, '127.0.0.1:7000');
    assert.equal(c.strategy, 'weighted_round_robin');
    assert.equal(c.runtime.metricsCap, 3);
    assert.equal(c.health.intervalMs, 4);
    assert.equal(c.metrics.intervalMs, 5);
    assert.equal(c.admin.listenAddress, '127.0.0.1:7001');
  });

  test('LEMONADE_LB_STRATEGY overrides an older top-level strategy = "…" key', () => {
    const text = 'strategy = "round-robin"\n[proxy]\nlisten_address = "127.0.0.1:1"\n[[backends]]\naddress = "10.0.0.1:80"\n';
    assert.equal(ok(text, {}).strategy, 'round_robin');
    assert.equal(ok(text, { LEMONADE_LB_STRATEGY: 'fastest_response_time' }).strategy, 'fastest_response');
  });

  test('an environment value replaces an invalid file value (no error for the file value)', () => {
    const text = '[proxy]\nlisten_address = "nowhere"\nmax_connections = 0\n[[backends]]\naddress = "10.0.0.1:80"\n';
    assert.equal(parseAndValidate(text, {}).ok, false);
    const c = ok(text, { LEMONADE_LB_LISTEN_ADDRESS: '127.0.0.1:5', LEMONADE_LB_MAX_CONNECTIONS: '5' });
    assert.equal(c.proxy.listenAddress, '127.0.0.1:5');
    assert.equal(c.proxy.maxConnections, 5);
  });

  test('unset variables (undefined) change nothing', () => {
    assert.deepEqual(ok(FILE, { LEMONADE_LB_LISTEN_ADDRESS: undefined, LEMONADE_LB_MAX_CONNECTIONS: undefined }), ok(FILE, {}));
  });

  test('LEMONADE_LB_CONFIG names the file but is not a config value', () => {
    assert.deepEqual(ok(FILE, { LEMONADE_LB_CONFIG: '/somewhere/else.toml' }), ok(FILE, {}));
  });

  test('ENV_VARIABLES lists every documented variable, and LEMONADE_LB_WORKERS (an extension)', () => {
    const spec = [
      'LEMONADE_LB_LISTEN_ADDRESS',
      'LEMONADE_LB_STRATEGY',
      'LEMONADE_LB_MAX_CONNECTIONS',
      'LEMONADE_LB_BACKEND_ADDRESSES',
      'LEMONADE_LB_ADMIN_ADDRESS',
      'LEMONADE_LB_CONFIG',
      'LEMONADE_LB_METRICS_CAP',
      'LEMONADE_LB_HEALTH_CAP',
      'LEMONADE_LB_DRAIN_TIMEOUT_MS',
      'LEMONADE_LB_BACKGROUND_TIMEOUT_MS',
      'LEMONADE_LB_ACCEPT_TIMEOUT_MS',
      'LEMONADE_LB_CONFIG_WATCH_INTERVAL_MS',
      'LEMONADE_LB_HEALTH_INTERVAL_MS',
      'LEMONADE_LB_HEALTH_TIMEOUT_MS',
      'LEMONADE_LB_METRICS_INTERVAL_MS',
      'LEMONADE_LB_WORKERS',
    ];
    assert.deepEqual([...ENV_VARIABLES].sort(), spec.sort());
  });
});

describe('LEMONADE_LB_BACKEND_ADDRESSES', () => {
  test('replaces [[backends]] with ids 0.. and names backend-1..', () => {
    const c = ok(FILE, { LEMONADE_LB_BACKEND_ADDRESSES: '10.1.0.1:8080,10.1.0.2:8080,[::1]:9000' });
    assert.deepEqual(
      c.backends.map((b) => ({ ...b })),
      [
        { id: 0, name: 'backend-1', address: '10.1.0.1:8080', host: '10.1.0.1', port: 8080, weight: 1, maxConnections: 0, backup: false, resolve: 'none', srv: '' },
        { id: 1, name: 'backend-2', address: '10.1.0.2:8080', host: '10.1.0.2', port: 8080, weight: 1, maxConnections: 0, backup: false, resolve: 'none', srv: '' },
        { id: 2, name: 'backend-3', address: '[::1]:9000', host: '::1', port: 9000, weight: 1, maxConnections: 0, backup: false, resolve: 'none', srv: '' },
      ],
    );
  });

  test('spaces and empty items are ignored', () => {
    const c = ok(FILE, { LEMONADE_LB_BACKEND_ADDRESSES: ' a:1 , ,b:2,' });
    assert.deepEqual(c.backends.map((b) => [b.id, b.name, b.address]), [[0, 'backend-1', 'a:1'], [1, 'backend-2', 'b:2']]);
  });

  test('invalid file backends do not matter when the environment replaces them', () => {
    const text = '[proxy]\nlisten_address = "127.0.0.1:1"\n[[backends]]\naddress = "nope"\nweight = -1\n';
    assert.equal(parseAndValidate(text, {}).ok, false);
    assert.deepEqual(ok(text, { LEMONADE_LB_BACKEND_ADDRESSES: 'h:1' }).backends.map((b) => b.address), ['h:1']);
  });

  const invalid: { value: string; words: string[] }[] = [
    { value: '10.0.0.1:80,10.0.0.2', words: ['host:port', '10.0.0.2', 'backends[1].address'] },
    { value: '::1:80', words: ['brackets', 'backends[0].address'] },
    { value: 'a:1,a:1', words: ['duplicate address', 'backends[1].address'] },
    { value: 'a:0', words: ['1 to 65535'] },
    { value: '', words: ['comma-separated list', 'nothing'] },
    { value: ' , ', words: ['comma-separated list'] },
  ];
  for (const c of invalid) {
    test(`an invalid value ${JSON.stringify(c.value)} is an error named after the variable`, () => {
      const i = only(bad(FILE, { LEMONADE_LB_BACKEND_ADDRESSES: c.value }), 'LEMONADE_LB_BACKEND_ADDRESSES');
      assert.equal(i.line, undefined);
      for (const w of c.words) assert.ok(i.message.includes(w), `${i.message} lacks ${w}`);
    });
  }
});

describe('invalid environment values are errors named after the variable', () => {
  const cases: { name: string; value: string; words: string[] }[] = [
    { name: 'LEMONADE_LB_MAX_CONNECTIONS', value: 'lots', words: ['whole number', '"lots"'] },
    { name: 'LEMONADE_LB_MAX_CONNECTIONS', value: '-5', words: ['whole number'] },
    { name: 'LEMONADE_LB_MAX_CONNECTIONS', value: '1.5', words: ['whole number'] },
    { name: 'LEMONADE_LB_MAX_CONNECTIONS', value: '', words: ['whole number'] },
    { name: 'LEMONADE_LB_MAX_CONNECTIONS', value: '0', words: ['greater than 0', 'from the environment', 'proxy.max_connections'] },
    { name: 'LEMONADE_LB_METRICS_CAP', value: '0', words: ['greater than 0', 'runtime.metrics_cap'] },
    { name: 'LEMONADE_LB_HEALTH_CAP', value: 'x', words: ['whole number'] },
    { name: 'LEMONADE_LB_DRAIN_TIMEOUT_MS', value: '10s', words: ['whole number', '"10s"'] },
    { name: 'LEMONADE_LB_DRAIN_TIMEOUT_MS', value: '0', words: ['greater than 0', 'runtime.drain_timeout_millis'] },
    { name: 'LEMONADE_LB_BACKGROUND_TIMEOUT_MS', value: 'soon', words: ['whole number'] },
    { name: 'LEMONADE_LB_ACCEPT_TIMEOUT_MS', value: '0', words: ['greater than 0'] },
    { name: 'LEMONADE_LB_CONFIG_WATCH_INTERVAL_MS', value: '-1', words: ['whole number'] },
    { name: 'LEMONADE_LB_HEALTH_INTERVAL_MS', value: '0', words: ['greater than 0', 'health.interval'] },
    { name: 'LEMONADE_LB_HEALTH_TIMEOUT_MS', value: '3s', words: ['whole number'] },
    { name: 'LEMONADE_LB_METRICS_INTERVAL_MS', value: '0', words: ['greater than 0', 'metrics.interval'] },
    { name: 'LEMONADE_LB_METRICS_INTERVAL_MS', value: '999999999999', words: ['at most 7 days'] },
    { name: 'LEMONADE_LB_LISTEN_ADDRESS', value: 'nowhere', words: ['host:port', 'proxy.listen_address'] },
    { name: 'LEMONADE_LB_LISTEN_ADDRESS', value: '', words: ['host:port'] },
    { name: 'LEMONADE_LB_LISTEN_ADDRESS', value: '::1:80', words: ['brackets'] },
    { name: 'LEMONADE_LB_ADMIN_ADDRESS', value: '127.0.0.1:99999', words: ['1 to 65535', 'admin.listen_address'] },
    { name: 'LEMONADE_LB_STRATEGY', value: 'random', words: ['expected one of', '"random"', 'strategy.algorithm'] },
    { name: 'LEMONADE_LB_STRATEGY', value: 'roud_robin', words: ['did you mean "round_robin"'] },
  ];
  for (const c of cases) {
    test(`${c.name}=${JSON.stringify(c.value)}`, () => {
      const i = only(bad(FILE, { [c.name]: c.value }), c.name);
      assert.equal(i.line, undefined, 'an environment value has no line');
      for (const w of c.words) assert.ok(i.message.includes(w), `${JSON.stringify(i.message)} lacks ${JSON.stringify(w)}`);
    });
  }

  test('environment and file errors are reported together', () => {
    const text = FILE.replace('health_cap = 12', 'health_cap = 0');
    const issues = bad(text, { LEMONADE_LB_MAX_CONNECTIONS: 'x', LEMONADE_LOG: 'loud', LEMONADE_LB_STRATEGY: 'nope' });
    assert.deepEqual(issues.map((i) => i.path).sort(), ['LEMONADE_LB_MAX_CONNECTIONS', 'LEMONADE_LB_STRATEGY', 'LEMONADE_LOG', 'runtime.health_cap']);
    const file = issues.find((i) => i.path === 'runtime.health_cap')!;
    assert.equal(file.line, 3);
  });
});

describe('LEMONADE_LOG and LEMONADE_LOG_FORMAT', () => {
  for (const level of ['error', 'warn', 'info', 'debug', 'trace', 'DEBUG', 'Info', '']) {
    test(`LEMONADE_LOG=${JSON.stringify(level)} is accepted`, () => {
      ok(FILE, { LEMONADE_LOG: level });
    });
  }
  for (const level of ['verbose', 'warning', 'infos', '3']) {
    test(`LEMONADE_LOG=${JSON.stringify(level)} is an error`, () => {
      const i = only(bad(FILE, { LEMONADE_LOG: level }), 'LEMONADE_LOG');
      for (const w of ['error', 'warn', 'info', 'debug', 'trace', `"${level}"`]) assert.ok(i.message.includes(w), i.message);
    });
  }
  for (const format of ['json', 'pretty', '']) {
    test(`LEMONADE_LOG_FORMAT=${JSON.stringify(format)} is accepted`, () => {
      ok(FILE, { LEMONADE_LOG_FORMAT: format });
    });
  }
  for (const format of ['xml', 'JSONL', 'text']) {
    test(`LEMONADE_LOG_FORMAT=${JSON.stringify(format)} is an error`, () => {
      const i = only(bad(FILE, { LEMONADE_LOG_FORMAT: format }), 'LEMONADE_LOG_FORMAT');
      for (const w of ['"json"', '"pretty"', `"${format}"`]) assert.ok(i.message.includes(w), i.message);
    });
  }
});

describe('running from the environment alone', () => {
  test('empty text with a listen address and backend addresses is a complete config with defaults', () => {
    const c = ok('', { LEMONADE_LB_LISTEN_ADDRESS: '0.0.0.0:8080', LEMONADE_LB_BACKEND_ADDRESSES: '10.0.0.1:80,10.0.0.2:80' });
    assert.equal(c.proxy.listenAddress, '0.0.0.0:8080');
    assert.deepEqual(c.backends.map((b) => [b.id, b.name, b.address, b.weight]), [[0, 'backend-1', '10.0.0.1:80', 1], [1, 'backend-2', '10.0.0.2:80', 1]]);
    assert.equal(c.strategy, 'adaptive');
    assert.equal(c.proxy.maxConnections, 100000);
    assert.equal(c.admin.listenAddress, '127.0.0.1:9090');
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.backends));
  });

  test('empty text with backends but no listen address is an error at proxy.listen_address', () => {
    const i = only(bad('', { LEMONADE_LB_BACKEND_ADDRESSES: 'a:1' }), 'proxy.listen_address');
    assert.ok(i.message.includes('LEMONADE_LB_LISTEN_ADDRESS'));
  });

  test('empty text with a listen address but no backends is an error at backends', () => {
    const i = only(bad('', { LEMONADE_LB_LISTEN_ADDRESS: '0.0.0.0:1' }), 'backends');
    assert.ok(i.message.includes('LEMONADE_LB_BACKEND_ADDRESSES'));
  });
});

// ---------------------------------------------------------------------------------------------

describe('loadConfig and resolveConfigPath', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lemonade-config-env-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('resolveConfigPath: --config, then LEMONADE_LB_CONFIG (both explicit), then /etc/lemonade/config.toml', () => {
    assert.deepEqual(resolveConfigPath('/a.toml', { LEMONADE_LB_CONFIG: '/b.toml' }), { path: '/a.toml', explicit: true });
    assert.deepEqual(resolveConfigPath(undefined, { LEMONADE_LB_CONFIG: '/b.toml' }), { path: '/b.toml', explicit: true });
    assert.deepEqual(resolveConfigPath(undefined, {}), { path: '/etc/lemonade/config.toml', explicit: false });
    assert.equal(DEFAULT_CONFIG_PATH, '/etc/lemonade/config.toml');
  });

  test('a valid file: config with the environment applied, path, sha256 hash and text', () => {
    const path = join(dir, 'ok.toml');
    writeFileSync(path, FILE);
    const l = loadConfig(path, { LEMONADE_LB_MAX_CONNECTIONS: '9' });
    assert.equal(l.path, path);
    assert.equal(l.text, FILE);
    assert.equal(l.hash, createHash('sha256').update(FILE).digest('hex'));
    assert.equal(l.config.proxy.maxConnections, 9);
    assert.equal(l.config.backends.length, 2);
  });

  test('an invalid file throws ConfigInvalidError carrying every issue', () => {
    const path = join(dir, 'bad.toml');
    writeFileSync(path, FILE.replace('max_connections = 17', 'max_connections = 0').replace('weight = 5', 'weight = -5'));
    assert.throws(
      () => loadConfig(path, {}),
      (e: unknown) => {
        assert.ok(e instanceof ConfigInvalidError);
        assert.equal(e.code, 'LEMONADE_CONFIG_INVALID');
        assert.equal(e.file, path);
        assert.deepEqual(e.issues.map((i) => [i.path, i.line]), [['proxy.max_connections', 11], ['backends[0].weight', 20]]);
        assert.ok(e.message.includes('2 errors'));
        return true;
      },
    );
  });

  test('a missing file throws ConfigMissingError', () => {
    const path = join(dir, 'missing.toml');
    assert.throws(() => loadConfig(path, {}), (e: unknown) => e instanceof ConfigMissingError && e.code === 'LEMONADE_CONFIG_MISSING' && e.file === path);
  });

  test('a missing file with LEMONADE_LB_BACKEND_ADDRESSES runs from the environment alone', () => {
    const l = loadConfig(join(dir, 'missing.toml'), { LEMONADE_LB_BACKEND_ADDRESSES: 'a:1', LEMONADE_LB_LISTEN_ADDRESS: '127.0.0.1:1' });
    assert.equal(l.path, '(environment)');
    assert.equal(l.hash, '');
    assert.equal(l.text, '');
    assert.deepEqual(l.config.backends.map((b) => b.address), ['a:1']);
  });

  test('a path that cannot be read (a directory) throws ConfigReadError', () => {
    const sub = join(dir, 'adir');
    mkdirSync(sub);
    assert.throws(() => loadConfig(sub, {}), (e: unknown) => e instanceof ConfigReadError && e.code === 'LEMONADE_CONFIG_UNREADABLE');
  });
});

describe('the environment overrides the default service only', () => {
  const text = [
    '[proxy]',
    'listen_address = "127.0.0.1:8080"',
    '[strategy]',
    'algorithm = "least_connections"',
    '[[backends]]',
    'address = "10.0.0.1:80"',
    '[[services]]',
    'name = "pg"',
    'listen_address = "127.0.0.1:5432"',
    '[[services.backends]]',
    'address = "10.0.0.2:5432"',
    '[[services]]',
    'name = "own"',
    'listen_address = "127.0.0.1:6379"',
    'algorithm = "round_robin"',
    '[services.health]',
    'interval = "7s"',
    '[[services.backends]]',
    'address = "10.0.0.3:6379"',
    '',
  ].join('\n');
  test('LEMONADE_LB_STRATEGY and LEMONADE_LB_HEALTH_INTERVAL_MS change the default service; the others keep the file values', () => {
    const r = parseAndValidate(text, { LEMONADE_LB_STRATEGY: 'weighted_round_robin', LEMONADE_LB_HEALTH_INTERVAL_MS: '1500' });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    const by = new Map(r.config.services.map((s) => [s.name, s]));
    assert.deepEqual([...by.keys()], ['default', 'pg', 'own']);
    assert.equal(by.get('default')!.algorithm, 'weighted_round_robin');
    assert.equal(by.get('default')!.health.intervalMs, 1500);
    assert.equal(by.get('pg')!.algorithm, 'least_connections', 'inherits the file, not the variable');
    assert.equal(by.get('pg')!.health.intervalMs, 10000, 'the file has no [health] interval: the default');
    assert.equal(by.get('own')!.algorithm, 'round_robin');
    assert.equal(by.get('own')!.health.intervalMs, 7000);
  });
  test('without the variables every service inherits the file', () => {
    const r = parseAndValidate(text, {});
    assert.ok(r.ok);
    assert.deepEqual(r.config.services.map((s) => [s.name, s.algorithm]), [['default', 'least_connections'], ['pg', 'least_connections'], ['own', 'round_robin']]);
  });
});
