// The relay's read buffers (src/proxy/read-buffer.ts, and "Reading" in src/proxy/transport-net.ts): each socket reads into a buffer the
// balancer gives it and reuses it only when the write of what was read into it completed at once.
// These tests make writes queue (slow readers, random chunk sizes that move a socket between the
// shared buffer and its own) and check every byte by SHA-256, plus half-close in each direction
// while bytes are still queued in the balancer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes, randomInt, createHash } from 'node:crypto';
import { atEnd, type Ends, startBalancer, startEcho, startTcpServer, testConfig, waitFor } from '../helpers';
import { clientOnreadAvailable } from '../../src/proxy/transport-net';

// The client side's fast path uses Node internals (transport-net.ts, "An accepted socket ..."): when
// a Node upgrade renames them the relay silently falls back to 'data' events. Say so loudly.
test(`this Node (${process.version}) lets accepted sockets read with onread`, () => {
  assert.equal(clientOnreadAvailable(), true, 'net.Socket has no kBuffer/kBufferCb/kBufferGen symbols: the client side falls back to the slower data events');
});

const MiB = 1024 * 1024;

const HELLO = 'relay-test-hello';

/**
 * A backend that calls `onConn` only for the connection the test makes through the balancer: the
 * balancer's health checks connect too, and they never send HELLO. The socket is paused when
 * `onConn` gets it.
 */
function startProxiedBackend(t: Ends, onConn: (s: net.Socket) => void): ReturnType<typeof startTcpServer> {
  return startTcpServer(t, (s) => {
    s.once('data', (d: Buffer) => {
      s.pause();
      if (d.toString() === HELLO) onConn(s);
      else s.destroy();
    });
  });
}

/** Connect through the balancer and say HELLO; with `ack`, wait for the backend's 'ok' first. */
async function connectThrough(port: number, ack = false): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await new Promise<void>((r) => c.once('connect', r));
  c.write(HELLO);
  if (ack) {
    const ok = await new Promise<Buffer>((r) => c.once('data', r));
    assert.equal(ok.toString(), 'ok');
    c.pause();
  }
  return c;
}

/** A chunk size: half small (below Buffer's pool limit), half up to 256 KiB. */
/**
 * A backend behind a balancer and a client connected through it (with `ack`, the HELLO handshake
 * done), torn down after the test; with `collect` the client gathers what comes back in `answer`.
 */
async function throughBalancer(
  t: { after(f: () => Promise<void>): void },
  onBackend: (s: net.Socket) => void,
  o: { ack?: boolean; collect?: boolean } = {},
): Promise<{ c: net.Socket; answer: Buffer[]; ended: Promise<void> }> {
  const be = await startProxiedBackend(t, onBackend);
  const lb = await startBalancer(t, testConfig([{ address: be.address }]));
  const c = await connectThrough(lb.port, o.ack ?? true);
  atEnd(t, () => c.destroy());
  const answer: Buffer[] = [];
  if (o.collect ?? true) {
    c.on('data', (d: Buffer) => answer.push(d));
    c.resume();
  }
  return { c, answer, ended: new Promise<void>((r) => c.once('end', r)) };
}

function chunkSize(): number {
  return randomInt(2) === 0 ? randomInt(1, 4096) : randomInt(4096, 256 * 1024);
}

/** Write `total` random bytes in random chunk sizes, honouring backpressure, sometimes yielding
 * to the event loop so that the reader sees small reads too; resolves with their SHA-256. */
async function writeRandom(s: net.Socket, total: number): Promise<string> {
  const h = createHash('sha256');
  let left = total;
  while (left > 0 && !s.destroyed) {
    const chunk = randomBytes(Math.min(left, chunkSize()));
    h.update(chunk);
    left -= chunk.length;
    if (!s.write(chunk)) await new Promise<void>((r) => s.once('drain', r));
    else if (randomInt(8) === 0) await new Promise<void>((r) => setImmediate(r));
  }
  return h.digest('hex');
}

/** Read everything until 'end' as a slow reader (pausing now and then); SHA-256 and byte count. */
function readSlowly(s: net.Socket): Promise<{ sha: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  return new Promise((res, rej) => {
    s.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
      if (randomInt(4) === 0) {
        s.pause();
        setTimeout(() => s.resume(), randomInt(3));
      }
    });
    s.once('end', () => res({ sha: h.digest('hex'), bytes }));
    s.once('error', rej);
    s.once('close', () => rej(new Error(`closed after ${bytes} bytes without an end`)));
    s.resume();
  });
}

test('64 MiB from a fast backend in random chunk sizes to a slow client arrives byte-exact', async (t) => {
  let sent: Promise<string> | null = null;
  const { c } = await throughBalancer(
    t,
    (s) => {
      sent = writeRandom(s, 64 * MiB).then((sha) => (s.end(), sha));
    },
    { ack: false, collect: false },
  );
  const got = await readSlowly(c);
  assert.equal(got.bytes, 64 * MiB);
  assert.equal(got.sha, await sent!);
});

test('64 MiB from a fast client in random chunk sizes to a slow backend arrives byte-exact, then the answer comes back', async (t) => {
  const { c, answer, ended } = await throughBalancer(t, (s) => {
    s.write('ok');
    void readSlowly(s).then((r) => s.end(`${r.bytes} ${r.sha}`));
  });
  const sha = await writeRandom(c, 64 * MiB);
  c.end();
  await ended;
  assert.equal(Buffer.concat(answer).toString(), `${64 * MiB} ${sha}`);
});

test('reads of 4-16 KiB while the client is backed up: a buffer with a queued write is not read into again', async (t) => {
  // A read of 4-16 KiB goes to the socket's own buffer, and write() returns true for it even when
  // the kernel took none of it, so the balancer keeps reading: the next read must not go into
  // the buffer that queued write still points at. The client stops reading after every 2 MiB
  // until the backend sees the whole path full (its own writes queue), so writes queue in the
  // balancer again and again.
  const total = 32 * MiB;
  let sent: Promise<string> | null = null;
  let backend: net.Socket | null = null;
  const { c } = await throughBalancer(t, (s) => {
    backend = s;
    sent = (async () => {
      const h = createHash('sha256');
      for (let left = total; left > 0 && !s.destroyed; ) {
        const chunk = randomBytes(Math.min(left, randomInt(4096, 16 * 1024)));
        h.update(chunk);
        left -= chunk.length;
        // one chunk per turn of the event loop, so the balancer reads them one by one
        if (s.write(chunk)) await new Promise<void>((r) => setImmediate(r));
        else await new Promise<void>((r) => s.once('drain', r));
      }
      s.end();
      return h.digest('hex');
    })();
  }, { ack: false, collect: false });
  const h = createHash('sha256');
  let bytes = 0;
  let nextStop = 2 * MiB;
  c.on('data', (d: Buffer) => {
    h.update(d);
    bytes += d.length;
    if (bytes >= nextStop && bytes < total) {
      nextStop += 2 * MiB;
      c.pause();
      void waitFor(() => backend!.writableLength > 0 || backend!.writableEnded, 10_000, 'the path to fill', 1).then(() => c.resume());
    }
  });
  await new Promise<void>((r) => c.once('end', r));
  assert.equal(bytes, total);
  assert.equal(h.digest('hex'), await sent!);
});

/** Poll until `s` has bytes queued that stopped moving: the path through the balancer is full. */
/** Once `writer` is backed up (the whole path full), read `reader` to its FIN; resolves with every byte. */
async function readAfterStall(writer: net.Socket, reader: net.Socket, what: string): Promise<Buffer> {
  await stalled(writer, what);
  const got: Buffer[] = [];
  reader.on('data', (d: Buffer) => got.push(d));
  await new Promise<void>((r) => {
    reader.once('end', r);
    reader.resume();
  });
  return Buffer.concat(got);
}

async function stalled(s: net.Socket, what: string): Promise<void> {
  let last = -1;
  await waitFor(
    () => {
      const n = s.writableLength;
      const still = n > 0 && n === last;
      last = n;
      return still;
    },
    10_000,
    what,
    100,
  );
}

test('client half-close while its bytes are queued: the backend gets every byte, then the FIN, and can still answer', async (t) => {
  const data = randomBytes(32 * MiB);
  let backend: net.Socket | null = null;
  const { c, answer, ended: clientEnded } = await throughBalancer(t, (s) => {
    backend = s; // paused: it reads nothing until the whole path is full
    s.write('ok');
  });
  c.write(data);
  c.end();
  const s = await waitFor(() => backend, 5000, 'the backend connection');
  const got = await readAfterStall(c, s, 'the client to be backed up');
  assert.equal(got.equals(data), true, 'the backend read every byte, in order, before the FIN');
  s.end('after your FIN');
  await clientEnded;
  assert.equal(Buffer.concat(answer).toString(), 'after your FIN');
});

test('backend half-close while its bytes are queued: the client gets every byte, then the FIN, and can still send', async (t) => {
  const data = randomBytes(32 * MiB);
  let backend: net.Socket | null = null;
  const fromClient: Buffer[] = [];
  let backendGotEnd = false;
  const { c } = await throughBalancer(
    t,
    (s) => {
      backend = s;
      s.on('data', (d: Buffer) => fromClient.push(d));
      s.on('end', () => (backendGotEnd = true));
      s.resume();
      s.write(data);
      s.end();
    },
    { ack: false, collect: false },
  );
  c.pause(); // read nothing until the whole path is full
  const s = await waitFor(() => backend, 5000, 'the backend connection');
  const got = await readAfterStall(s, c, 'the backend to be backed up');
  assert.equal(got.equals(data), true, 'the client read every byte, in order, before the FIN');
  c.end('after your FIN');
  await waitFor(() => backendGotEnd, 5000, 'the client FIN at the backend');
  assert.equal(Buffer.concat(fromClient).toString(), 'after your FIN');
});

test('40 concurrent connections exchanging messages of random sizes through an echo backend get each byte back', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]));
  const conns: net.Socket[] = [];
  atEnd(t, () => {
    for (const c of conns) c.destroy();
  });
  const one = async (): Promise<void> => {
    const c = net.connect({ host: '127.0.0.1', port: lb.port });
    conns.push(c);
    await new Promise<void>((r) => c.once('connect', r));
    let pending: Buffer[] = [];
    let have = 0;
    let wake: (() => void) | null = null;
    c.on('data', (d: Buffer) => {
      pending.push(d);
      have += d.length;
      wake?.();
    });
    for (let i = 0; i < 100; i++) {
      // sizes on both sides of Buffer's pool limit, so sockets move between buffers
      const msg = randomBytes(randomInt(2) === 0 ? randomInt(1, 4096) : randomInt(4096, 100_000));
      c.write(msg);
      while (have < msg.length) await new Promise<void>((r) => (wake = r));
      wake = null;
      const back = Buffer.concat(pending);
      assert.equal(back.length, msg.length, 'no byte more than was sent');
      assert.equal(back.equals(msg), true, `message ${i} came back byte-exact`);
      pending = [];
      have = 0;
    }
    c.end();
  };
  await Promise.all(Array.from({ length: 40 }, one));
});
