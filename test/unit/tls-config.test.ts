// The [tls] and [services.tls] tables: what validation says of them (src/config/validate.ts,
// fields.ts) and what the load says of the files they name (src/config/load.ts): every error names
// the key path and the file, never a key's contents.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { contentHash, loadFromText, parseAndValidate, tlsFiles } from '../../src/config/load';
import { ConfigInvalidError } from '../../src/errors';
import { requireTool, tempDir } from '../helpers';

const OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

const base = (tls: string, top = true): string =>
  top
    ? `[proxy]\nlisten_address = "127.0.0.1:8443"\n[tls]\n${tls}\n[[backends]]\naddress = "127.0.0.1:6379"\n`
    : `[[services]]\nname = "redis"\nlisten_address = "127.0.0.1:6380"\n[services.tls]\n${tls}\n[[services.backends]]\naddress = "127.0.0.1:6379"\n`;

function issues(text: string): string[] {
  const r = parseAndValidate(text, {});
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
}

test('a service without a tls table does not terminate; with one it does, the top-level [tls] being the default service\'s', () => {
  const plain = parseAndValidate('[proxy]\nlisten_address = "127.0.0.1:8080"\n[[backends]]\naddress = "127.0.0.1:1"\n', {});
  assert.ok(plain.ok);
  assert.equal(plain.config.services[0]!.tls, null);
  const r = parseAndValidate(base('certificates = [{ cert = "/a.pem", key = "/a.key" }]\nalpn = ["h2", "http/1.1"]\nclient_ca = "/ca.pem"\nclient_auth = "optional"\nhandshake_timeout = "2s"'), {});
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(r.config.services[0]!.tls, { certificates: [{ cert: '/a.pem', key: '/a.key' }], minVersion: 'TLSv1.2', alpn: ['h2', 'http/1.1'], clientCa: '/ca.pem', clientAuth: 'optional', handshakeTimeoutMs: 2000 });
  const s = parseAndValidate(base('certificates = [{ cert = "/b.pem", key = "/b.key" }]\nmin_version = "TLSv1.3"', false), {});
  assert.ok(s.ok, JSON.stringify(s));
  assert.equal(s.config.services[0]!.tls!.minVersion, 'TLSv1.3');
  assert.deepEqual(tlsFiles(s.config), ['/b.pem', '/b.key']);
});

test('what a tls table may not say', () => {
  assert.match(issues(base('min_version = "TLSv1.3"')).join('\n'), /^tls\.certificates: a \[tls\] table terminates TLS and needs at least one certificate/m);
  assert.match(issues(base('certificates = [{ cert = "/a.pem", key = "/a.key" }]\nclient_auth = "required"', false)).join('\n'), /^services\[0\]\.tls\.client_auth: "required" needs client_ca/m);
  assert.match(issues(base('certificates = [{ cert = "/a.pem" }]')).join('\n'), /^tls\.certificates: certificate \[0\] needs key/m);
  assert.match(issues(base('certificates = [{ cert = "/a.pem", key = "/a.key", chain = "/c.pem" }]')).join('\n'), /unknown key "chain"/);
  assert.match(issues(base('certificates = [{ cert = "/a.pem", key = "/a.key" }]\nmin_version = "TLSv1.1"')).join('\n'), /^tls\.min_version: expected one of "TLSv1\.2", "TLSv1\.3"/m);
  assert.match(issues(base('certificates = [{ cert = "/a.pem", key = "/a.key" }]\ncipher = "x"', false)).join('\n'), /unknown key "cipher"/);
  const onlyServices = `[tls]\ncertificates = [{ cert = "/a.pem", key = "/a.key" }]\n${base('certificates = [{ cert = "/b.pem", key = "/b.key" }]', false)}`;
  assert.match(issues(onlyServices).join('\n'), /^tls: top-level \[tls\] is the default service's/m);
});

test('the files are read at load: missing, not PEM, a key that does not match its certificate; the message names the key path and the file, never the key', (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  for (const n of ['a', 'b']) {
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.pem`, '-days', '1', '-subj', `/CN=${n}.test`, '-addext', `subjectAltName=DNS:${n}.test`], { cwd: dir });
    assert.equal(r.status, 0);
  }
  writeFileSync(join(dir, 'junk.pem'), 'not a certificate\n');
  const load = (tls: string): string => {
    try {
      loadFromText('/etc/lemonade/config.toml', base(tls, false), {});
      return '';
    } catch (e) {
      assert.ok(e instanceof ConfigInvalidError, String(e));
      return e.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
    }
  };
  assert.equal(load(`certificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }, { cert = "${dir}/b.pem", key = "${dir}/b.key" }]\nclient_ca = "${dir}/a.pem"`), '');
  assert.equal(load(`certificates = [{ cert = "${dir}/none.pem", key = "${dir}/a.key" }]`), `services[0].tls.certificates[0].cert: cannot read ${dir}/none.pem: ENOENT`);
  assert.equal(load(`certificates = [{ cert = "${dir}/junk.pem", key = "${dir}/a.key" }]`), `services[0].tls.certificates[0].cert: ${dir}/junk.pem is not a PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`);
  assert.equal(load(`certificates = [{ cert = "${dir}/a.pem", key = "${dir}/junk.pem" }]`), `services[0].tls.certificates[0].key: ${dir}/junk.pem is not a PEM private key`);
  const mismatch = load(`certificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }, { cert = "${dir}/a.pem", key = "${dir}/b.key" }]`);
  assert.equal(mismatch, `services[0].tls.certificates[1].key: the key in ${dir}/b.key does not match the certificate in ${dir}/a.pem`);
  assert.equal(load(`certificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }]\nclient_ca = "${dir}/junk.pem"\nclient_auth = "optional"`), `services[0].tls.client_ca: ${dir}/junk.pem is not a PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`);
  // the key files' bytes are in the hash the watcher compares: a renewed key is a change
  const text = base(`certificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }]`, false);
  const before = loadFromText('/x.toml', text, {}).hash;
  assert.notEqual(before, contentHash(text, []));
  writeFileSync(join(dir, 'a.key'), readFileSync(join(dir, 'a.key')).toString() + '\n');
  assert.notEqual(loadFromText('/x.toml', text, {}).hash, before);
});
