// send_expect checks and agent answers, first without sockets: the escapes, the steps'
// conversation (src/health/send-expect.ts), the agent's words (src/health/agent.ts), what the
// config validation says about a wrong check (the key, the line and what was expected) and the
// docs/behaviour.md's examples; then the checker against a small server: the PROXY header before the
// steps, the timeout's message, and health.port.

import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileSteps, Conversation, MAX_REPLY_BYTES, stepsOf, type Turn } from '../../src/health/send-expect';
import { unescape, type StepText } from '../../src/config/step-text';
import { INITIAL_AGENT, nextAgent, parseAgentReply } from '../../src/health/agent';
import { parseAndValidate } from '../../src/config/load';
import type { HealthEvent } from '../../src/health/checker';
import { runChecker } from '../checker-harness';
import { freePort, waitFor } from '../helpers';

const step = (o: Partial<StepText>): StepText => ({ send: '', expect: '', expectRegex: '', ...o });
const conv = (list: Partial<StepText>[]): Conversation => new Conversation(compileSteps(list.map(step)));
const text = (t: Turn): string | null => (t.write === null ? null : t.write.toString('latin1'));

describe('escapes', () => {
  const cases: [string, number[] | string][] = [
    ['PING\\r\\n', [...Buffer.from('PING\r\n')]],
    ['a\\tb', [0x61, 0x09, 0x62]],
    ['back\\\\slash', [...Buffer.from('back\\slash')]],
    ['\\x00\\xff\\x0D\\x0a', [0x00, 0xff, 0x0d, 0x0a]],
    ['é\\x01', [0xc3, 0xa9, 0x01]], // other characters are their UTF-8
    ['already\r\n', [...Buffer.from('already\r\n')]], // a TOML basic string made the characters
    ['', []],
    ['\\q', 'unknown escape "\\q" at character 1'],
    ['ab\\x4', 'at character 3: \\x takes two hex digits'],
    ['\\xZZ', '\\x takes two hex digits'],
    ['trailing\\', 'unknown escape "\\" at character 9'],
  ];
  for (const [input, want] of cases) {
    test(`${JSON.stringify(input)} → ${Array.isArray(want) ? `[${want.join(' ')}]` : 'error'}`, () => {
      const got = unescape(input);
      if (Array.isArray(want)) assert.deepEqual([...(got as Buffer)], want);
      else {
        assert.equal(typeof got, 'string');
        assert.ok((got as string).includes(want), got as string);
      }
    });
  }
});

describe('the conversation', () => {
  test('one step: send at connect, pass once the reply contains expect, even split over chunks', () => {
    const c = conv([{ send: 'INFO replication\\r\\n', expect: 'role:master' }]);
    const first = c.start();
    assert.equal(text(first), 'INFO replication\r\n');
    assert.equal(first.done, null);
    assert.equal(c.receive(Buffer.from('$90\r\n# Replication\r\nrole:ma')).done, null);
    assert.deepEqual(c.receive(Buffer.from('ster\r\nconnected_slaves:0\r\n')).done, { error: null });
  });

  test('a replica fails: the connection closes or the timeout comes, with what was received', () => {
    const c = conv([{ send: 'INFO replication\\r\\n', expect: 'role:master' }]);
    c.start();
    c.receive(Buffer.from('$80\r\n# Replication\r\nrole:slave\r\n'));
    assert.match(c.waiting(), /^step 1 \(expect "role:master"\): no match yet \(got ".*role:slave/);
    const end = c.ended();
    assert.match(end.done!.error!, /^step 1 \(expect "role:master"\): connection closed by the backend \(got "\$80/);
    // nothing more after the end
    assert.deepEqual(c.receive(Buffer.from('role:master')), { write: null, done: null });
  });

  test('expect_regex matches the reply as text', () => {
    const c = conv([{ send: 'INFO\\r\\n', expectRegex: '^role:(master|primary)\\r?$' }]);
    c.start();
    assert.equal(c.receive(Buffer.from('# x\r\nrole:slave\r\n')).done, null);
    c.ended();
    const d = conv([{ send: 'INFO\\r\\n', expectRegex: 'role:(master|primary)\\r' }]);
    d.start();
    assert.deepEqual(d.receive(Buffer.from('# x\r\nrole:master\r\n')).done, { error: null });
  });

  test('steps run in order; each reply is read after its own send; a write-only last step passes at once', () => {
    const c = conv([{ send: 'AUTH pw\\r\\n', expect: '+OK' }, { send: 'PING\\r\\n', expect: '+PONG' }, { send: 'QUIT\\r\\n' }]);
    assert.equal(text(c.start()), 'AUTH pw\r\n');
    // "+PONG" arriving before the PING was sent does not count for step 2: the reply starts after the send
    const t1 = c.receive(Buffer.from('+OK\r\n'));
    assert.equal(text(t1), 'PING\r\n');
    assert.equal(t1.done, null);
    const t2 = c.receive(Buffer.from('+PONG\r\n'));
    assert.equal(text(t2), 'QUIT\r\n');
    assert.deepEqual(t2.done, { error: null });
  });

  test('a step without send reads a greeting, also one that arrived before it', () => {
    const c = conv([{ expect: '220 ' }, { send: 'QUIT\\r\\n', expect: '221' }]);
    assert.deepEqual(c.start(), { write: null, done: null });
    assert.equal(text(c.receive(Buffer.from('220 mail ESMTP\r\n'))), 'QUIT\r\n');
    assert.deepEqual(c.receive(Buffer.from('221 bye\r\n')).done, { error: null });
    // the greeting already there when the conversation starts (a step with no send keeps it)
    const d = conv([{ expect: 'hello' }]);
    assert.equal(d.receive(Buffer.from('hel')).done, null);
    assert.deepEqual(d.receive(Buffer.from('lo')).done, { error: null });
  });

  test('binary expectations: \\xNN bytes are matched exactly', () => {
    const c = conv([{ send: '\\x00\\x01', expect: '\\xff\\x00' }]);
    assert.deepEqual([...c.start().write!], [0, 1]);
    assert.equal(c.receive(Buffer.from([0xfe, 0xff])).done, null);
    assert.deepEqual(c.receive(Buffer.from([0x00])).done, { error: null });
  });

  test(`a reply is read up to ${MAX_REPLY_BYTES} bytes, then the step fails`, () => {
    const c = conv([{ send: 'x', expect: 'never' }]);
    c.start();
    let last: Turn = { write: null, done: null };
    let fed = 0;
    for (let i = 0; i < 100 && last.done === null; i++) {
      last = c.receive(Buffer.alloc(4096, 0x61));
      fed += 4096;
    }
    assert.equal(fed, MAX_REPLY_BYTES);
    assert.match(last.done!.error!, /no match in the first 65536 bytes of the reply/);
  });

  test('stepsOf: the one step of send/expect, or steps; compiled once per settings object', () => {
    const h = Object.freeze({ ...step({ send: 'PING\\r\\n', expect: '+PONG' }), steps: [] });
    const a = stepsOf(h);
    assert.equal(a.length, 1);
    assert.equal(a, stepsOf(h));
    const many = Object.freeze({ ...step({}), steps: [step({ send: 'a', expect: 'b' }), step({ expectRegex: 'c+' })] });
    assert.deepEqual(
      stepsOf(many).map((s) => s.shown),
      ['expect "b"', 'expect_regex "c+"'],
    );
  });
});

describe('agent answers', () => {
  const cases: [string, { up: boolean | null; admin: string | null; weightPercent: number | null; ignored: string[] }][] = [
    ['up', { up: true, admin: null, weightPercent: null, ignored: [] }],
    ['down', { up: false, admin: null, weightPercent: null, ignored: [] }],
    ['fail#disk full', { up: false, admin: null, weightPercent: null, ignored: [] }],
    ['stopped', { up: false, admin: null, weightPercent: null, ignored: [] }],
    ['DRAIN', { up: null, admin: 'drain', weightPercent: null, ignored: [] }],
    ['ready', { up: null, admin: 'ready', weightPercent: null, ignored: [] }],
    ['maint', { up: null, admin: 'maint', weightPercent: null, ignored: [] }],
    ['75%', { up: null, admin: null, weightPercent: 75, ignored: [] }],
    ['0%', { up: null, admin: null, weightPercent: 0, ignored: [] }],
    ['up 75%', { up: true, admin: null, weightPercent: 75, ignored: [] }],
    ['up,ready,150%\r', { up: true, admin: 'ready', weightPercent: 150, ignored: [] }],
    ['  up\tmaxconn:30 nonsense ', { up: true, admin: null, weightPercent: null, ignored: ['maxconn:30', 'nonsense'] }],
    ['down\nup', { up: false, admin: null, weightPercent: null, ignored: [] }], // the first line only
    ['-5% 12.5%', { up: null, admin: null, weightPercent: null, ignored: ['-5%', '12.5%'] }],
  ];
  for (const [line, want] of cases) {
    test(`${JSON.stringify(line)}`, () => assert.deepEqual(parseAgentReply(line), want));
  }

  test('an admin word acts when it changes; up does not clear a drain, ready does; down holds until up', () => {
    let s = INITIAL_AGENT;
    const say = (line: string): string | null => {
      const r = nextAgent(s, parseAgentReply(line));
      s = r.next;
      return r.action;
    };
    assert.equal(say('drain'), 'drain');
    assert.equal(say('drain'), null); // said again: the operator keeps the last word
    assert.equal(say('up'), null);
    assert.equal(s.admin, 'drain');
    assert.equal(say('ready'), 'ready');
    assert.equal(say('down'), null);
    assert.equal(s.down, true);
    assert.equal(say('50%'), null);
    assert.deepEqual(s, { down: true, admin: 'ready', weightPercent: 50 });
    assert.equal(say('up'), null);
    assert.deepEqual(s, { down: false, admin: 'ready', weightPercent: 50 });
  });
});

describe('validation names the key and what was expected', () => {
  const base = (health: string): string => `[proxy]\nlisten_address = "127.0.0.1:8080"\n[health]\n${health}\n[[backends]]\naddress = "127.0.0.1:6379"\n`;
  const issues = (t: string): { path: string; line?: number; message: string }[] => {
    const r = parseAndValidate(t, {});
    return r.ok ? [] : r.issues.map((i) => ({ ...i }));
  };

  test('a valid Redis master check loads with its values as written', () => {
    const r = parseAndValidate(base(`kind = "send_expect"\nsend = 'INFO replication\\r\\n'\nexpect = "role:master"`), {});
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    assert.equal(r.config.health.send, 'INFO replication\\r\\n');
    assert.equal(r.config.services[0]!.health.expect, 'role:master');
  });

  test('steps as an array of inline tables', () => {
    const r = parseAndValidate(base(`kind = "send_expect"\nsteps = [{ send = "AUTH x\\r\\n", expect = "+OK" }, { send = "PING\\r\\n", expect_regex = "^\\\\+PONG" }]`), {});
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    assert.deepEqual(r.config.health.steps, [
      { send: 'AUTH x\r\n', expect: '+OK', expectRegex: '' },
      { send: 'PING\r\n', expect: '', expectRegex: '^\\+PONG' },
    ]);
  });

  const bad: [string, string, string, RegExp][] = [
    ['a bad regex', `kind = "send_expect"\nsend = "INFO\\r\\n"\nexpect_regex = "role:(master"`, 'health.expect_regex', /not a valid regular expression/],
    ['a bad escape', `kind = "send_expect"\nsend = 'PING\\q'\nexpect = "+PONG"`, 'health.send', /unknown escape "\\q"/],
    ['a short \\x', `kind = "send_expect"\nsend = "x"\nexpect = '\\x4'`, 'health.expect', /\\x takes two hex digits/],
    ['send_expect with nothing to do', `kind = "send_expect"`, 'health.kind', /needs expect or expect_regex \(after send\), or steps/],
    ['send without expect', `kind = "send_expect"\nsend = "PING\\r\\n"`, 'health.kind', /needs expect or expect_regex/],
    ['steps that never read', `kind = "send_expect"\nsteps = [{ send = "a" }, { send = "b" }]`, 'health.steps', /no step has expect or expect_regex/],
    ['expect and expect_regex both', `kind = "send_expect"\nsend = "x"\nexpect = "a"\nexpect_regex = "b"`, 'health.kind', /not both/],
    ['steps and send both', `kind = "send_expect"\nsend = "x"\nsteps = [{ send = "y", expect = "z" }]`, 'health.send', /give steps, or send\/expect\/expect_regex, not both/],
    ['a step with a typo', `kind = "send_expect"\nsteps = [{ send = "y", expcet = "z" }]`, 'health.steps', /step 1: unknown key "expcet" \(did you mean "expect"\?\)/],
    ['an empty step', `kind = "send_expect"\nsteps = [{ send = "y", expect = "z" }, {}]`, 'health.steps', /step 2: needs send, expect or expect_regex/],
    ['a step with a bad regex', `kind = "send_expect"\nsteps = [{ send = "y", expect_regex = "(" }]`, 'health.steps', /step 1: expect_regex: not a valid regular expression/],
    ['send without send_expect', `kind = "tcp"\nsend = "PING"`, 'health.send', /only used by kind = "send_expect" \(kind is "tcp"\)/],
    ['an agent port out of range', `agent_port = 70000`, 'health.agent_port', /at most 65535/],
    ['a check port out of range', `port = -1`, 'health.port', /at least 0/],
  ];
  for (const [what, health, path, message] of bad) {
    test(what, () => {
      const got = issues(base(health));
      const hit = got.find((i) => i.path === path);
      assert.ok(hit, `expected an issue at ${path}, got ${JSON.stringify(got)}`);
      assert.match(hit.message, message);
      assert.equal(typeof hit.line, 'number');
    });
  }

  test('[services.health] gets the same checks, named by its path; an inherited check is not reported twice', () => {
    const t = [
      '[health]',
      'kind = "send_expect"',
      'send = "PING\\r\\n"',
      'expect = "+PONG"',
      '[[services]]',
      'name = "redis"',
      'listen_address = "127.0.0.1:6380"',
      '[services.health]',
      'expect_regex = "(("',
      '[[services.backends]]',
      'address = "127.0.0.1:6379"',
      '[[services]]',
      'name = "other"',
      'listen_address = "127.0.0.1:6381"',
      '[[services.backends]]',
      'address = "127.0.0.1:6379"',
      '',
    ].join('\n');
    const got = issues(t);
    assert.deepEqual(
      got.map((i) => i.path),
      ['services[0].health.expect_regex'],
    );
    const ok = parseAndValidate(t.replace('expect_regex = "(("', 'kind = "tcp"\nagent_port = 9777'), {});
    assert.ok(ok.ok, JSON.stringify(!ok.ok && ok.issues));
    assert.deepEqual(
      ok.config.services.map((s) => [s.name, s.health.kind, s.health.agentPort, s.health.send]),
      [
        ['redis', 'tcp', 9777, 'PING\r\n'],
        ['other', 'send_expect', 0, 'PING\r\n'],
      ],
    );
  });
});

describe("docs/behaviour.md's examples load as they are written", () => {
  const doc = readFileSync(join(__dirname, '..', '..', 'docs', 'behaviour.md'), 'utf8');
  const block = (marker: string): string => {
    const at = doc.indexOf(marker);
    assert.ok(at > 0, `docs/behaviour.md has ${marker}`);
    const start = doc.indexOf('```toml\n', at) + '```toml\n'.length;
    return doc.slice(start, doc.indexOf('```', start)).replace(/^ {2}/gm, '');
  };

  test('the Redis master check: INFO replication, expecting role:master', () => {
    const r = parseAndValidate(block('**Example: a Redis master check.**'), {});
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    const h = r.config.services[0]!.health;
    assert.equal(h.kind, 'send_expect');
    const [s] = stepsOf(h);
    assert.equal(s!.send!.toString('latin1'), 'INFO replication\r\n');
    assert.deepEqual(s!.expect, Buffer.from('role:master'));
  });

  test("the PostgreSQL primary check: an http check of Patroni's /primary on port 8008", () => {
    const r = parseAndValidate(block('**Example: a PostgreSQL primary.**'), {});
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    const svc = r.config.services[0]!;
    assert.deepEqual([svc.health.kind, svc.health.port, svc.health.path, svc.backends.map((b) => b.port)], ['http', 8008, '/primary', [5432, 5432]]);
  });
});

describe('the checker against a socket', () => {
  /** A checker for one backend with these [proxy] and [health] lines; its results, stopped at the end. */
  function checker(t: TestContext, address: string, proxy: string, health: string): HealthEvent[] {
    const text = `[proxy]\nlisten_address = "127.0.0.1:1"\n${proxy}\n[health]\ninterval = "1h"\n${health}\n[admin]\nlisten_address = ""\n[[backends]]\nname = "b"\naddress = "${address}"\n`;
    return runChecker(t, text);
  }

  /** A server that records what each connection sent, answering `reply(bytes so far)` when it returns a string. */
  async function server(t: TestContext, reply: (got: Buffer) => string | null): Promise<{ port: number; got: Buffer[] }> {
    const got: Buffer[] = [];
    const srv = net.createServer((s) => {
      let buf = Buffer.alloc(0);
      const i = got.push(buf) - 1;
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        got[i] = buf;
        const r = reply(buf);
        if (r !== null) s.write(r);
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    t.after(() => srv.close());
    return { port: (srv.address() as net.AddressInfo).port, got };
  }

  test('with proxy_protocol v2 the header comes first, then the steps; the check passes on the reply', async (t) => {
    const s = await server(t, (b) => (b.includes('PING\r\n') ? '+PONG\r\n' : null));
    const results = checker(t, `127.0.0.1:${s.port}`, 'proxy_protocol = "v2"', `timeout = "2s"\nkind = "send_expect"\nsend = 'PING\\r\\n'\nexpect = "+PONG"`);
    await waitFor(() => results.length > 0, 5000, 'the first check');
    assert.deepEqual(results.map((r) => [r.ok, r.error]), [[true, null]]);
    assert.equal(s.got[0]!.toString('hex'), '0d0a0d0a000d0a515549540a20000000' + Buffer.from('PING\r\n').toString('hex'));
  });

  test('a reply that never matches fails at the timeout, saying which step and what came', async (t) => {
    const s = await server(t, () => '-ERR unknown command\r\n');
    const results = checker(t, `127.0.0.1:${s.port}`, '', `timeout = "300ms"\nkind = "send_expect"\nsteps = [{ send = "PING\\r\\n", expect = "+PONG" }]`);
    await waitFor(() => results.length > 0, 5000, 'the first check');
    assert.equal(results[0]!.ok, false);
    assert.equal(results[0]!.error, 'timeout after 300 ms: step 1 (expect "+PONG"): no match yet (got "-ERR unknown command\\r\\n")');
  });

  test("health.port: the check goes to that port of the backend's host, not the backend's own", async (t) => {
    const s = await server(t, (b) => (b.includes('\r\n\r\n') ? 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n' : null));
    const closed = await freePort(); // nothing listens on the backend's own port
    const results = checker(t, `127.0.0.1:${closed}`, '', `timeout = "2s"\nkind = "http"\nport = ${s.port}\npath = "/primary"`);
    await waitFor(() => results.length > 0, 5000, 'the first check');
    assert.deepEqual(results.map((r) => [r.ok, r.error]), [[true, null]]);
    assert.match(s.got[0]!.toString('latin1'), /^GET \/primary HTTP\/1\.1\r\n/);
  });
});
