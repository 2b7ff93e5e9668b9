// Network-namespace plumbing for the system tests that build a small network on one machine:
// bounded commands, long-running processes started inside a namespace, and the removal of
// everything a test made (its processes, whatever else runs in its namespaces, the namespaces).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cleanEnv } from '../helpers';

export interface Out {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command to its end, killed after `timeoutSec`. */
export function run(cmd: string, args: string[], timeoutSec = 10, input?: string): Out {
  const r = spawnSync('timeout', ['-k', '3', String(timeoutSec), cmd, ...args], { encoding: 'utf8', input });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** run(), throwing with the command and its stderr unless it exits 0. */
export function must(cmd: string, args: string[], timeoutSec = 10, input?: string): string {
  const r = run(cmd, args, timeoutSec, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

export const inNs = (ns: string, args: string[], timeoutSec = 10): Out => run('ip', ['netns', 'exec', ns, ...args], timeoutSec);

export interface Proc {
  readonly name: string;
  readonly proc: ChildProcess;
  /** stdout and stderr so far */
  out: string;
  readonly exited: Promise<void>;
}

export function alive(p: Proc): boolean {
  return p.proc.exitCode === null && p.proc.signalCode === null;
}

/** The processes and namespaces of one test; `cleanup()` removes them all, also after a failure. */
export class Lab {
  readonly procs: Proc[] = [];

  constructor(readonly namespaces: readonly string[]) {
    process.on('exit', () => {
      for (const p of this.procs) p.proc.kill('SIGKILL');
      for (const ns of this.namespaces) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 });
    });
  }

  /** Start a long-running process inside `ns`, bounded by `timeout` (ip netns exec execs it). */
  start(ns: string, name: string, args: string[], maxSec = 600, env: Record<string, string> = {}): Proc {
    const proc = spawn('timeout', ['-k', '3', String(maxSec), 'ip', 'netns', 'exec', ns, ...args], { env: cleanEnv({ LEMONADE_LOG: 'info', ...env }), stdio: ['pipe', 'pipe', 'pipe'] });
    const p: Proc = { name, proc, out: '', exited: new Promise<void>((r) => proc.on('close', () => r())) };
    proc.stdout!.on('data', (d: Buffer) => (p.out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (p.out += d.toString()));
    proc.stdin!.on('error', () => {}); // a process that exits before reading its input
    this.procs.push(p);
    return p;
  }

  /**
   * Signal a process and wait for its end; SIGKILL after 10 s. The signal goes to the command
   * itself when it runs: `timeout` would forward it but then kill the command 3 s later.
   */
  async stop(p: Proc, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!alive(p)) return;
    const child = Number(run('pgrep', ['-P', String(p.proc.pid)]).stdout.split('\n')[0]);
    try {
      if (child > 0) process.kill(child, signal);
      else p.proc.kill(signal);
    } catch {
      p.proc.kill(signal);
    }
    const k = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
    await p.exited;
    clearTimeout(k);
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.procs.map((p) => this.stop(p)));
    for (const ns of this.namespaces) {
      // anything still running in our namespaces (a daemon that forked, a check) is ours
      const pids = run('ip', ['netns', 'pids', ns]).stdout.split('\n').filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      run('ip', ['netns', 'del', ns]);
    }
  }
}
