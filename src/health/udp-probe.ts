// send_expect over UDP, for a service with protocol = "udp": a dgram socket connected to the
// backend, each step's `send` one datagram, the datagrams back its reply (health/send-expect.ts's
// Conversation tests them as it does a TCP reply). The whole check is bounded by timeoutMs; an
// ICMP error (the port unreachable) fails it at once.

import dgram from 'node:dgram';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { lookup as dnsLookup } from 'node:dns';
import { Conversation, type Step } from './send-expect';
import { play } from './play';

/** Returns a function that aborts the probe; `done(null)` when the last step matched, else the error. */
export function udpSendExpectProbe(host: string, port: number, steps: readonly Step[], timeoutMs: number, done: (error: string | null) => void): () => void {
  const conv = new Conversation(steps);
  let finished = false;
  let s: dgram.Socket | null = null;
  const abort = (): void => {
    finished = true;
    clearTimeout(t);
    stop();
    try {
      s?.close();
    } catch {
      // already closed
    }
  };
  const finish = (error: string | null): void => {
    if (finished) return;
    abort();
    done(error);
  };
  const t = setTimeout(() => finish(`timeout after ${timeoutMs} ms: ${conv.waiting()}`), timeoutMs);
  t.unref();
  const { act, stop } = play(conv, (bytes) => s!.send(bytes), finish, () => finished);
  const open = (address: string, family: number): void => {
    if (finished) return;
    const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    s = sock;
    sock.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
    sock.on('message', (d: Buffer) => act(conv.receive(d, performance.now())));
    sock.connect(port, address, () => act(conv.start()));
  };
  const family = isIP(host);
  if (family !== 0) open(host, family);
  else {
    dnsLookup(host, (err, address, family) => {
      if (err) finish(err.code ?? err.message);
      else open(address, family);
    });
  }
  return abort;
}
