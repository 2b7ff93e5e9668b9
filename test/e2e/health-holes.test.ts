// Health checks facing hostile backends and agents (issue 23): an expect_regex cannot stall the
// process whatever the pattern and the reply, an agent's answer is bounded whatever it sends,
// and a failed check's error reaches `lemonade status` printable, escaped once.

import { test, describe, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { compileSteps, Conversation, MAX_REPLY_BYTES, REGEX_RETEST_MS } from '../../src/health/send-expect';
import { AgentLine, MAX_AGENT_REPLY } from '../../src/health/agent';
import { parseAndValidate } from '../../src/config/load';
import { HealthChecker, type AgentEvent } from '../../src/health/checker';
import { Snapshot } from '../../src/core/snapshot';
import { LoadTable } from '../../src/core/stats';
import { STRATEGIES } from '../../src/strategy/index';
import { adminJson, runCli, startBalancer, startEcho, startTcpServer, tcpExchange, waitFor } from '../helpers';

const PATHOLOGICAL = '^(a+)+$';

/** The conversation of one expect_regex step over `reply` (in chunks of `chunk` bytes); its ms and verdict. */
function matchTimed(pattern: string, reply: Buffer, chunk = reply.length): { ms: number; error: string | null | undefined } {
  const conv = new Conversation(compileSteps([{ send: 'PING\\r\\n', expect: '', expectRegex: pattern }]));
  conv.start();
  const t0 = performance.now();
  let done: { error: string | null } | null = null;
  for (let i = 0; i < reply.length && done === null; i += chunk) done = conv.receive(reply.subarray(i, i + chunk)).done;
  done ??= conv.ended().done;
  return { ms: performance.now() - t0, error: done?.error };
}

describe('expect_regex runs in linear time', () => {
  test(`${PATHOLOGICAL} against a's and "!": no stall, a clear failure; then against a full reply`, () => {
    // V8's backtracking engine takes seconds on 30 a's (2^30 ways to split them)
    const short = matchTimed(PATHOLOGICAL, Buffer.from(`${'a'.repeat(30)}!`));
    assert.ok(short.ms < 250, `30 a's and "!" took ${short.ms.toFixed(0)} ms`);
    assert.match(short.error!, /^step 1 \(expect_regex "\^\(a\+\)\+\$"\): connection closed by the backend \(got "a{30}!"\)$/);
    // the whole read bound, in one chunk and in 1 KiB chunks (re-matched on each: a pattern
    // that no prefix of the reply matches)
    const whole = Buffer.alloc(MAX_REPLY_BYTES, 'a');
    whole[whole.length - 1] = 0x21;
    for (const [pattern, chunk] of [[PATHOLOGICAL, whole.length], ['(a+)+b', 1024]] as const) {
      const r = matchTimed(pattern, whole, chunk);
      assert.ok(r.ms < 2000, `${MAX_REPLY_BYTES} bytes in ${chunk}-byte chunks took ${r.ms.toFixed(0)} ms`);
      assert.match(r.error!, /no match in the first 65536 bytes/);
    }
    // (a|a)*b is as bad for a backtracking engine, and nested quantifiers are not the only kind
    assert.ok(matchTimed('(a|a)*b', Buffer.alloc(MAX_REPLY_BYTES, 'a')).ms < 1000);
    // and a pattern that matches still matches, over UTF-8 text
    assert.equal(matchTimed('^\\+PONG\\r\\n$', Buffer.from('+PONG\r\n')).error, null);
    assert.equal(matchTimed('(?i)role:MASTER', Buffer.from('# Replication\r\nrole:master\r\n')).error, null);
    assert.equal(matchTimed('^é$', Buffer.from('é')).error, null);
  });

  test('a reply growing in small chunks: the regex runs when the reply doubled or when due, never lost', () => {
    const steps = compileSteps([{ send: 'INFO\\r\\n', expect: '', expectRegex: 'role:master\\r\\n' }]);
    let conv = new Conversation(steps);
    conv.start();
    // the first chunk runs it; a small second one waits for its recheck, which passes
    assert.deepEqual(conv.receive(Buffer.from('# Replication\r\n'.repeat(4)), 1000), { write: null, done: null });
    const waiting = conv.receive(Buffer.from('role:master\r\n'), 1001);
    assert.equal(waiting.done, null);
    assert.equal(waiting.recheckInMs, REGEX_RETEST_MS - 1);
    assert.deepEqual(conv.recheck(1000 + REGEX_RETEST_MS).done, { error: null });
    // a reply that has doubled runs it at once
    conv = new Conversation(steps);
    conv.start();
    conv.receive(Buffer.from('# Replication\r\n'), 1000);
    assert.deepEqual(conv.receive(Buffer.from('x'.repeat(40) + 'role:master\r\n'), 1001).done, { error: null });
    // the backend closes before the recheck: what it sent is tested then
    conv = new Conversation(steps);
    conv.start();
    conv.receive(Buffer.from('# Replication\r\n'.repeat(4)), 1000);
    conv.receive(Buffer.from('role:master\r\n'), 1001);
    assert.deepEqual(conv.ended().done, { error: null });
    // 64 KiB one byte at a time, 10 µs apart: a bounded number of runs, a bounded time
    conv = new Conversation(compileSteps([{ send: 'X', expect: '', expectRegex: PATHOLOGICAL.replace('$', '!x') }]));
    conv.start();
    const t0 = performance.now();
    let done: { error: string | null } | null = null;
    const a = Buffer.from('a');
    for (let i = 0; i < MAX_REPLY_BYTES && done === null; i++) done = conv.receive(a, 1000 + i * 0.01).done;
    const ms = performance.now() - t0;
    assert.match(done?.error ?? '', /no match in the first 65536 bytes/);
    assert.ok(ms < 2000, `${ms.toFixed(0)} ms`);
  });

  test('what RE2 cannot do, or a pattern too large, is a config error naming the key and what is expected', () => {
    const base = (regex: string): string =>
      `[proxy]\nlisten_address = "127.0.0.1:1"\n[health]\nkind = "send_expect"\nsend = "PING\\r\\n"\nexpect_regex = '${regex}'\n[[backends]]\naddress = "127.0.0.1:2"\n`;
    for (const [regex, why] of [
      ['(a)\\1', /invalid escape sequence: `\\1`/],
      ['role(?=:master)', /unsupported Perl syntax: `\(\?=`/],
      ['(?<!x)y', /\(\?<!/],
      ['a{1001}', /invalid repeat count/],
      ['(?i)(\\pL|\\d){400}z', /too large: \d+ instructions, at most 500/],
    ] as const) {
      const r = parseAndValidate(base(regex), {});
      assert.equal(r.ok, false, regex);
      if (r.ok) continue;
      assert.equal(r.issues.length, 1, JSON.stringify(r.issues));
      assert.equal(r.issues[0]!.path, 'health.expect_regex');
      assert.match(r.issues[0]!.message, why);
      if (!/too large/.test(r.issues[0]!.message)) assert.match(r.issues[0]!.message, /not a valid regular expression \(RE2 syntax\).*RE2 has no backreferences/);
    }
    assert.equal(parseAndValidate(base(PATHOLOGICAL), {}).ok, true);
  });

  test('end to end: while a backend answers a pathological pattern, the balancer serves clients and /health within a bound', async (t) => {
    let answered = 0;
    const hostile = await startTcpServer(t, (s) => {
      s.on('data', () => {
        answered++;
        s.end(`${'a'.repeat(30)}!`);
      });
    });
    const echo = await startEcho(t);
    const config = [
      '[admin]',
      'listen_address = "127.0.0.1:0"',
      '[[services]]',
      'name = "echo"',
      'listen_address = "127.0.0.1:0"',
      '[[services.backends]]',
      'name = "e1"',
      `address = "${echo.address}"`,
      '[[services]]',
      'name = "hostile"',
      'listen_address = "127.0.0.1:0"',
      '[services.health]',
      'kind = "send_expect"',
      'interval = "100ms"',
      'timeout = "300ms"',
      "send = 'PING\\r\\n'",
      `expect_regex = '${PATHOLOGICAL}'`,
      '[[services.backends]]',
      'name = "h1"',
      `address = "${hostile.address}"`,
      '',
    ].join('\n');
    const lb = await startBalancer(t, config);
    const services = await adminJson<{ services: { name: string; listen_address: string }[] }>(lb, '/status');
    const echoPort = Number(services.services.find((s) => s.name === 'echo')!.listen_address.split(':').pop());
    const worst = { health: 0, echo: 0 };
    const started = answered;
    // checks every 100 ms; at least 5 of them answered while the clients are timed
    const until = Date.now() + 15_000;
    for (let i = 0; i < 2000 && answered - started < 5 && Date.now() < until; i++) {
      let t0 = performance.now();
      const h = await lb.admin('/health');
      worst.health = Math.max(worst.health, performance.now() - t0);
      assert.ok(h.status === 200 || h.status === 503, `/health ${h.status}`);
      t0 = performance.now();
      const r = await tcpExchange(echoPort, `ping ${i}\n`, { end: true, timeoutMs: 5000 });
      worst.echo = Math.max(worst.echo, performance.now() - t0);
      assert.equal(r.data.toString(), `ping ${i}\n`);
    }
    t.diagnostic(`${answered - started} checks answered; slowest /health ${worst.health.toFixed(0)} ms, slowest echo ${worst.echo.toFixed(0)} ms`);
    assert.ok(answered - started >= 5, 'the checks ran');
    assert.ok(worst.health < 1000 && worst.echo < 1000, `slowest /health ${worst.health.toFixed(0)} ms, echo ${worst.echo.toFixed(0)} ms`);
    // the check itself fails, with the reply shown
    const rows = await adminJson<{ name: string; last_check: { error: string | null } | null }[]>(lb, '/backends');
    const h1 = rows.find((r) => r.name === 'h1')!;
    assert.match(h1.last_check?.error ?? '', /expect_regex "\^\(a\+\)\+\$"\): connection closed by the backend \(got "a{30}!"\)/);
  });
});

describe("an agent's answer is bounded, whatever it sends", () => {
  test('AgentLine: a huge line, no newline ever, binary, a slow drip: at most MAX_AGENT_REPLY bytes kept, a printable line', () => {
    const t0 = performance.now();
    // a 1 MiB chunk with its newline far past the bound: refused, not a 1 MiB reply
    let l = new AgentLine();
    let a = l.push(`${'x'.repeat(60_000)}\nup\n`);
    assert.deepEqual(a, { reply: null, error: `no end of line in the first ${MAX_AGENT_REPLY} bytes` });
    // no newline ever: 10 000 chunks of 1 KiB each; the answer comes at the bound, later chunks are ignored
    l = new AgentLine();
    a = null;
    let at = -1;
    for (let i = 0; i < 10_000; i++) {
      const r = l.push('y'.repeat(1024));
      if (r !== null && a === null) [a, at] = [r, i];
    }
    assert.equal(at, 0);
    assert.match(a!.error!, /no end of line/);
    // a drip of one byte at a time, then a newline
    l = new AgentLine();
    for (const c of 'up 50%') assert.equal(l.push(c), null);
    assert.deepEqual(l.push('\r\n'), { reply: 'up 50%', error: null });
    // binary: every byte other than printable ASCII and tab shown as \xNN; the words still read
    l = new AgentLine();
    const bin = Buffer.from([0x75, 0x70, 0x09, 0x00, 0x1b, 0x5b, 0x32, 0x4a, 0xff, 0x20, 0x64, 0x72, 0x61, 0x69, 0x6e, 0x0a]).toString('latin1');
    assert.deepEqual(l.push(bin), { reply: 'up\t\\x00\\x1b[2J\\xff drain', error: null });
    // closed without a newline: what came is the line; nothing is no reply
    l = new AgentLine();
    l.push('\x00'.repeat(5000));
    assert.equal(l.end().reply, '\\x00'.repeat(MAX_AGENT_REPLY));
    assert.deepEqual(new AgentLine().end(), { reply: null, error: 'the agent closed without a reply' });
    assert.ok(performance.now() - t0 < 1000);
  });

  test('against a socket: an agent that sends a long line in one write is answered with a bounded error, not its text', async (t: TestContext) => {
    const agent = await startTcpServer(t, (s) => {
      s.end(`${'z'.repeat(5000)}\nup\n`);
    });
    const text = `[proxy]\nlisten_address = "127.0.0.1:1"\n[health]\ninterval = "1h"\ntimeout = "2s"\nagent_port = ${agent.port}\n[admin]\nlisten_address = ""\n[[backends]]\nname = "b"\naddress = "127.0.0.1:1"\n`;
    const parsed = parseAndValidate(text, {});
    assert.ok(parsed.ok);
    const snap = new Snapshot(parsed.config, 1, new LoadTable(Date.now), { now: Date.now, random: () => 0.5, strategies: STRATEGIES });
    const answers: AgentEvent[] = [];
    const c = new HealthChecker({ current: () => snap, now: Date.now, random: () => 0.5, onResult: () => {}, onAgent: (e) => answers.push(e) });
    c.sync(snap);
    t.after(() => c.stop());
    await waitFor(() => answers.length > 0, 5000, 'the agent check');
    assert.equal(answers[0]!.reply, null);
    assert.equal(answers[0]!.error, `no end of line in the first ${MAX_AGENT_REPLY} bytes`);
  });
});

describe('lemonade status prints a failed check printable, escaped once', () => {
  test('a backend answering NUL bytes and a backslash: \\x00 and \\\\ in the table, no raw control byte, no doubled escapes', async (t) => {
    const backend = await startTcpServer(t, (s) => {
      s.on('data', () => s.end(Buffer.from('\x00\x00-ERR a\\b\x1b[2J\r\n', 'latin1')));
    });
    const config = [
      '[proxy]',
      'listen_address = "127.0.0.1:0"',
      '[health]',
      'kind = "send_expect"',
      'interval = "200ms"',
      'timeout = "1s"',
      "send = 'PING\\r\\n'",
      "expect = '+PONG\\x00'",
      '[admin]',
      'listen_address = "127.0.0.1:0"',
      '[[backends]]',
      'name = "r1"',
      `address = "${backend.address}"`,
      '',
    ].join('\n');
    const lb = await startBalancer(t, config);
    await waitFor(async () => (await adminJson<{ last_check: unknown }[]>(lb, '/backends'))[0]!.last_check !== null, 5000, 'a check');
    const r = await runCli(['status', '--admin', `http://127.0.0.1:${lb.adminPort}`]);
    assert.equal(r.code, 0, r.stderr);
    t.diagnostic(r.stdout);
    assert.ok(!/[\x00-\x08\x0b-\x1f\x7f]/.test(r.stdout), `a raw control byte in ${JSON.stringify(r.stdout)}`);
    const want = 'failed (step 1 (expect "+PONG\\x00"): connection closed by the backend (got "\\x00\\x00-ERR a\\\\b\\x1b[2J\\r\\n"))';
    assert.ok(r.stdout.includes(want), `${r.stdout}\nwants ${want}`);
  });
});
