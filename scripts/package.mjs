#!/usr/bin/env node
// Builds the Debian package lemonade-lb_VERSION_amd64.deb with dpkg-deb (no debhelper needed):
// stages dist/deb/root/ from the single executable dist/lemonade (scripts/sea.mjs: the bundle
// inside a pinned Node, so the package needs no nodejs), systemd/ and packaging/deb/, takes the
// executable's library dependencies from dpkg-shlibdeps, checks the units with
// `systemd-analyze verify` (when systemd-analyze is there) and writes
// dist/lemonade-lb_VERSION_amd64.deb.
// Usage: node scripts/package.mjs [--out DIR] [--no-build]
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const outDir = args.includes('--out') ? args[args.indexOf('--out') + 1] : join(root, 'dist');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const version = pkg.version;
const deb = join(root, 'packaging', 'deb');
const stage = join(root, 'dist', 'deb', 'root');

const exe = join(root, 'dist', 'lemonade');
if (!args.includes('--no-build') || !existsSync(exe)) {
  execFileSync(process.execPath, [join(root, 'scripts', 'sea.mjs')], { stdio: 'inherit' });
}

rmSync(join(root, 'dist', 'deb'), { recursive: true, force: true });

function put(src, dest, mode = 0o644) {
  const to = join(stage, dest);
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  copyFileSync(src, to);
  chmodSync(to, mode);
}
function write(dest, data, mode = 0o644) {
  const to = join(stage, dest);
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  writeFileSync(to, data);
  chmodSync(to, mode);
}
const gz = (file) => gzipSync(readFileSync(file), { level: 9 });

// files
put(exe, 'usr/bin/lemonade', 0o755);
put(join(root, 'systemd', 'lemonade-lb.service'), 'usr/lib/systemd/system/lemonade-lb.service');
put(join(root, 'systemd', 'lemonade-lb.socket'), 'usr/lib/systemd/system/lemonade-lb.socket');
put(join(root, 'config', 'load-balancer.toml'), 'etc/lemonade/config.toml');
put(join(deb, 'lintian-overrides'), 'usr/share/lintian/overrides/lemonade-lb');
put(join(deb, 'default'), 'etc/default/lemonade-lb');
put(join(root, 'packaging', 'logrotate', 'lemonade-lb'), 'etc/logrotate.d/lemonade-lb');
write('usr/share/man/man1/lemonade.1.gz', gz(join(deb, 'lemonade.1')));
const doc = 'usr/share/doc/lemonade-lb';
put(join(deb, 'copyright'), `${doc}/copyright`);
write(`${doc}/changelog.gz`, gz(join(deb, 'changelog')));
put(join(root, 'README.md'), `${doc}/README.md`);
// the README's map links into docs/: ship them beside it so the links hold
for (const f of readdirSync(join(root, 'docs')).filter((n) => n.endsWith('.md'))) put(join(root, 'docs', f), `${doc}/docs/${f}`);
for (const f of ['keepalived-master.conf', 'keepalived-backup.conf', 'check_lemonade.sh']) {
  const src = join(root, 'packaging', 'keepalived', f);
  if (existsSync(src)) put(src, `${doc}/examples/keepalived/${f}`, 0o644);
}
for (const f of ['bird-node.conf', 'bird-router.conf', 'lemonade-announce.sh', 'lemonade-lb-announce.service']) {
  put(join(root, 'packaging', 'ecmp', f), `${doc}/examples/ecmp/${f}`, 0o644);
}

// control files
function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}
const files = walk(stage);
const installedKb = Math.ceil(files.reduce((n, f) => n + statSync(f).size, 0) / 1024);
const control = readFileSync(join(deb, 'control.in'), 'utf8')
  .replace('@VERSION@', version)
  .replace('@INSTALLED_SIZE@', String(installedKb))
  .replace('@SHLIBS@', shlibs(join(stage, 'usr/bin/lemonade')));
write('DEBIAN/control', control);
write('DEBIAN/conffiles', readFileSync(join(deb, 'conffiles')));
for (const s of ['postinst', 'prerm', 'postrm']) put(join(deb, s), `DEBIAN/${s}`, 0o755);
const md5 = files
  .filter((f) => !relative(stage, f).startsWith('etc/'))
  .map((f) => `${createHash('md5').update(readFileSync(f)).digest('hex')}  ${relative(stage, f)}`)
  .sort()
  .join('\n');
write('DEBIAN/md5sums', `${md5}\n`);
// directories 0755 whatever the umask
for (const d of [stage, ...walkDirs(stage)]) chmodSync(d, 0o755);
function walkDirs(dir) {
  return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).flatMap((e) => [join(dir, e.name), ...walkDirs(join(dir, e.name))]);
}

// the units must verify cleanly against the staged tree (systemd-analyze warns with exit 0: check its output)
if (hasTool('systemd-analyze')) {
  // a scratch root: the staged tree plus the host's targets and /bin/kill, which the units refer to
  const vroot = join(root, 'dist', 'deb', 'verify-root');
  mkdirSync(vroot, { recursive: true });
  execFileSync('cp', ['-a', `${stage}/.`, vroot + '/'], { stdio: 'inherit' });
  const sysdir = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(join(d, 'sysinit.target')));
  mkdirSync(join(vroot, 'usr/lib/systemd/system'), { recursive: true });
  if (sysdir) for (const t of readdirSync(sysdir).filter((n) => n.endsWith('.target') || n.endsWith('.slice'))) copyFileSync(join(sysdir, t), join(vroot, 'usr/lib/systemd/system', t));
  mkdirSync(join(vroot, 'bin'), { recursive: true });
  copyFileSync('/bin/kill', join(vroot, 'bin/kill'));
  chmodSync(join(vroot, 'bin/kill'), 0o755);
  let out = '';
  try {
    out = execFileSync('systemd-analyze', ['verify', `--root=${vroot}`, '/usr/lib/systemd/system/lemonade-lb.socket', '/usr/lib/systemd/system/lemonade-lb.service'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    out = `${e.stdout ?? ''}${e.stderr ?? ''}` || String(e);
  }
  rmSync(vroot, { recursive: true, force: true });
  if (out.trim()) {
    console.error(`systemd-analyze verify:\n${out}`);
    process.exit(1);
  }
}

mkdirSync(outDir, { recursive: true });
const debFile = join(outDir, `lemonade-lb_${version}_amd64.deb`);
execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', stage, debFile], { stdio: ['ignore', 'ignore', 'inherit'] });
console.log(debFile);

/** The shared libraries the executable links, as Depends (libc6, libstdc++6, libgcc-s1). */
function shlibs(file) {
  const dir = join(root, 'dist', 'deb', 'shlibs');
  mkdirSync(join(dir, 'debian'), { recursive: true });
  writeFileSync(join(dir, 'debian', 'control'), 'Source: lemonade-lb\n\nPackage: lemonade-lb\nArchitecture: amd64\n');
  const out = execFileSync('dpkg-shlibdeps', ['-O', '-e', file], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  rmSync(dir, { recursive: true, force: true });
  const deps = /^shlibs:Depends=(.*)$/m.exec(out)?.[1];
  if (!deps) throw new Error(`dpkg-shlibdeps found no library dependency for ${file}: ${out}`);
  return deps;
}

function hasTool(name) {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
