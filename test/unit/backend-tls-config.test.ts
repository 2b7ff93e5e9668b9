// The [backend_tls] and [services.backend_tls] tables: what validation says of them
// (src/config/validate.ts), the warning verify = false gives (backendTlsWarnings), the reload
// diff's names, and the files the load reads and hashes (src/config/load.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAndValidate, tlsFiles } from '../../src/config/load';
import { backendTlsWarnings } from '../../src/config/validate';
import { diff } from '../../src/config/diff';
import type { Config } from '../../src/config/schema';

const top = (table: string, proxy = ''): string => `[proxy]\nlisten_address = "127.0.0.1:8080"\n${proxy}\n[backend_tls]\n${table}\n[[backends]]\naddress = "127.0.0.1:6379"\n`;
const svc = (table: string, extra = ''): string => `[[services]]\nname = "pg"\nlisten_address = "127.0.0.1:6432"\n${extra}\n[services.backend_tls]\n${table}\n[[services.backends]]\naddress = "db.internal:5432"\n`;

function ok(text: string): Config {
  const r = parseAndValidate(text, {});
  assert.ok(r.ok, JSON.stringify(r));
  return r.config;
}

function issues(text: string): string {
  const r = parseAndValidate(text, {});
  return r.ok ? '' : r.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
}

test('a service speaks TLS to its backends only with enabled = true; the top-level table is the default service\'s, not inherited', () => {
  assert.equal(ok('[proxy]\nlisten_address = "127.0.0.1:8080"\n[[backends]]\naddress = "127.0.0.1:1"\n').services[0]!.backendTls, null);
  assert.equal(ok(top('ca = "/ca.pem"')).services[0]!.backendTls, null, 'enabled defaults to false');
  const c = ok(top('enabled = true\nca = "/ca.pem"\nserver_name = "db.example"\ncert = "/c.pem"\nkey = "/c.key"') + svc('enabled = true'));
  assert.deepEqual(c.services[0]!.backendTls, { enabled: true, ca: '/ca.pem', verify: true, serverName: 'db.example', cert: '/c.pem', key: '/c.key' });
  assert.deepEqual(c.services[1]!.backendTls, { enabled: true, ca: '', verify: true, serverName: '', cert: '', key: '' });
  assert.deepEqual(tlsFiles(c), ['/ca.pem', '/c.pem', '/c.key']);
  assert.equal(ok(top('enabled = true') + svc('').replace('[services.backend_tls]\n', '')).services[1]!.backendTls, null, 'a [[services]] entry does not inherit [backend_tls]');
});

test('what a backend_tls table may not say', () => {
  assert.match(issues(top('enabled = true\ncert = "/c.pem"')), /^backend_tls\.key: cert and key go together: cert is set, so key must name its private key file/m);
  assert.match(issues(svc('enabled = true\nkey = "/c.key"')), /^services\[0\]\.backend_tls\.cert: cert and key go together/m);
  assert.match(issues(top('enabled = true\nverify = "no"')), /^backend_tls\.verify: /m);
  assert.match(issues(top('enabled = true\nsni = "x"')), /unknown key "sni"/);
  // the PROXY header goes in clear before the handshake: the two go together
  assert.doesNotMatch(issues(top('enabled = true', 'proxy_protocol = "v2"')), /backend_tls/);
  assert.doesNotMatch(issues(svc('enabled = true', 'proxy_protocol = "v1"')), /backend_tls/);
  assert.match(issues(`[backend_tls]\nenabled = true\n${svc('enabled = true')}`), /^backend_tls: top-level \[backend_tls\] is the default service's/m);
  assert.match(issues(svc('').replace('[services.backend_tls]\n', 'backend_tls = 3\n')), /^services\[0\]\.backend_tls: expected a table \[services\.backend_tls\]/m);
});

test('verify = false warns, naming the service and the key; verify = true and a table turned off do not', () => {
  const c = ok(top('enabled = true\nverify = false') + svc('enabled = true\nverify = false') + svc('enabled = false\nverify = false').replace('"pg"', '"pg2"').replace('6432', '6433'));
  const w = backendTlsWarnings(c);
  assert.deepEqual(
    w.map((x) => x.path),
    ['backend_tls.verify', 'services[0].backend_tls.verify'],
  );
  assert.match(w[0]!.message, /service default speaks TLS to its backends without verifying/);
  assert.match(w[1]!.message, /^services\[0\]\.backend_tls\.verify = false: service pg /);
  assert.deepEqual(backendTlsWarnings(ok(top('enabled = true'))), []);
});

test('a reload that changes a service\'s backend_tls names the key', () => {
  const a = ok(svc('enabled = true\nserver_name = "a.example"'));
  const b = ok(svc('enabled = true\nserver_name = "b.example"'));
  assert.match(JSON.stringify(diff(a, b)), /backend_tls\.server_name/);
});
