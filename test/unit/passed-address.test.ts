// passedAddress(fd): the address a listening socket is bound to, read from /proc without touching
// the socket (socket activation matches each passed socket to a service by it).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { passedAddress } from '../../src/runtime/systemd';

async function listening(host: string): Promise<net.Server> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  return s;
}

const fdOf = (s: net.Server): number => (s as unknown as { _handle: { fd: number } })._handle.fd;

for (const [host, shown] of [
  ['127.0.0.1', '127.0.0.1'],
  ['::1', '[::1]'],
  ['::', '[::]'],
  ['0.0.0.0', '0.0.0.0'],
] as const) {
  test(`a socket listening on ${host} reads as ${shown}:PORT, and still listens`, async (t) => {
    const s = await listening(host);
    t.after(() => s.close());
    const port = (s.address() as net.AddressInfo).port;
    assert.equal(passedAddress(fdOf(s)), `${shown}:${port}`);
    // untouched: it still accepts
    const c = net.connect({ host: host === '::' ? '::1' : host === '0.0.0.0' ? '127.0.0.1' : host, port });
    await new Promise<void>((resolve, reject) => c.once('connect', resolve).once('error', reject));
    c.destroy();
  });
}

test('a descriptor that is not a socket reads as null', () => {
  assert.equal(passedAddress(0), null);
});
