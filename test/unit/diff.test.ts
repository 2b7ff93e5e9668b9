// diff(old, new) and summarize(): what a reload changes, matched by backend id (src/config/diff.ts).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { diff, summarize, type Change } from '../../src/config/diff';
import { parseAndValidate } from '../../src/config/load';
import type { BackendConfig, Config } from '../../src/config/schema';

interface B {
  id: number;
  name: string;
  address: string;
  weight?: number;
  max_connections?: number;
  backup?: boolean;
}

function cfg(backends: B[], sections: { proxy?: string; strategy?: string; health?: string; admin?: string; runtime?: string } = {}): Config {
  const text = [
    '[runtime]',
    sections.runtime ?? '',
    '[proxy]',
    'listen_address = "127.0.0.1:8080"',
    sections.proxy ?? '',
    '[strategy]',
    sections.strategy ?? 'algorithm = "adaptive"',
    '[health]',
    sections.health ?? '',
    '[admin]',
    sections.admin ?? '',
    ...backends.flatMap((b) => [
      '[[backends]]',
      `id = ${b.id}`,
      `name = "${b.name}"`,
      `address = "${b.address}"`,
      ...(b.weight !== undefined ? [`weight = ${b.weight}`] : []),
      ...(b.max_connections !== undefined ? [`max_connections = ${b.max_connections}`] : []),
      ...(b.backup !== undefined ? [`backup = ${b.backup}`] : []),
    ]),
    '',
  ].join('\n');
  const r = parseAndValidate(text, {});
  if (!r.ok) assert.fail(JSON.stringify(r.issues));
  return r.config;
}

const B1: B = { id: 0, name: 'backend-1', address: '10.0.0.1:80', weight: 10 };
const B2: B = { id: 1, name: 'backend-2', address: '10.0.0.2:80' };
const B3: B = { id: 2, name: 'backend-3', address: '10.0.0.3:80' };
const B4: B = { id: 3, name: 'backend-4', address: '10.0.0.4:80' };

describe('diff', () => {
  test('identical configs: no changes', () => {
    const a = cfg([B1, B2], { proxy: 'allow = ["10.0.0.0/8"]\nclient_rate_limit = "5/s"' });
    const b = cfg([B1, B2], { proxy: 'allow = ["10.0.0.0/8"]\nclient_rate_limit = "5/s"' });
    assert.deepEqual(diff(a, b), []);
    assert.equal(summarize(diff(a, b)), 'no changes');
  });

  test('a config against itself: no changes', () => {
    const a = cfg([B1, B2, B3]);
    assert.deepEqual(diff(a, a), []);
  });

  test('an added backend', () => {
    const a = cfg([B1]);
    const b = cfg([B1, B4]);
    const d = diff(a, b);
    assert.equal(d.length, 1);
    assert.equal(d[0]!.kind, 'backend-added');
    assert.equal((d[0] as Extract<Change, { kind: 'backend-added' }>).backend, b.backends[1]);
    assert.equal(summarize(d), '+backend-4');
  });

  test('a removed backend', () => {
    const a = cfg([B1, B2]);
    const b = cfg([B1]);
    const d = diff(a, b);
    assert.deepEqual(d.map((c) => c.kind), ['backend-removed']);
    assert.equal((d[0] as Extract<Change, { kind: 'backend-removed' }>).backend, a.backends[1]);
    assert.equal(summarize(d), '-backend-2(draining)');
  });

  test('a weight change', () => {
    const d = diff(cfg([B1]), cfg([{ ...B1, weight: 5 }]));
    assert.deepEqual(d, [{ kind: 'backend-changed', backend: cfg([{ ...B1, weight: 5 }]).backends[0], fields: [{ field: 'weight', from: '10', to: '5' }] }]);
    assert.equal(summarize(d), '~backend-1 weight 10→5');
  });

  test('name, weight, max_connections and backup changes on one backend, in that order', () => {
    const d = diff(cfg([B1]), cfg([{ ...B1, name: 'web', weight: 2, max_connections: 3, backup: true }]));
    assert.equal(d.length, 1);
    assert.equal(summarize(d), '~web name backend-1→web weight 10→2 max_connections 0→3 backup false→true');
  });

  test('an address change: the old endpoint drains', () => {
    const a = cfg([B1]);
    const b = cfg([{ ...B1, address: '10.0.0.9:8080' }]);
    const d = diff(a, b);
    assert.equal(d.length, 1);
    const c = d[0] as Extract<Change, { kind: 'backend-address' }>;
    assert.equal(c.kind, 'backend-address');
    assert.equal(c.from, a.backends[0]);
    assert.equal(c.to, b.backends[0]);
    assert.equal(summarize(d), '~backend-1 address 10.0.0.1:80→10.0.0.9:8080(old draining)');
  });

  test('an address change together with a weight change gives both', () => {
    const d = diff(cfg([B1]), cfg([{ ...B1, address: '[::1]:80', weight: 1 }]));
    assert.equal(summarize(d), '~backend-1 address 10.0.0.1:80→[::1]:80(old draining) ~backend-1 weight 10→1');
  });

  test('backends are matched by id, not by name or address', () => {
    // same name and address, new id: the old one is removed, the new one added
    const d = diff(cfg([B1]), cfg([{ ...B1, id: 9 }]));
    assert.deepEqual(d.map((c) => c.kind), ['backend-added', 'backend-removed']);
    // same id, every other field swapped between two backends
    const d2 = diff(cfg([B1, B2]), cfg([{ ...B2, id: 0 }, { ...B1, id: 1 }]));
    assert.deepEqual(d2.map((c) => c.kind), ['backend-address', 'backend-changed', 'backend-address', 'backend-changed']);
  });

  test('a reordering of the same backends is no change', () => {
    assert.deepEqual(diff(cfg([B1, B2, B3]), cfg([B3, B1, B2])), []);
  });

  test('changes follow the new config order, then removals, then settings', () => {
    const a = cfg([B1, B2, B3]);
    const b = cfg([{ ...B1, weight: 5 }, B3, B4], { strategy: 'algorithm = "round_robin"' });
    assert.equal(summarize(diff(a, b)), '~backend-1 weight 10→5 +backend-4 -backend-2(draining) strategy adaptive→round_robin');
  });
});

describe('setting changes', () => {
  const cases: { name: string; from: Parameters<typeof cfg>[1]; to: Parameters<typeof cfg>[1]; want: { path: string; from: string; to: string }[] }[] = [
    { name: 'strategy', from: {}, to: { strategy: 'algorithm = "round-robin"' }, want: [{ path: 'strategy', from: 'adaptive', to: 'round_robin' }] },
    { name: 'max_connections', from: {}, to: { proxy: 'max_connections = 50' }, want: [{ path: 'proxy.max_connections', from: '100000', to: '50' }] },
    { name: 'allow list', from: {}, to: { proxy: 'allow = ["10.0.0.0/8", "::1"]' }, want: [{ path: 'proxy.allow', from: '[]', to: '[10.0.0.0/8, ::1]' }] },
    { name: 'deny list', from: { proxy: 'deny = ["10.0.0.0/8"]' }, to: { proxy: 'deny = ["10.0.0.0/16"]' }, want: [{ path: 'proxy.deny', from: '[10.0.0.0/8]', to: '[10.0.0.0/16]' }] },
    { name: 'rate limit on', from: {}, to: { proxy: 'client_rate_limit = "100/s"' }, want: [{ path: 'proxy.client_rate_limit', from: '""', to: '100/s' }] },
    { name: 'rate limit off', from: { proxy: 'client_rate_limit = "100/s"' }, to: {}, want: [{ path: 'proxy.client_rate_limit', from: '100/s', to: '""' }] },
    { name: 'proxy protocol', from: {}, to: { proxy: 'proxy_protocol = "v1"' }, want: [{ path: 'proxy.proxy_protocol', from: 'off', to: 'v1' }] },
    { name: 'health thresholds', from: {}, to: { health: 'healthy_threshold = 5\nkind = "http"' }, want: [{ path: 'health.kind', from: 'tcp', to: 'http' }, { path: 'health.healthy_threshold', from: '2', to: '5' }] },
    { name: 'connect timeout (in ms)', from: {}, to: { proxy: 'connect_timeout = "1s"' }, want: [{ path: 'proxy.connect_timeout', from: '3000', to: '1000' }] },
    { name: 'drain timeout (runtime keys end in _millis)', from: {}, to: { runtime: 'drain_timeout_millis = 500' }, want: [{ path: 'runtime.drain_timeout_millis', from: '30000', to: '500' }] },
    { name: 'runtime workers', from: {}, to: { runtime: 'workers = 4' }, want: [{ path: 'runtime.workers', from: '1', to: '4' }] },
    { name: 'admin disabled', from: {}, to: { admin: 'listen_address = ""' }, want: [{ path: 'admin.listen_address', from: '127.0.0.1:9090', to: '""' }] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const d = diff(cfg([B1], c.from), cfg([B1], c.to));
      assert.deepEqual(d, c.want.map((w) => ({ kind: 'setting', ...w })));
      assert.equal(summarize(d), d.length === 0 ? 'no changes' : c.want.map((w) => `${w.path} ${w.from}→${w.to}`).join(' '));
    });
  }

  test('a changed listen address is one change (the derived listen object is not repeated)', () => {
    const text = (addr: string) => `[proxy]\nlisten_address = "${addr}"\n[[backends]]\naddress = "10.0.0.1:80"\n`;
    const r1 = parseAndValidate(text('127.0.0.1:8080'), {});
    const r2 = parseAndValidate(text('[::]:9090'), {});
    assert.ok(r1.ok && r2.ok);
    assert.deepEqual(diff(r1.config, r2.config), [{ kind: 'setting', path: 'proxy.listen_address', from: '127.0.0.1:8080', to: '[::]:9090' }]);
  });

  test('a changed secret is said without either value', () => {
    for (const [from, to] of [[{}, { admin: 'token = "s3cret-new"' }], [{ admin: 'token = "s3cret-old"' }, { admin: 'token = "s3cret-new"' }], [{ admin: 'token = "s3cret-old"' }, {}]] as const) {
      const d = diff(cfg([B1], from), cfg([B1], to));
      assert.deepEqual(d, [{ kind: 'secret', path: 'admin.token' }]);
      assert.equal(summarize(d), 'admin.token changed');
      assert.doesNotMatch(JSON.stringify(d) + summarize(d), /s3cret/);
    }
    assert.deepEqual(diff(cfg([B1], { admin: 'token = "same"' }), cfg([B1], { admin: 'token = "same"' })), []);
  });

  test('a changed rate limit is one change shown as its text', () => {
    const d = diff(cfg([B1], { proxy: 'client_rate_limit = "100/s"' }), cfg([B1], { proxy: 'client_rate_limit = "200/s"' }));
    assert.deepEqual(d, [{ kind: 'setting', path: 'proxy.client_rate_limit', from: '100/s', to: '200/s' }]);
  });
});

describe('summarize', () => {
  const spec = (id: number, name: string, address: string, weight = 1): BackendConfig => {
    const [host, port] = address.split(':');
    return { id, name, address, host: host!, port: Number(port), weight, maxConnections: 0, backup: false, resolve: 'none', srv: '' };
  };

  test('the one-line format: +added -removed(draining) ~changed field from→to', () => {
    const changes: Change[] = [
      { kind: 'backend-added', backend: spec(3, 'backend-4', '10.0.0.4:80') },
      { kind: 'backend-removed', backend: spec(1, 'backend-2', '10.0.0.2:80') },
      { kind: 'backend-changed', backend: spec(0, 'backend-1', '10.0.0.1:80', 5), fields: [{ field: 'weight', from: '10', to: '5' }] },
    ];
    assert.equal(summarize(changes), '+backend-4 -backend-2(draining) ~backend-1 weight 10→5');
  });

  test('address and setting entries', () => {
    const changes: Change[] = [
      { kind: 'backend-address', from: spec(0, 'a', '10.0.0.1:80'), to: spec(0, 'a', '10.0.0.2:81') },
      { kind: 'setting', path: 'strategy', from: 'adaptive', to: 'round_robin' },
      { kind: 'setting', path: 'proxy.max_connections', from: '10', to: '20' },
    ];
    assert.equal(summarize(changes), '~a address 10.0.0.1:80→10.0.0.2:81(old draining) strategy adaptive→round_robin proxy.max_connections 10→20');
  });

  test('several field changes of one backend share one ~entry', () => {
    const changes: Change[] = [
      { kind: 'backend-changed', backend: spec(0, 'a', '10.0.0.1:80'), fields: [{ field: 'weight', from: '1', to: '2' }, { field: 'backup', from: 'false', to: 'true' }] },
    ];
    assert.equal(summarize(changes), '~a weight 1→2 backup false→true');
  });

  test('no changes', () => {
    assert.equal(summarize([]), 'no changes');
  });
});
