// Before serving, the raw relay proves itself on this Node: the checks in ./raw.ts only see that
// the internal functions exist, not that they still behave as the relay expects (what onread
// returns, the streamBaseState slots, the end-of-file status, shutdown after queued writes). So a
// real listener and the raw transport relay over loopback, to a backend of our own, a payload each way
// and the end of file each way, byte-exact, within a short bound; on any failure the process
// relays on net.Socket and the start log says why.

import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { parseAndValidate } from '../config/load';
import { DEFAULT_SERVICE } from '../config/schema';
import { liveSnapshot } from '../core/snapshot';
import { LoadTable } from '../core/stats';
import { STRATEGIES } from '../strategy/index';
import { ProxyListener } from '../proxy/listener';
import { raw, relayPlan, setRelay, type RawBindings, type RelayChoice } from '../proxy/raw';
import { useBindings } from '../proxy/transport-raw';
import type { ProxyObserver } from '../proxy/events';
import type { Logger } from '../obs/logger';

/** The self-test's bound: it takes a few milliseconds on an idle machine. */
export const SELF_TEST_TIMEOUT_MS = 3000;

/** Client to backend and back: big enough to queue writes and use the relay's own read buffers. */
const UP_BYTES = 512 * 1024 + 7;
const DOWN_BYTES = 768 * 1024 + 13;

const QUIET: ProxyObserver = { logSample: 0, rejected() {}, connectFailed() {}, connected() {}, closed() {}, acceptError() {} };

/**
 * Relay through the raw path with `bindings`: null when both payloads and both ends of file came
 * through intact, else what went wrong.
 */
export async function rawSelfTest(bindings: RawBindings, timeoutMs = SELF_TEST_TIMEOUT_MS): Promise<string | null> {
  const cleanup = new Cleanup();
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no byte-exact exchange and end of file both ways within ${timeoutMs} ms`), timeoutMs);
  });
  try {
    return await Promise.race([exchange(bindings, cleanup), bound]);
  } catch (e) {
    return `self-test: ${e instanceof Error ? e.message : String(e)}`;
  } finally {
    clearTimeout(timer);
    cleanup.run();
  }
}

/** What the exchange opened; once run, what it opens later (past the bound) is closed at once. */
class Cleanup {
  private readonly list: (() => void)[] = [];
  private done = false;
  push(f: () => void): void {
    if (this.done) f();
    else this.list.push(f);
  }
  run(): void {
    this.done = true;
    for (const f of this.list.reverse()) f();
  }
}

/** One exchange through a raw relay; what it opens is closed by `cleanup`. */
async function exchange(bindings: RawBindings, cleanup: Cleanup): Promise<string | null> {
  const up = randomBytes(UP_BYTES);
  const down = randomBytes(DOWN_BYTES);
  // the backend: reads the client's payload to its end of file, then answers and ends
  const backend = net.createServer({ allowHalfOpen: true }, (s) => {
    cleanup.push(() => s.destroy());
    const got: Buffer[] = [];
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => got.push(d));
    s.on('end', () => {
      s.end(Buffer.concat(got).equals(up) ? down : Buffer.from('wrong bytes upstream'));
    });
  });
  cleanup.push(() => backend.close());
  await new Promise<void>((resolve, reject) => {
    backend.once('error', reject);
    // exclusive: in a cluster worker a port-0 listen would otherwise be the primary's socket,
    // shared with the other workers' self-tests
    backend.listen({ port: 0, host: '127.0.0.1', exclusive: true }, resolve);
  });
  const port = (backend.address() as net.AddressInfo).port;
  // (the listener below binds port 0 itself; the config's listen_address is not used)
  const parsed = parseAndValidate(`[proxy]\nlisten_address = "127.0.0.1:1"\n[[backends]]\nname = "self-test"\naddress = "127.0.0.1:${port}"\n`, {});
  if (!parsed.ok) return `self-test config: ${parsed.issues.map((i) => i.message).join('; ')}`;
  const snap = liveSnapshot(parsed.config, 1, new LoadTable(Date.now), { now: Date.now, random: Math.random, strategies: STRATEGIES }, new Map());
  useBindings(bindings);
  const listener = new ProxyListener({ current: () => snap, observer: QUIET, now: Date.now, raw: true });
  cleanup.push(() => {
    void listener.close();
    void listener.registry.drain(0); // cuts what a failed exchange left open
  });
  // the socket is the config's listen address (its route table's key), bound on port 0
  await listener.listen(snap.service(DEFAULT_SERVICE)!.listenAddress, { host: '127.0.0.1', port: 0 });
  const address = listener.addresses().get(DEFAULT_SERVICE)!;
  return new Promise<string | null>((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port: Number(address.slice(address.lastIndexOf(':') + 1)), allowHalfOpen: true });
    cleanup.push(() => c.destroy());
    const got: Buffer[] = [];
    c.on('error', (e) => resolve(`client: ${e.message}`));
    c.on('data', (d: Buffer) => got.push(d));
    c.on('end', () => {
      const all = Buffer.concat(got);
      if (all.equals(down)) resolve(null);
      else if (all.length === down.length) resolve(`the client got the backend's ${down.length} bytes, but not byte-exact`);
      else resolve(`the client got ${all.length} bytes, not the backend's ${down.length}`);
    });
    c.end(up);
  });
}

/**
 * Which relay this process uses: relayPlan()'s answer, and for the raw one, only once the
 * self-test passed. Remembered for every listener built after (rawAvailable()).
 */
export async function chooseRelay(env: NodeJS.ProcessEnv = process.env, version: string = process.version, bindings: RawBindings | null = raw()): Promise<RelayChoice> {
  let choice = relayPlan(env, version, bindings);
  if (choice.relay === 'raw') {
    const failed = await rawSelfTest(bindings!);
    if (failed !== null) choice = { relay: 'net.Socket', reason: `the raw relay failed its self-test on Node.js ${version}: ${failed}` };
  }
  setRelay(choice);
  return choice;
}

/** With net.Socket, one line saying why (a warning unless the operator asked for it). */
export function logRelay(logger: Logger, choice: RelayChoice): void {
  if (choice.relay === 'raw') return;
  const asked = choice.reason.startsWith('LEMONADE_LB_NET_SOCKETS');
  logger[asked ? 'info' : 'warn']({ relay: choice.relay, reason: choice.reason }, `relaying on net.Socket, not the raw relay: ${choice.reason}`);
}
