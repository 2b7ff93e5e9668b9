// Bundles src/main.ts into the single self-contained file dist/lemonade.js, with the version and
// the git commit it is built from (src/version.ts); dist/build-info.json says the same for tests.
// The commit is `git rev-parse --short=12 HEAD` when this tree is a git checkout of its own, else
// LEMONADE_BUILD_COMMIT (a build without .git, e.g. an image's), else "" (unknown).
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { readFileSync, chmodSync, realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const outfile = new URL('../dist/lemonade.js', import.meta.url).pathname;

function git(args) {
  const r = spawnSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return r.status === 0 ? r.stdout.trim() : '';
}

function commit() {
  // only this tree's own checkout: not that of a repository it was unpacked inside
  const top = git(['rev-parse', '--show-toplevel']);
  if (top !== '' && realpathSync(top) === realpathSync(root)) {
    const head = git(['rev-parse', '--short=12', 'HEAD']);
    if (/^[0-9a-f]{7,40}$/.test(head)) return head;
  }
  const given = (process.env.LEMONADE_BUILD_COMMIT ?? '').trim().toLowerCase();
  if (given !== '' && !/^[0-9a-f]{7,40}$/.test(given)) throw new Error(`LEMONADE_BUILD_COMMIT must be a git commit in hex (7 to 40 digits), got "${given}"`);
  return given.slice(0, 12);
}

const info = { version: pkg.version, commit: commit() };

await build({
  entryPoints: [new URL('../src/main.ts', import.meta.url).pathname],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  // yargs ships as ESM and reads import.meta.url: give it the bundle's own URL
  banner: { js: "#!/usr/bin/env node\nconst __lemonadeImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  define: { LEMONADE_VERSION: JSON.stringify(info.version), LEMONADE_COMMIT: JSON.stringify(info.commit), 'import.meta.url': '__lemonadeImportMetaUrl' },
  // optional native module (systemd notify); the bundle falls back when it is absent
  external: ['sd-notify'],
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);
writeFileSync(new URL('../dist/build-info.json', import.meta.url), `${JSON.stringify(info)}\n`);
