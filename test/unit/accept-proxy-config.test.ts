// accept_proxy and accept_proxy_from (src/config/settings.ts, src/config/validate.ts): the values,
// the trusted peers required when it is on, the agreement of services sharing an address, and no
// header on a UDP service. Each message names the key where it is written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAndValidate } from '../../src/config/load';
import type { Config } from '../../src/config/schema';
import type { ConfigIssue } from '../../src/errors';

function ok(text: string): Config {
  const r = parseAndValidate(text, {});
  assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.issues));
  return r.config;
}

function bad(text: string): ConfigIssue[] {
  const r = parseAndValidate(text, {});
  assert.ok(!r.ok, 'expected the file to be refused');
  return [...r.issues];
}

const BACKEND = '[[backends]]\naddress = "10.0.0.1:80"\n';

test('off by default; v1, v2 and any with trusted peers; per service, inheriting [proxy]', () => {
  const c = ok(`[proxy]\nlisten_address = "127.0.0.1:8080"\n${BACKEND}`);
  assert.equal(c.proxy.acceptProxy, 'off');
  assert.deepEqual(c.proxy.acceptProxyFrom, []);
  for (const mode of ['v1', 'v2', 'any']) {
    const d = ok(`[proxy]\nlisten_address = "127.0.0.1:8080"\naccept_proxy = "${mode}"\naccept_proxy_from = ["10.0.0.0/8", "::/0"]\n${BACKEND}`);
    assert.equal(d.services[0]!.proxy.acceptProxy, mode);
    assert.deepEqual(d.services[0]!.proxy.acceptProxyFrom.map((x) => x.text), ['10.0.0.0/8', '::/0']);
  }
  const s = ok(`[proxy]\naccept_proxy_from = ["10.1.0.0/16"]\n[[services]]\nname = "a"\nlisten_address = "127.0.0.1:1"\naccept_proxy = "v2"\n[[services.backends]]\naddress = "10.0.0.1:80"\n[[services]]\nname = "b"\nlisten_address = "127.0.0.1:2"\n[[services.backends]]\naddress = "10.0.0.1:80"\n`);
  assert.deepEqual(s.services.map((x) => [x.name, x.proxy.acceptProxy, x.proxy.acceptProxyFrom.map((c) => c.text)]), [['a', 'v2', ['10.1.0.0/16']], ['b', 'off', ['10.1.0.0/16']]]);
});

test('a value that is not one, and a CIDR that is not one', () => {
  const i = bad(`[proxy]\nlisten_address = "127.0.0.1:8080"\naccept_proxy = "v3"\naccept_proxy_from = ["10.0.0.0/33"]\n${BACKEND}`);
  assert.deepEqual(i.map((x) => x.path).sort(), ['proxy.accept_proxy', 'proxy.accept_proxy_from']);
});

test('on, it needs trusted peers: in [proxy], and in a service that turns it on', () => {
  const top = bad(`[proxy]\nlisten_address = "127.0.0.1:8080"\naccept_proxy = "v2"\n${BACKEND}`);
  assert.equal(top.length, 1);
  assert.equal(top[0]!.path, 'proxy.accept_proxy_from');
  assert.match(top[0]!.message, /accept_proxy = "v2".*\["0\.0\.0\.0\/0", "::\/0"\] trusts every peer/);
  const svc = bad(`[[services]]\nname = "a"\nlisten_address = "127.0.0.1:1"\naccept_proxy = "any"\n[[services.backends]]\naddress = "10.0.0.1:80"\n`);
  assert.deepEqual(svc.map((x) => x.path), ['services[0].accept_proxy_from']);
});

test('services sharing an address agree on accept_proxy and accept_proxy_from', () => {
  const svc = (name: string, lines: string): string => `[[services]]\nname = "${name}"\nlisten_address = "127.0.0.1:443"\n${lines}\n[[services.backends]]\naddress = "10.0.0.1:80"\n`;
  const mode = bad(svc('a', 'sni = ["a.test"]\naccept_proxy = "v2"\naccept_proxy_from = ["10.0.0.0/8"]') + svc('b', ''));
  assert.deepEqual(mode.map((x) => x.path), ['services[1].accept_proxy']);
  assert.match(mode[0]!.message, /must have the same accept_proxy.*"a" has "v2", "b" "off"/);
  const from = bad(svc('a', 'sni = ["a.test"]\naccept_proxy = "v2"\naccept_proxy_from = ["10.0.0.0/8"]') + svc('b', 'accept_proxy = "v2"\naccept_proxy_from = ["10.0.0.0/16"]'));
  assert.deepEqual(from.map((x) => x.path), ['services[1].accept_proxy_from']);
  ok(svc('a', 'sni = ["a.test"]\naccept_proxy = "v2"\naccept_proxy_from = ["10.0.0.0/8"]') + svc('b', 'accept_proxy = "v2"\naccept_proxy_from = ["10.0.0.0/8"]'));
});

test('a UDP service reads no header', () => {
  const i = bad(`[runtime]\nworkers = 1\n[[services]]\nname = "dns"\nlisten_address = "127.0.0.1:53"\nprotocol = "udp"\naccept_proxy = "v2"\naccept_proxy_from = ["10.0.0.0/8"]\n[[services.backends]]\naddress = "10.0.0.1:53"\n`);
  assert.deepEqual(i.map((x) => x.path), ['services[0].accept_proxy']);
});
