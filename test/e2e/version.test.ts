// GET /version from outside: a running balancer answers the package.json version, the Node.js it
// runs on and the git commit its bundle was built from, the same commit `lemonade --version`
// prints, with no token even when one is set. The test builds nothing: scripts/build.mjs wrote the
// commit it put in the bundle to dist/build-info.json, and when this tree is a git checkout that
// commit must be its HEAD (`git rev-parse --short=12 HEAD`, as the build read it).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, adminJson, runCli, startBalancer, startEcho, testConfig } from '../helpers';

const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

/** What the build says it put in the bundle. */
function built(): { version: string; commit: string } {
  return JSON.parse(readFileSync(join(ROOT, 'dist', 'build-info.json'), 'utf8')) as { version: string; commit: string };
}

/** `git rev-parse --short=12 HEAD` of this tree when it is a git checkout of its own, else null. */
function checkoutHead(): string | null {
  const git = (args: string[]): string | null => {
    const r = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return r.error === undefined && r.status === 0 ? r.stdout.trim() : null;
  };
  const top = git(['rev-parse', '--show-toplevel']);
  if (top === null || realpathSync(top) !== realpathSync(ROOT)) return null;
  return git(['rev-parse', '--short=12', 'HEAD']);
}

test('GET /version answers the package version, the running Node.js and the commit built, with no token; lemonade --version names the same commit', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { admin: 'listen_address = "127.0.0.1:0"\ntoken = "s3cret-for-version"' }));
  const r = await lb.admin('/version');
  assert.equal(r.status, 200, r.body);
  const { commit } = built();
  assert.deepEqual(JSON.parse(r.body), { version: PKG.version, node: process.versions.node, commit });
  assert.match(commit, /^([0-9a-f]{7,12})?$/, 'a hex prefix, or "" when unknown');

  const cli = await runCli(['--version']);
  assert.equal(cli.code, 0);
  assert.equal(cli.stdout.trim(), `lemonade ${PKG.version} (${commit === '' ? '' : `commit ${commit}, `}Node.js ${process.version})`);
});

test('the commit is the HEAD of the checkout the bundle was built from', async (t) => {
  const head = checkoutHead();
  const { commit } = built();
  if (head === null) {
    // a tree without .git (a tarball, an image's build): the build knew no commit unless it was given one
    t.diagnostic(`${ROOT} is not a git checkout: the build's commit is "${commit}" (LEMONADE_BUILD_COMMIT or none)`);
    assert.match(commit, /^([0-9a-f]{7,12})?$/);
    return;
  }
  assert.match(head, /^[0-9a-f]{12,}$/);
  assert.equal(commit, head, `dist/lemonade.js was built at commit "${commit}", the checkout is at ${head}: run npm run build`);
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]));
  assert.equal((await adminJson<{ commit: string }>(lb, '/version')).commit, head);
});
