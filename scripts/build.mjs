// Bundles src/main.ts into the single self-contained file dist/lemonade.js.
import { build } from 'esbuild';
import { readFileSync, chmodSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const outfile = new URL('../dist/lemonade.js', import.meta.url).pathname;

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
  define: { LEMONADE_VERSION: JSON.stringify(pkg.version), 'import.meta.url': '__lemonadeImportMetaUrl' },
  // optional native module (systemd notify); the bundle falls back when it is absent
  external: ['sd-notify'],
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);
