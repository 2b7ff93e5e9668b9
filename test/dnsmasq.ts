// A real DNS server for the DNS discovery tests and the benchmark: Debian's dnsmasq, serving only
// what the test writes (a hosts file for A/AAAA records, a conf file for SRV records) on a
// 127.x address and a free port, with a short TTL. rewriteHosts() makes it reread the hosts file
// (SIGHUP); the conf file (SRV records) is read only at start, so restart() starts it anew on the
// same address.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as dnsPromises } from 'node:dns';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './helpers';

export const DNSMASQ = spawnSync('sh', ['-c', 'command -v dnsmasq || ls /usr/sbin/dnsmasq'], { encoding: 'utf8' }).stdout.trim().split('\n')[0] ?? '';

export interface Dnsmasq {
  /** "ip:port", for [dns] servers */
  readonly server: string;
  /** write the hosts file ("ip name" lines) and make dnsmasq reread it */
  rewriteHosts(lines: readonly string[]): void;
  /** stop and start again with other conf lines (SRV records: "srv-host=…") */
  restart(conf: readonly string[]): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Start dnsmasq on `ip` (a 127.x address) answering for the domain `ldns.test` only: names of the
 * hosts file and `conf` lines, TTL `ttl` seconds; every other name in the domain is NXDOMAIN.
 */
export async function startDnsmasq(dir: string, ip: string, hosts: readonly string[], conf: readonly string[] = [], ttl = 1): Promise<Dnsmasq> {
  const hostsFile = join(dir, 'dns-hosts');
  const confFile = join(dir, 'dnsmasq.conf');
  const port = await freePort();
  let proc: ChildProcess | null = null;
  writeFileSync(hostsFile, hosts.join('\n') + '\n');
  const start = async (lines: readonly string[]): Promise<void> => {
    writeFileSync(confFile, lines.join('\n') + '\n');
    const p = spawn(
      DNSMASQ,
      [
        '--keep-in-foreground',
        `--conf-file=${confFile}`,
        '--no-resolv',
        '--no-hosts',
        `--addn-hosts=${hostsFile}`,
        `--listen-address=${ip}`,
        '--bind-interfaces',
        `--port=${port}`,
        `--local-ttl=${ttl}`,
        '--local=/ldns.test/',
        '--pid-file=',
        '--user=root',
        '--log-facility=-',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    proc = p;
    // answering: a name of the domain gets an answer (NXDOMAIN counts), within a bound
    const r = new dnsPromises.Resolver({ timeout: 200, tries: 1 });
    r.setServers([`${ip}:${port}`]);
    for (let i = 0; i < 50; i++) {
      if (p.exitCode !== null) throw new Error(`dnsmasq exited (${p.exitCode}): ${err}`);
      const code = await r.resolve4('probe.ldns.test').then(
        () => 'ok',
        (e: NodeJS.ErrnoException) => e.code,
      );
      if (code === 'ok' || code === 'ENOTFOUND' || code === 'ENODATA') return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`dnsmasq does not answer on ${ip}:${port}: ${err}`);
  };
  const stop = (): Promise<void> =>
    new Promise((res) => {
      const p = proc;
      proc = null;
      if (!p || p.exitCode !== null || p.signalCode !== null) return res();
      p.once('exit', () => res());
      p.kill('SIGTERM');
    });
  await start(conf);
  return {
    server: `${ip}:${port}`,
    rewriteHosts(lines) {
      writeFileSync(hostsFile, lines.join('\n') + '\n');
      proc?.kill('SIGHUP');
    },
    async restart(lines) {
      await stop();
      await start(lines);
    },
    stop,
  };
}
