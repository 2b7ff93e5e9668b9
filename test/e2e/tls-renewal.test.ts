// A certificate renewed by symlink swap, through the real balancer (the bundle) under load: the
// configuration names links, not files. certbot's layout (live/NAME/*.pem are relative symlinks
// into ../../archive/NAME/*N.pem; a renewal writes version N+1 and re-points each link, with
// unlink and symlink as certbot's storage.py does, or a new link renamed over) and a Kubernetes
// Secret volume's (tls.crt and tls.key are symlinks through `..data`, itself a link to a
// timestamped directory, replaced by a rename). Node TLS clients run in concurrent loops through
// the swap: none fails, new handshakes see the new certificate's fingerprint within a bounded wait
// (with the poll out of reach, so the watcher is what saw it, no deploy hook or SIGHUP), a
// connection open across the swap keeps working, openssl s_client reads the new serial, and a
// second renewal is seen as the first; with worker processes too.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, requireTool, startBalancer, startEcho, tempDir, waitFor, type Balancer } from '../helpers';

const OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

function openssl(dir: string, args: string[], input?: string): string {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', input, timeout: 20_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** A test CA in `dir` (ca.pem, ca.key): the issuer of every version, sent as the chain. */
function makeCa(dir: string): void {
  openssl(dir, ['req', '-x509', ...EC, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=lemonade renewal test CA']);
}

interface Issued {
  readonly leaf: Buffer;
  readonly key: Buffer;
  readonly fingerprint: string;
  readonly serial: string;
}

/** Version `v` of svc.test's certificate: a new key, the same names, a new serial (as a renewal). */
function issue(dir: string, v: number): Issued {
  const name = `svc${v}`;
  writeFileSync(join(dir, 'svc.ext'), 'subjectAltName=DNS:svc.test\n');
  openssl(dir, ['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=svc.test']);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', 'svc.ext']);
  const leaf = readFileSync(join(dir, `${name}.pem`));
  const x = new X509Certificate(leaf);
  return { leaf, key: readFileSync(join(dir, `${name}.key`)), fingerprint: x.fingerprint256, serial: x.serialNumber };
}

/** Where the certificate lives: the paths the configuration names, and how a renewal swaps them. */
interface Layout {
  readonly cert: string;
  readonly key: string;
  renew(v: number, c: Issued): void;
}

/**
 * certbot's /etc/letsencrypt: archive/svc.test/{cert,chain,fullchain,privkey}N.pem, and live/svc.test/
 * KIND.pem -> ../../archive/svc.test/KINDN.pem. A renewal writes the new archive files, then
 * re-points the four links in certbot's order (cert, privkey, chain, fullchain).
 */
function certbot(root: string, ca: Buffer, repoint: 'unlink and symlink' | 'rename a new link', first: Issued): Layout {
  const archive = join(root, 'archive', 'svc.test');
  const live = join(root, 'live', 'svc.test');
  mkdirSync(archive, { recursive: true });
  mkdirSync(live, { recursive: true });
  const write = (v: number, c: Issued): void => {
    writeFileSync(join(archive, `cert${v}.pem`), c.leaf);
    writeFileSync(join(archive, `chain${v}.pem`), ca);
    writeFileSync(join(archive, `fullchain${v}.pem`), Buffer.concat([c.leaf, ca]));
    writeFileSync(join(archive, `privkey${v}.pem`), c.key, { mode: 0o600 });
  };
  const link = (kind: string, v: number): void => {
    const at = join(live, `${kind}.pem`);
    const target = `../../archive/svc.test/${kind}${v}.pem`;
    if (repoint === 'unlink and symlink') {
      if (v > 1) unlinkSync(at);
      symlinkSync(target, at);
    } else {
      symlinkSync(target, `${at}.new`);
      renameSync(`${at}.new`, at);
    }
  };
  write(1, first);
  for (const kind of ['cert', 'privkey', 'chain', 'fullchain']) link(kind, 1);
  return {
    cert: join(live, 'fullchain.pem'),
    key: join(live, 'privkey.pem'),
    renew: (v, c) => {
      write(v, c);
      for (const kind of ['cert', 'privkey', 'chain', 'fullchain']) link(kind, v);
    },
  };
}

/**
 * A Secret volume as the kubelet writes it: ..TIMESTAMP/{tls.crt,tls.key}, `..data` -> ..TIMESTAMP,
 * tls.crt -> ..data/tls.crt. An update writes a new timestamped directory, links `..data_tmp` to
 * it, renames that over `..data` and removes the old directory.
 */
function secretVolume(root: string, ca: Buffer, first: Issued): Layout {
  const stamp = (v: number): string => `..2026_12_07_23_0${v}_00.00000000${v}`;
  const write = (v: number, c: Issued): void => {
    mkdirSync(join(root, stamp(v)));
    writeFileSync(join(root, stamp(v), 'tls.crt'), Buffer.concat([c.leaf, ca]));
    writeFileSync(join(root, stamp(v), 'tls.key'), c.key, { mode: 0o600 });
  };
  write(1, first);
  symlinkSync(stamp(1), join(root, '..data'));
  symlinkSync('..data/tls.crt', join(root, 'tls.crt'));
  symlinkSync('..data/tls.key', join(root, 'tls.key'));
  return {
    cert: join(root, 'tls.crt'),
    key: join(root, 'tls.key'),
    renew: (v, c) => {
      write(v, c);
      symlinkSync(stamp(v), join(root, '..data_tmp'));
      renameSync(join(root, '..data_tmp'), join(root, '..data'));
      rmSync(join(root, stamp(v - 1)), { recursive: true });
    },
  };
}

/** The configuration names links of its own to certbot's live links (/etc/lemonade/tls/x.pem -> live/NAME/fullchain.pem). */
function linkToCertbot(root: string, ca: Buffer, first: Issued): Layout {
  const inner = certbot(join(root, 'letsencrypt'), ca, 'unlink and symlink', first);
  const own = join(root, 'lemonade');
  mkdirSync(own);
  symlinkSync(inner.cert, join(own, 'svc.pem'));
  symlinkSync(inner.key, join(own, 'svc.key'));
  return { cert: join(own, 'svc.pem'), key: join(own, 'svc.key'), renew: inner.renew };
}

/** The pair in a directory per version, the configuration naming them through a directory link `current`, renamed over. */
function directoryLink(root: string, ca: Buffer, first: Issued): Layout {
  const write = (v: number, c: Issued): void => {
    mkdirSync(join(root, `v${v}`));
    writeFileSync(join(root, `v${v}`, 'svc.pem'), Buffer.concat([c.leaf, ca]));
    writeFileSync(join(root, `v${v}`, 'svc.key'), c.key, { mode: 0o600 });
  };
  write(1, first);
  symlinkSync('v1', join(root, 'current'));
  return {
    cert: join(root, 'current', 'svc.pem'),
    key: join(root, 'current', 'svc.key'),
    renew: (v, c) => {
      write(v, c);
      symlinkSync(`v${v}`, join(root, 'current.new'));
      renameSync(join(root, 'current.new'), join(root, 'current'));
    },
  };
}

/** One full handshake and an echoed line: the fingerprint of the certificate served. */
function handshake(port: number, ca: Buffer, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', ca, servername: 'svc.test' }, () => s.write(`${line}\n`));
    let got = '';
    const t = setTimeout(() => s.destroy(new Error(`no echo of ${line} within 5 s`)), 5000);
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (!got.includes(`${line}\n`)) return;
      clearTimeout(t);
      const fp = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve(fp);
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** A TLS connection kept open: send a line, resolve when it comes back. */
async function heldConnection(port: number, ca: Buffer): Promise<{ fingerprint: string; echo(line: string): Promise<void>; close(): void }> {
  const s = tls.connect({ port, host: '127.0.0.1', ca, servername: 'svc.test' });
  await new Promise<void>((resolve, reject) => {
    s.once('secureConnect', resolve);
    s.once('error', reject);
  });
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString()));
  return {
    fingerprint: s.getPeerCertificate().fingerprint256,
    echo: async (line) => {
      s.write(`${line}\n`);
      await waitFor(() => got.includes(`${line}\n`), 5000, `the held connection to echo ${line}`);
    },
    close: () => s.destroy(),
  };
}

/** openssl s_client's view: the serial of the leaf certificate it was sent. */
function sClientSerial(port: number, dir: string): string {
  const out = openssl(dir, ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'svc.test', '-CAfile', join(dir, 'ca.pem'), '-verify_return_error'], '');
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out);
  assert.ok(pem, out);
  assert.match(out, /Verify return code: 0 \(ok\)/);
  return new X509Certificate(pem[0]).serialNumber;
}

async function balancer(t: Parameters<typeof startBalancer>[0], layout: Layout, port: number, backend: number, workers: number): Promise<Balancer> {
  return startBalancer(
    t,
    `[runtime]
# the poll out of reach: the watcher alone must see the swap
config_watch_interval_millis = 600000
workers = ${workers}
[admin]
listen_address = "127.0.0.1:0"
[[services]]
name = "web"
listen_address = "127.0.0.1:${port}"
[services.tls]
certificates = [{ cert = "${layout.cert}", key = "${layout.key}" }]
[[services.backends]]
address = "127.0.0.1:${backend}"
`,
  );
}

/** [what, the layout, worker processes] */
const LAYOUTS: [string, (root: string, ca: Buffer, first: Issued) => Layout, number][] = [
  ["certbot, links re-pointed by unlink and symlink (certbot's own way)", (r, ca, c) => certbot(r, ca, 'unlink and symlink', c), 1],
  ['certbot, each link replaced by a new link renamed over it', (r, ca, c) => certbot(r, ca, 'rename a new link', c), 1],
  ['a Kubernetes Secret volume, `..data` swapped to a new timestamped directory', secretVolume, 1],
  ["links of the configuration's own to certbot's live links", linkToCertbot, 1],
  ['a directory link renamed over, the files named through it', directoryLink, 1],
  ['certbot, with two worker processes', (r, ca, c) => certbot(r, ca, 'unlink and symlink', c), 2],
];

for (const [name, make, workers] of LAYOUTS) {
  test(`renewal by symlink swap under load: ${name}`, async (t) => {
    if (!requireTool(t, 'openssl', OPENSSL)) return;
    const dir = tempDir();
    makeCa(dir);
    const ca = readFileSync(join(dir, 'ca.pem'));
    const versions = [issue(dir, 1), issue(dir, 2), issue(dir, 3)];
    const layout = make(tempDir('lemonade-certs-'), ca, versions[0]!);
    const echo = await startEcho(t);
    const port = await freePort();
    const b = await balancer(t, layout, port, echo.port, workers);
    assert.equal(await handshake(port, ca, 'first'), versions[0]!.fingerprint);
    const held = await heldConnection(port, ca);
    t.after(() => held.close());

    // four clients in a bounded loop of full handshakes, each echoing a line, through the swap
    const seen: string[] = [];
    const failures: string[] = [];
    let stop = false;
    const deadline = Date.now() + 60_000;
    const loop = async (id: number): Promise<void> => {
      for (let i = 0; !stop && seen.length + failures.length < 20_000 && Date.now() < deadline; i++) {
        try {
          seen.push(await handshake(port, ca, `c${id}-${i}`));
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    const loops = Promise.all([0, 1, 2, 3].map(loop));
    await waitFor(() => seen.length >= 40, 10_000, 'connections before the renewal');
    const atSwap = seen.length;
    const swappedAt = Date.now();
    layout.renew(2, versions[1]!);
    // the watcher settles for 100 ms, then reloads: well within this, far from the poll
    const firstNew = await waitFor(() => {
      const i = seen.indexOf(versions[1]!.fingerprint);
      return i >= 0 ? i + 1 : null;
    }, 10_000, 'a new handshake with the renewed certificate');
    const tookMs = Date.now() - swappedAt;
    await waitFor(() => seen.length >= firstNew + 40, 10_000, 'connections after the renewal');
    stop = true;
    await loops;

    assert.deepEqual(failures, [], `${failures.length} of ${seen.length + failures.length} connections failed`);
    assert.ok(firstNew - atSwap > 0, `connections completed between the swap and the first handshake with the new certificate: ${firstNew - atSwap}`);
    assert.deepEqual(new Set(seen), new Set([versions[0]!.fingerprint, versions[1]!.fingerprint]), 'only the two versions were ever served');
    for (let i = 0; i < 5; i++) assert.equal(await handshake(port, ca, `after-${i}`), versions[1]!.fingerprint, 'every new handshake has the renewed certificate');
    t.diagnostic(`${seen.length} connections, ${firstNew - atSwap} completed between the swap and the first renewed handshake (${tookMs} ms)`);

    // what was open stays open, on its own handshake's certificate
    await held.echo('held-across-the-swap');
    assert.equal(held.fingerprint, versions[0]!.fingerprint);
    held.close();

    // the watcher saw it: a reload triggered by a file event, none failed (no half-swapped pair read)
    const reloaded = await b.waitForLog((l) => String(l['msg']).startsWith('config reloaded'), 5000, 'the reload');
    assert.equal(reloaded['trigger'], 'file');
    assert.deepEqual(b.logs.filter((l) => l['msg'] === 'config reload failed; the running configuration is unchanged'), []);
    assert.equal(sClientSerial(port, dir), versions[1]!.serial, 'openssl s_client is sent the new serial');

    // the next renewal is seen as the first was
    layout.renew(3, versions[2]!);
    await waitFor(async () => (await handshake(port, ca, 'third')) === versions[2]!.fingerprint, 10_000, 'a handshake with the second renewal');
    assert.equal(b.logs.filter((l) => String(l['msg']).startsWith('config reloaded') && l['trigger'] === 'file').length, 2, 'one reload per renewal');
  });
}
