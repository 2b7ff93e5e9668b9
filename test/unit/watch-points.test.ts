// watchPoints(): where a change can change what a path reads, links followed. Each link met is
// watched in its own directory (re-pointing it is an event there), and the file at the end in its
// real directory; a missing component is watched where it will appear; a loop of links ends.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchPoints } from '../../src/runtime/reload';

const root = (): string => realpathSync(mkdtempSync(join(tmpdir(), 'lemonade-watch-points-')));

test('a plain file is watched in its directory', () => {
  const r = root();
  writeFileSync(join(r, 'a.pem'), 'x');
  assert.deepEqual(watchPoints(join(r, 'a.pem')), [[r, 'a.pem']]);
  assert.deepEqual(watchPoints('a.pem', r), [[r, 'a.pem']], 'a relative path, from the working directory');
});

test("certbot's live link, and a link of one's own to it: every link where it lives, then the archive file", () => {
  const r = root();
  mkdirSync(join(r, 'archive/x'), { recursive: true });
  mkdirSync(join(r, 'live/x'), { recursive: true });
  mkdirSync(join(r, 'own'));
  writeFileSync(join(r, 'archive/x/fullchain2.pem'), 'x');
  symlinkSync('../../archive/x/fullchain2.pem', join(r, 'live/x/fullchain.pem'));
  symlinkSync(join(r, 'live/x/fullchain.pem'), join(r, 'own/tls.pem'));
  assert.deepEqual(watchPoints(join(r, 'own/tls.pem')), [
    [join(r, 'own'), 'tls.pem'],
    [join(r, 'live/x'), 'fullchain.pem'],
    [join(r, 'archive/x'), 'fullchain2.pem'],
  ]);
});

test('a directory link on the way (a Secret volume, a `current` link) is watched where the link is', () => {
  const r = root();
  mkdirSync(join(r, '..2026_1'));
  writeFileSync(join(r, '..2026_1/tls.crt'), 'x');
  symlinkSync('..2026_1', join(r, '..data'));
  symlinkSync('..data/tls.crt', join(r, 'tls.crt'));
  assert.deepEqual(watchPoints(join(r, 'tls.crt')), [
    [r, 'tls.crt'],
    [r, '..data'],
    [join(r, '..2026_1'), 'tls.crt'],
  ]);
});

test('a missing component is watched where it will appear; a loop of links ends', () => {
  const r = root();
  assert.deepEqual(watchPoints(join(r, 'nothing/yet.pem')), [[r, 'nothing']]);
  symlinkSync('b', join(r, 'a'));
  symlinkSync('a', join(r, 'b'));
  const loop = watchPoints(join(r, 'a'));
  assert.ok(loop.length > 2 && loop.length <= 42, `${loop.length} points`);
  assert.deepEqual(new Set(loop.map((p) => p.join('/'))), new Set([join(r, 'a'), join(r, 'b')]));
});
