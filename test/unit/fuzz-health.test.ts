// Property tests (fast-check) of the parsers of a health check's outside bytes: the send_expect
// conversation over a backend's reply (byte `expect`, `expect_regex`, several steps) and the agent
// check's line reader and word parser. Random and hostile replies up to the read bound, in random
// chunks: never a throw, a bounded time per input, and a verdict equal to a simple reference
// (Buffer.includes, or the same RE2 pattern over the whole reply). FUZZ_SEED replays a seed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { RE2JS } from 're2js';
import { compileSteps, Conversation, MAX_REPLY_BYTES } from '../../src/health/send-expect';
import { printable, type StepText } from '../../src/config/step-text';
import { AgentLine, MAX_AGENT_REPLY, parseAgentReply } from '../../src/health/agent';

const SEED = process.env['FUZZ_SEED'] ? Number(process.env['FUZZ_SEED']) : undefined;
const params = (numRuns: number): fc.Parameters<unknown> => ({ numRuns, ...(SEED !== undefined ? { seed: SEED } : {}) });

/** fc.assert, with the counterexample cut short (a 64 KiB reply would flood the report) */
function check<T>(prop: fc.IProperty<T>, numRuns: number): void {
  const r = fc.check(prop, { ...params(numRuns), endOnFailure: true });
  if (!r.failed) return;
  const ex = JSON.stringify(r.counterexample, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.length} bytes: ${printable(v, 80)}>` : v));
  const cause = r.errorInstance instanceof Error ? r.errorInstance.message : String(r.errorInstance);
  throw new Error(`property failed after ${r.numRuns} runs (seed ${r.seed}, FUZZ_SEED=${r.seed} replays it): ${cause.slice(0, 500)}\ncounterexample: ${ex.slice(0, 800)}`);
}

/** per input, on a loaded 2-core machine: a whole 64 KiB reply in 1-byte chunks stays well under */
const LIMIT_MS = 1500;

/** bytes a backend may send: random, one repeated byte (backtracking food), or protocol-like text */
const replyBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 512 }),
  fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: MAX_REPLY_BYTES + 4096 }), fc.uint8Array({ maxLength: 4 })).map(([b, n, tail]) => {
    const out = new Uint8Array(n + tail.length).fill(b);
    out.set(tail, n);
    return out;
  }),
  fc.array(fc.constantFrom('+PONG\r\n', '-ERR x\r\n', 'role:master\r\n', 'role:slave', 'a', 'aaaa', '!', '\x00', '\xff', 'é', '\r\n', '#'), { maxLength: 64 }).map((p) => Buffer.from(p.join(''), 'utf8')),
);

/** chunk sizes the reply arrives in */
const chunking = fc.oneof(fc.constant([1]), fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 8 }));

function* chunksOf(bytes: Uint8Array, sizes: readonly number[]): Generator<Buffer> {
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield Buffer.from(bytes.buffer, bytes.byteOffset + at, Math.min(n, bytes.length - at));
    at += n;
  }
}

/** Run a conversation over the reply's chunks; its verdict (null: passed) and ms. */
function converse(steps: readonly StepText[], reply: Uint8Array, sizes: readonly number[]): { error: string | null; ms: number } {
  const conv = new Conversation(compileSteps(steps));
  const t0 = performance.now();
  let done = conv.start().done;
  // a clock of 10 µs a chunk (a socket read takes longer): a regex runs when the reply doubled
  // or 2000 chunks after its last run
  let now = 0;
  for (const c of chunksOf(reply, sizes)) {
    if (done !== null) break;
    done = conv.receive(c, (now += 0.01)).done;
  }
  done ??= conv.ended().done;
  assert.ok(done !== null);
  return { error: done.error, ms: performance.now() - t0 };
}

/** the part of a reply a step reads: what arrived, at most the read bound */
const kept = (reply: Uint8Array): Buffer => Buffer.from(reply.buffer, reply.byteOffset, Math.min(reply.length, MAX_REPLY_BYTES));

/** an error message is printable: no control byte (a tab where `tab` says), no byte past ASCII from the reply */
function assertPrintable(msg: string, tab = false): void {
  const bad = tab ? /[\x00-\x08\x0a-\x1f\x7f-\uffff]/ : /[\x00-\x1f\x7f-\uffff]/;
  assert.ok(!bad.test(msg.replace(/…/g, '')), `not printable: ${JSON.stringify(msg.slice(0, 200))}`);
}

const expectBytes = fc.oneof(fc.constantFrom('+PONG', 'role:master', 'a', 'aaaaa!', '\\x00', '\\xff', '\\r\\n'), fc.stringMatching(/^[a-z!+:]{1,6}$/));
const patterns = fc.oneof(
  fc.constantFrom('^(a+)+$', '(a|a)*b', '(a|aa)+$', '^\\+PONG', 'role:(master|slave)', '(?s).*x.*y', '\\x00', '(?i)ROLE', '^$', 'a{2,5}!', '[^\\x00-\\x7f]', '(?m)^#'),
  fc.stringMatching(/^[a!+.*?()|\\^$]{1,8}$/).filter((p) => typeof compileOk(p) !== 'string'),
);
function compileOk(p: string): RE2JS | string {
  try {
    return RE2JS.compile(p);
  } catch (e) {
    return (e as Error).message;
  }
}

test('send_expect, byte expect: the verdict is Buffer.includes over the kept reply, in any chunking, in bounded time', (t) => {
  let slowest = 0;
  check(
    fc.property(expectBytes, replyBytes, chunking, (expect, reply, sizes) => {
      const { error, ms } = converse([{ send: 'PING\\r\\n', expect, expectRegex: '' }], reply, sizes);
      slowest = Math.max(slowest, ms);
      const want = compileSteps([{ send: '', expect, expectRegex: '' }])[0]!.expect as Buffer;
      assert.equal(error === null, kept(reply).includes(want), `verdict ${error}`);
      if (error !== null) assertPrintable(error);
      assert.ok(ms < LIMIT_MS, `${ms.toFixed(0)} ms`);
    }),
    300,
  );
  t.diagnostic(`byte expect: slowest ${slowest.toFixed(1)} ms`);
});

test('send_expect, expect_regex: the verdict is the pattern over the kept reply (RE2, UTF-8), in bounded time', (t) => {
  let slowest = 0;
  check(
    fc.property(patterns, replyBytes, chunking, (pattern, reply, sizes) => {
      const { error, ms } = converse([{ send: 'PING\\r\\n', expect: '', expectRegex: pattern }], reply, sizes);
      slowest = Math.max(slowest, ms);
      // a chunked reply may match on a prefix (a `$` pattern): then some prefix matches
      const re = compileOk(pattern) as RE2JS;
      if (error === null) {
        const all = kept(reply);
        let any = false;
        let at = 0;
        for (const c of chunksOf(all, sizes)) {
          at += c.length;
          if (re.test(all.subarray(0, at))) {
            any = true;
            break;
          }
        }
        assert.ok(any, 'passed, but no prefix the chunks made matches');
      } else {
        // an empty reply matches nothing: a check passes on bytes, not on silence
        assert.equal(reply.length > 0 && re.test(kept(reply)), false, `failed (${error.slice(0, 120)}) but the whole kept reply matches`);
        assertPrintable(error);
      }
      assert.ok(ms < LIMIT_MS, `${ms.toFixed(0)} ms`);
    }),
    300,
  );
  t.diagnostic(`expect_regex: slowest ${slowest.toFixed(1)} ms`);
});

test('send_expect, several steps: never throws, finishes with a verdict, bounded time; a reply in one chunk per step passes', () => {
  const step: fc.Arbitrary<StepText> = fc.oneof(
    expectBytes.map((e) => ({ send: 'X\\r\\n', expect: e, expectRegex: '' })),
    patterns.map((p) => ({ send: '', expect: '', expectRegex: p })),
  );
  check(
    fc.property(fc.array(step, { minLength: 1, maxLength: 16 }), fc.array(replyBytes, { maxLength: 4 }), chunking, (steps, replies, sizes) => {
      const conv = new Conversation(compileSteps(steps));
      const t0 = performance.now();
      let done = conv.start().done;
      let now = 0;
      for (const r of replies) for (const c of chunksOf(r, sizes)) if (done === null) done = conv.receive(c, (now += 0.01)).done;
      if (done === null) done = conv.recheck((now += 0.01)).done;
      assert.equal(typeof conv.waiting(), 'string');
      done ??= conv.ended().done;
      assert.ok(done !== null);
      if (done.error !== null) assertPrintable(done.error);
      const ms = performance.now() - t0;
      assert.ok(ms < LIMIT_MS, `${ms.toFixed(0)} ms`);
    }),
    200,
  );
});

test('agent replies: any bytes in any chunks; a line of at most MAX_AGENT_REPLY printable bytes or an error, bounded time; the words as a reference reads them', () => {
  const agentBytes = fc.oneof(
    fc.uint8Array({ maxLength: 4096 }),
    fc.array(fc.constantFrom('up', 'down', 'drain', 'ready', 'maint', '50%', '100%', ' ', ',', '\t', '#', '\r', '\n', '\x00', '\xff', 'x'.repeat(700)), { maxLength: 30 }).map((p) => Buffer.from(p.join(''), 'latin1')),
    fc.integer({ min: 0, max: 1 << 20 }).map((n) => new Uint8Array(n).fill(0x41)),
  );
  check(
    fc.property(agentBytes, chunking, fc.boolean(), (bytes, sizes, closes) => {
      const line = new AgentLine();
      const t0 = performance.now();
      let answer: { reply: string | null; error: string | null } | null = null;
      for (const c of chunksOf(bytes, sizes)) {
        answer = line.push(c.toString('latin1'));
        if (answer !== null) break;
      }
      if (answer === null && closes) answer = line.end();
      assert.equal(typeof line.pending(), 'string');
      assertPrintable(line.pending(), true);
      const text = Buffer.from(bytes).toString('latin1');
      const nl = text.indexOf('\n');
      if (answer === null) {
        assert.ok(nl < 0 || nl >= MAX_AGENT_REPLY, 'a line within the bound was not answered');
      } else if (answer.reply === null) {
        assert.match(answer.error!, /^(no end of line in the first 1024 bytes|the agent closed without a reply)$/);
      } else {
        // the line within the bound, shown printable; parsed as the reference reads the raw line
        assert.ok(nl < MAX_AGENT_REPLY);
        assertPrintable(answer.reply, true);
        const raw = (nl >= 0 ? text.slice(0, nl) : text).replace(/\r$/, '');
        const words = raw.split('#', 1)[0]!.split(/[ \t,]+/).filter((w) => w !== '');
        const parsed = parseAgentReply(answer.reply);
        const plain = (w: string): boolean => /^[\x21-\x7e]+$/.test(w);
        const ref = words.filter(plain).map((w) => w.toLowerCase());
        const last = (set: string[]): string | null => [...ref].reverse().find((w) => set.includes(w)) ?? null;
        const up = last(['up', 'down', 'fail', 'stopped']);
        assert.equal(parsed.up, up === null ? null : up === 'up');
        assert.equal(parsed.admin, last(['ready', 'drain', 'maint']));
      }
      assert.ok(performance.now() - t0 < LIMIT_MS);
    }),
    300,
  );
});
